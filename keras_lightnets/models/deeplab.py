"""DeepLabV3+ (Chen et al., 2018) with MobileNetV2, ResNet or Xception-65 backbones.

Four heads, each built exactly as the PyTorch code whose checkpoints we
convert:
- `"vainf"` (VainF/DeepLabV3Plus-Pytorch): ASPP with dropout 0.1; decoder =
  concat [low-level 48, ASPP 256] → one 3x3 conv → 1x1 classifier; resizes
  with align_corners=False.
- `"jfzhang95"` (jfzhang95/pytorch-deeplab-xception, seed 003): ASPP with
  dropout 0.5; decoder = concat [ASPP 256, low-level 48] → two 3x3 convs with
  dropout 0.5 / 0.1 → 1x1 classifier; resizes with align_corners=True.
- `"bubbliiiing"` (bubbliiiing/deeplabv3-plus-pytorch, seed 000's platform):
  jfzhang95's layout, but every head conv has a bias and the ASPP has no
  dropout; resizes with align_corners=True.
- `"smp"` (segmentation_models_pytorch's `DeepLabV3Plus`): separable ASPP with
  rates 12/24/36 at either output stride and dropout 0.5, then a separable 3x3
  conv; decoder = concat [ASPP 256, low-level 48] → one separable 3x3 conv →
  1x1 classifier; resizes with align_corners=True. Its MobileNetV2 backbone
  keeps torchvision's last 1x1 conv (1280 channels) before the ASPP.
Each head's source also fixes how the backbone dilates (`dilation_schedule`)
and, for MobileNetV2, how it pads.
"""

import keras
from keras import layers

from keras_lightnets.layers import blocks
from keras_lightnets.layers.conventions import conventions_for
from keras_lightnets.layers.resize import BilinearResize
from keras_lightnets.models import common as builders
from keras_lightnets.models.mobilenet_v2 import (
    mobilenet_v2_features,
    mobilenet_v2_last_conv,
    mobilenet_v2_strides,
)
from keras_lightnets.models.resnet import resnet_features
from keras_lightnets.models.tables import FEATURE_TAPS, mobilenet_v2_taps
from keras_lightnets.models.xception import xception_features
from keras_lightnets.weights.loading import load_weights

BACKBONES = {"mobilenetv2": None, "resnet50": 50, "resnet101": 101, "xception": None}
ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
HEADS = {
    # ASPP dropout, decoder conv dropouts (one 3x3 conv each), low-level
    # features first in the concat, align_corners of every resize, biases on
    # the ASPP and decoder convs; fixed ASPP rates (else `ASPP_RATES` of the
    # output stride), separable 3x3 convs always, a separable 3x3 conv after
    # the ASPP (`aspp_sepconv`)
    "vainf": {"aspp_dropout": 0.1, "decoder_dropouts": (0.0,), "low_level_first": True, "align_corners": False},
    "jfzhang95": {"aspp_dropout": 0.5, "decoder_dropouts": (0.5, 0.1), "low_level_first": False, "align_corners": True},
    "bubbliiiing": {
        "aspp_dropout": 0.0, "decoder_dropouts": (0.5, 0.1), "low_level_first": False, "align_corners": True,
        "conv_bias": True,
    },
    "smp": {
        "aspp_dropout": 0.5, "decoder_dropouts": (0.0,), "low_level_first": False, "align_corners": True,
        "aspp_rates": (12, 24, 36), "separable": True, "aspp_sepconv": True,
    },
}
# Backbone conventions of each source (`dilation_schedule`): the schedule of
# `resnet_strides` / `mobilenet_v2_strides`, and the MobileNetV2 stem padding.
# `pad_block_inputs`: VainF and jfzhang95 pad each MobileNetV2 block's input
# (`fixed_padding`); "nostride_dilate" (seed 000's code, bubbliiiing) dilates
# the depthwise convs in place (`_nostride_dilate`), which keeps their own
# symmetric padding; "first_block_multigrid" is seed 003's ResNet. `xception`:
# the source's Xception-65 (`keras_lightnets.models.xception`). `last_conv`:
# the MobileNetV2 backbone ends with its 1x1 `Conv_1` (smp's encoder).
SCHEDULES = {
    "vainf": {
        "resnet": "torchvision", "mobilenetv2": "vainf", "xception": None,
        "stem_padding": False, "pad_block_inputs": True,
    },
    "jfzhang95": {
        "resnet": "jfzhang95", "mobilenetv2": "jfzhang95", "xception": "jfzhang95",
        "stem_padding": True, "pad_block_inputs": True,
    },
    "first_block_multigrid": {
        "resnet": "first_block_multigrid", "mobilenetv2": None, "xception": None,
        "stem_padding": True, "pad_block_inputs": True,
    },
    "nostride_dilate": {
        "resnet": None, "mobilenetv2": "vainf", "xception": "bubbliiiing",
        "stem_padding": True, "pad_block_inputs": False,
    },
    "smp": {
        "resnet": "smp", "mobilenetv2": "smp", "xception": None,
        "stem_padding": True, "pad_block_inputs": False, "last_conv": True,
    },
}
# Sources named after their schedule (a head's name is its default schedule).
SCHEDULE_ALIASES = {"bubbliiiing": "nostride_dilate"}


def schedule_of(head, dilation_schedule=None):
    """The dilation schedule (a key of `SCHEDULES`) a head's model uses."""
    schedule = dilation_schedule or head
    schedule = SCHEDULE_ALIASES.get(schedule, schedule)
    if schedule not in SCHEDULES:
        raise ValueError(f"dilation_schedule must be one of {sorted(SCHEDULES)}, got {dilation_schedule!r}")
    return schedule


def backbone_taps(arguments):
    """The feature taps (a `FEATURE_TAPS` row) of the backbone `DeepLabV3Plus(**arguments)` builds;
    a MobileNetV2 that keeps its 1x1 `Conv_1` (smp's encoder) ends `P5` with it."""
    backbone = arguments["backbone"]
    conventions = SCHEDULES[schedule_of(arguments["head"], arguments["dilation_schedule"])]
    if backbone == "xception":
        return FEATURE_TAPS[f"xception_{conventions['xception']}"]
    if backbone == "mobilenetv2":
        taps = mobilenet_v2_taps(arguments["alpha"])
        return {**taps, "P5": "out_relu"} if conventions.get("last_conv") else taps
    return FEATURE_TAPS[backbone]


def deeplab_backbone(x, backbone, output_stride, alpha, style, schedule):
    """Returns the backbone's last features (its feature taps: `backbone_taps`)."""
    conventions = SCHEDULES[schedule]
    if backbone == "mobilenetv2":
        if conventions["mobilenetv2"] is None:
            raise ValueError(f"dilation_schedule {schedule!r} has no MobileNetV2 backbone")
        x, _ = mobilenet_v2_features(
            x,
            alpha,
            style,
            strides=mobilenet_v2_strides(output_stride, conventions["mobilenetv2"]),
            pad_block_inputs=conventions["pad_block_inputs"],
            stem_padding=conventions["stem_padding"],
        )
        return mobilenet_v2_last_conv(x, alpha, style) if conventions.get("last_conv") else x
    if backbone == "xception":
        if conventions["xception"] is None:
            raise ValueError(f"dilation_schedule {schedule!r} has no Xception backbone")
        return xception_features(x, output_stride, conventions["xception"], style)
    if conventions["resnet"] is None:
        raise ValueError(f"dilation_schedule {schedule!r} has no ResNet backbone")
    return resnet_features(x, BACKBONES[backbone], output_stride, conventions["resnet"], style)


def deeplab_v3plus_head(low_level, high_level, image, classes, output_stride, style, head, separable=False):
    """ASPP on `high_level`, decoder fusing `low_level`, logits at `image`'s size."""
    spec = HEADS[head]
    bias = spec.get("conv_bias", False)
    if bias and separable:
        raise ValueError(f"the {head!r} head has no separable variant")
    separable = separable or spec.get("separable", False)
    rates = spec.get("aspp_rates", ASPP_RATES[output_stride])
    x = blocks.aspp(high_level, 256, rates, style, spec["aspp_dropout"], separable=separable, use_bias=bias)
    if spec.get("aspp_sepconv"):
        x = blocks.separable_conv_block(x, 256, 3, style=style, activation="relu", name="aspp_sepconv")
    low = blocks.conv_block(
        low_level, 48, 1, style=style, activation="relu", name="decoder_low_conv", use_bias=bias
    )
    x = BilinearResize(spec["align_corners"], name="decoder_resize")([x, low])
    x = layers.Concatenate(name="decoder_concat")([low, x] if spec["low_level_first"] else [x, low])
    for index, rate in enumerate(spec["decoder_dropouts"], start=1):
        name = f"decoder_conv{index}"
        if separable:
            x = blocks.separable_conv_block(x, 256, 3, style=style, activation="relu", name=name)
        else:
            x = blocks.conv_block(x, 256, 3, style=style, activation="relu", name=name, use_bias=bias)
        if rate:
            x = layers.Dropout(rate, name=f"decoder_dropout{index}")(x)
    x = layers.Conv2D(classes, 1, name="logits")(x)
    return BilinearResize(spec["align_corners"], name="logits_resize")([x, image])


@builders.model_options(backbone_taps)
@builders.loads_without_random_values
def DeepLabV3Plus(
    input_shape=(512, 512, 3),
    classes=21,
    backbone="mobilenetv2",
    output_stride=16,
    alpha=1.0,
    weights=None,
    input_tensor=None,
    style="torch",
    head="vainf",
    classifier_activation=None,
    dilation_schedule=None,
    separable=False,
    name=None,
):
    """Instantiates DeepLabV3+ for semantic segmentation.

    Args:
        input_shape: `(height, width, 3)`; any size (None for dynamic), the
            output has the same height and width.
        classes: number of classes (21 for Pascal VOC).
        backbone: `"mobilenetv2"`, `"resnet50"`, `"resnet101"` or `"xception"`
            (Xception-65: bubbliiiing's with `head="bubbliiiing"`,
            jfzhang95's Aligned Xception with `head="jfzhang95"`).
        output_stride: 16 or 8; the backbone's later strides become dilation
            and the ASPP rates are 6/12/18 or 12/24/36 (`"smp"`: 12/24/36 for both).
        alpha: MobileNetV2 width multiplier.
        weights: `None` or the path of a weights file (.h5).
        input_tensor: optional Keras tensor to use as the model input.
        style: `"torch"` (PyTorch padding, BN epsilon 1e-5).
        head: `"vainf"`, `"jfzhang95"`, `"bubbliiiing"` or `"smp"` (see the module docstring).
        classifier_activation: `None` for logits, or e.g. `"softmax"`.
        dilation_schedule: how the backbone dilates, `"vainf"`, `"jfzhang95"`,
            `"first_block_multigrid"` (ResNet only, seed 003's code) or
            `"nostride_dilate"` (MobileNetV2 only: strides turned into
            dilation in place, seed 000's code, bubbliiiing's) or `"smp"`
            (every conv of a dilated stage at its rate, and MobileNetV2's
            last 1x1 conv kept); by default the head's source.
        separable: depthwise separable 3x3 convs in ASPP and decoder
            (VainF's `--separable_conv` checkpoints; always for `"smp"`).
        include_preprocessing: whether the model takes RGB pixels 0-255
            and preprocesses them itself: `True` for ImageNet mean/std, or
            a mode of `preprocess_input` or a weights record's
            `preprocessing` (what `from_h5` passes).
        feature_extractor: return the backbone's features instead: a dict
            `P1`..`P5` of the layers of `FEATURE_TAPS[backbone_taps(...)]`,
            the same the head taps (`P2` and `P5`).
        feature_keys: the levels the feature extractor outputs (default: all).

    Returns:
        A `keras.Model` mapping images to `(height, width, classes)` maps.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {backbone!r}")
    if output_stride not in ASPP_RATES:
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride!r}")
    if head not in HEADS:
        raise ValueError(f"head must be one of {sorted(HEADS)}, got {head!r}")
    schedule = schedule_of(head, dilation_schedule)
    style = conventions_for(style)
    img_input, inputs = builders.image_input(input_shape, input_tensor, include_top=False)
    features = deeplab_backbone(img_input, backbone, output_stride, alpha, style, schedule)
    taps = backbone_taps({"backbone": backbone, "head": head, "dilation_schedule": schedule, "alpha": alpha})
    pyramid = builders.feature_outputs(keras.Model(inputs, features), taps, ("P2", "P5"))
    x = deeplab_v3plus_head(
        pyramid["P2"], pyramid["P5"], img_input, classes, output_stride, style, head, separable
    )
    if classifier_activation is not None:
        x = layers.Activation(classifier_activation, name="predictions")(x)
    model = keras.Model(inputs, x, name=name or f"deeplabv3plus_{backbone}_os{output_stride}")
    return load_weights(model, weights)
