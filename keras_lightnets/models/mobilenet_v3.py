"""MobileNetV3 Small and Large (Howard et al., 2019), with keras.applications' API and layer names."""

import dataclasses

from keras import layers

from keras_lightnets.layers import blocks
from keras_lightnets.layers.conventions import (
    KERAS_MOBILENET_V2,
    TORCH_MOBILENET_V3,
    conventions_for,
)
from keras_lightnets.models import common as builders
from keras_lightnets.models.tables import (
    MOBILENET_V3_BLOCKS,
    mobilenet_v3_block_outputs,
    mobilenet_v3_plan,
    mobilenet_v3_taps,
)
from keras_lightnets.preprocessing import preprocessing_layer

WIDTH_RULES = ("keras", "torchvision")


def mobilenet_v3_conventions(style, bn_epsilon=None):
    """keras.applications' MobileNetV3 constants (TF "same" padding, BN eps
    1e-3, momentum 0.999) or torchvision's (symmetric padding, eps 1e-3,
    PyTorch momentum 0.01); `bn_epsilon` replaces the epsilon."""
    conv = conventions_for(style, tf=KERAS_MOBILENET_V2, torch=TORCH_MOBILENET_V3)
    return conv if bn_epsilon is None else dataclasses.replace(conv, bn_epsilon=bn_epsilon)


def torchvision_widths(width_rule, conv):
    """Whether `alpha` scales the widths as torchvision does (`width_rule`, by default `style`'s)."""
    if width_rule not in (None, *WIDTH_RULES):
        raise ValueError(f"width_rule must be one of {WIDTH_RULES}, got {width_rule!r}")
    return conv.torch if width_rule is None else width_rule == "torchvision"


def block_prefix(block_id):
    """keras.applications' name prefix of block `block_id` (`expanded_conv_`, `expanded_conv_1_`, ...)."""
    return f"expanded_conv_{block_id}_" if block_id else "expanded_conv_"


def mobilenet_v3_features(x, size, alpha=1.0, minimalistic=False, style="tf", dilated=False, width_rule=None):
    """The MobileNetV3 body from the stem to the last 1x1 conv (`conv_1`).

    Returns the output and the list of what torchvision calls `features`:
    the stem's output, each block's and `conv_1`'s (index i = `features[i]`).
    `dilated=True` is torchvision's segmentation backbone (the last stage
    dilated, output stride 16); see `mobilenet_v3_plan` for the widths and
    `MobileNetV3Large` for `width_rule`.
    """
    conv = mobilenet_v3_conventions(style)
    torchvision = torchvision_widths(width_rule, conv)
    stem, plan, last_conv, _ = mobilenet_v3_plan(size, alpha, minimalistic, torchvision, dilated)
    activation = "relu" if minimalistic else "hard_swish"
    x = blocks.conv_block(x, stem, 3, 2, style=conv, activation=activation, name="conv",
                          names={"act": "conv_activation"})
    features = [x]
    for block_id, (kernel, hidden, filters, stride, dilation, squeeze, block_activation) in enumerate(plan):
        x = blocks.inverted_res_block(
            x, None, filters, stride, block_id, style=conv, kernel_size=kernel, dilation=dilation,
            names=blocks.block_layer_names(block_prefix(block_id), "mobilenet_v3"),
            hidden=hidden, activation=block_activation, squeeze=squeeze,
        )
        features.append(x)
    x = blocks.conv_block(x, last_conv, 1, style=conv, activation=activation, name="conv_1",
                          names={"act": "conv_1_activation"})
    features.append(x)
    return x, features


def torchvision_taps(size="large"):
    """`(low, high)` indices in `features` of torchvision's segmentation taps.

    torchvision takes its stage boundaries from the configuration: the stem,
    every block whose table stride is 2 (dilated or not) and the last conv;
    "low" is the fourth from the end (features[4] for Large: stride 8) and
    "high" the last (features[16]: stride 16 once dilated).
    """
    rows = MOBILENET_V3_BLOCKS[size]
    stages = [0] + [i + 1 for i, row in enumerate(rows) if row[3] > 1] + [len(rows) + 1]
    return stages[-4], stages[-1]


def segmentation_taps():
    """torchvision's two taps of its dilated MobileNetV3-Large (`torchvision_taps`), by layer name:
    `{"P3": features[4] (stride 8), "P4": features[16] (stride 16 once dilated)}`."""
    features = ["conv_activation", *(name for name, _ in mobilenet_v3_block_outputs("large", torchvision=True)),
                "conv_1_activation"]
    low, high = torchvision_taps("large")
    return {"P3": features[low], "P4": features[high]}


def _mobilenet_v3(size, input_shape, alpha, minimalistic, include_top, weights, input_tensor, classes,
                  pooling, dropout_rate, classifier_activation, include_preprocessing, style, name, builder,
                  width_rule, bn_epsilon):
    conv = mobilenet_v3_conventions(style, bn_epsilon)
    torchvision = torchvision_widths(width_rule, conv)
    if include_preprocessing is None:
        include_preprocessing = not conv.torch
    img_input, inputs = builders.image_input(input_shape, input_tensor, include_top)
    x = img_input
    if include_preprocessing is True:
        # keras.applications' own layer (x * (1 / 127.5) - 1), bit for bit, or torchvision's mean/std
        rescaling = preprocessing_layer("torch", name="rescaling") if conv.torch else layers.Rescaling(
            1.0 / 127.5, offset=-1.0, name="rescaling"
        )
        x = rescaling(x)
    elif include_preprocessing:  # a mode, or a weights record's preprocessing (`from_h5`)
        x = preprocessing_layer(include_preprocessing, name="rescaling")(x)
    x, _ = mobilenet_v3_features(x, size, alpha, minimalistic, conv, width_rule=width_rule)
    activation = "relu" if minimalistic else "hard_swish"
    last_point = mobilenet_v3_plan(size, alpha, minimalistic, torchvision)[3]

    def top(x):
        # keras.applications' 1x1 convs on the pooled vector: torchvision's
        # Linear → Hardswish → Dropout → Linear
        x = layers.GlobalAveragePooling2D(keepdims=True)(x)
        x = layers.Conv2D(last_point, 1, padding="same", name="conv_2")(x)
        x = blocks.apply_activation(x, activation, "conv_2_activation", conv)
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate)(x)
        x = layers.Conv2D(classes, 1, padding="same", name="logits")(x)
        x = layers.Flatten()(x)
        return layers.Activation(classifier_activation, name="predictions")(x)

    return builders.finish_model(inputs, x, name, weights, include_top, pooling, top)


_DOC_ARGS = {
    "alpha": "width multiplier (keras.applications: the widths scaled and rounded\n"
    "to multiples of 8, the stem kept at 16; `style=\"torch\"`: torchvision's\n"
    "`width_mult`, which scales the stem and the classifier too).",
    "minimalistic": "3x3 kernels, ReLU and no squeeze-excite everywhere (keras.applications'\n"
    "minimalistic models).",
    "dropout_rate": "dropout before the last 1x1 conv (`logits`).",
    "include_preprocessing": "whether the model takes 0-255 pixels. `None` (default):\n"
    "`True` for `style=\"tf\"` (keras.applications' `Rescaling` to [-1, 1]),\n"
    "`False` for `style=\"torch\"`, whose weights expect ImageNet mean/std input\n"
    "(`preprocess_input(x, \"torch\")`); `True` then builds that normalisation in.\n"
    "A mode of `preprocess_input` or a weights record's `preprocessing` (what\n"
    "`from_h5` passes) builds that one in.",
    "style": '`"tf"` for keras.applications\' weights, `"torch"` for torchvision\'s\n'
    "(symmetric stride-2 padding, PyTorch's Hardswish/Hardsigmoid rounding,\n"
    "torchvision's widths for `alpha`; BN eps 1e-3 in both).",
    "name": "model name.",
    "width_rule": '`"keras"` or `"torchvision"`: how `alpha` sets the widths (see `alpha`);\n'
    "by default `style`'s. timm's MobileNetV3s have keras.applications' widths.",
    "bn_epsilon": "BatchNormalization epsilon; by default 1e-3, as keras.applications\n"
    "and torchvision (timm's PyTorch-trained MobileNetV3s: 1e-5).",
}
_IMAGENET = (
    ', `"imagenet"` (`style="tf"`: keras.applications\' files, alpha 0.75 or 1.0, '
    'minimalistic 1.0; `style="torch"`: torchvision\'s checkpoint, converted on first use)'
)


def _documented(size):
    return builders.documented(
        f"Instantiates MobileNetV3{size.title()} (Howard et al., 2019).\n\n"
        f"Same arguments (plus `style`), layer names and weight order as\n"
        f"`keras.applications.MobileNetV3{size.title()}`, so its weight files load with\n"
        "`weights=PATH`. Unlike keras.applications, `weights` defaults to `None` and\n"
        "`input_shape` to `(224, 224, 3)` with the classifier.",
        _DOC_ARGS,
        imagenet=_IMAGENET,
    )


def _sized(size):
    """The builder of MobileNetV3 `size`, with keras.applications' signature (plus `style`)."""
    builder_name = f"MobileNetV3{size.title()}"

    def builder(input_shape=None, alpha=1.0, minimalistic=False, include_top=True, weights=None,
                input_tensor=None, classes=1000, pooling=None, dropout_rate=0.2,
                classifier_activation="softmax", include_preprocessing=None, style="tf", name=builder_name,
                width_rule=None, bn_epsilon=None):
        return _mobilenet_v3(size, input_shape, alpha, minimalistic, include_top, weights, input_tensor, classes,
                             pooling, dropout_rate, classifier_activation, include_preprocessing, style, name,
                             public, width_rule, bn_epsilon)

    builder.__name__ = builder.__qualname__ = builder_name

    def taps(arguments):
        torchvision = torchvision_widths(arguments["width_rule"], mobilenet_v3_conventions(arguments["style"]))
        return mobilenet_v3_taps(size, arguments["alpha"], arguments["minimalistic"], torchvision)

    public = _documented(size)(builders.model_options(taps)(builders.loads_without_random_values(builder)))
    return public


MobileNetV3Small = _sized("small")
MobileNetV3Large = _sized("large")
