"""MobileNetV2, with keras.applications' API and layer names."""

from keras_lightnets.layers import blocks
from keras_lightnets.layers.conventions import KERAS_MOBILENET_V2, conventions_for
from keras_lightnets.models import common as builders
from keras_lightnets.models.tables import (
    make_divisible,
    mobilenet_v2_stages,
    mobilenet_v2_taps,
)

# How the DeepLab MobileNetV2 backbones turn strides into dilation once the
# output stride is reached: "vainf" dilates a stage's blocks after its first
# (which keeps the previous rate), "jfzhang95" gives the whole stage the
# previous rate and raises it for the next stage, "smp" (segmentation_models_pytorch's
# `make_dilated`) gives the whole stage, its first block included, the new rate.
DILATION_SCHEDULES = ("vainf", "jfzhang95", "smp")


def mobilenet_v2_strides(output_stride=None, schedule="vainf", depth_coefficient=1.0):
    """`[(stride, dilation)]` of the inverted residual blocks (17 at depth 1).

    `output_stride=None` is the classification network (dilation 1);
    8 or 16 replaces the strides past that stride with dilation as the
    DeepLab code of `schedule` (see `DILATION_SCHEDULES`) does.
    """
    if schedule not in DILATION_SCHEDULES:
        raise ValueError(f"schedule must be one of {DILATION_SCHEDULES}, got {schedule!r}")
    plan, current_stride, dilation = [], 2, 1
    for _, _, repeats, stride in mobilenet_v2_stages(depth_coefficient):
        first = rest = dilation
        if current_stride == output_stride:
            dilation *= stride
            stride = 1
            rest = dilation if schedule in ("vainf", "smp") else first
            first = dilation if schedule == "smp" else first
        else:
            current_stride *= stride
        plan += [(stride, first)] + [(1, rest)] * (repeats - 1)
    return plan


def mobilenet_v2_features(x, alpha=1.0, style="tf", expand_first_block=False, strides=None,
                          pad_block_inputs=False, stem_padding=True, depth_coefficient=1.0,
                          stem_filters=None):
    """The MobileNetV2 body from the stem to the last inverted residual block.

    Returns the last block's output and the list of every block's output
    (index = keras.applications block id), for heads that tap features.
    `expand_first_block=True` gives block 0 a 1x1 expansion conv even though
    t = 1, as some PyTorch re-implementations do.

    DeepLab backbones: `strides` is `mobilenet_v2_strides(...)` (per-block
    stride and dilation); `pad_block_inputs` pads each block's input before
    its expansion conv (VainF, jfzhang95); `stem_padding=False` gives the
    3x3/2 stem no padding at all (VainF: 512 → 255).

    `depth_coefficient` and `stem_filters`: see `MobileNetV2`.
    """
    conv = conventions_for(style, tf=KERAS_MOBILENET_V2)
    strides = strides or mobilenet_v2_strides(depth_coefficient=depth_coefficient)
    x = blocks.conv_block(
        x,
        stem_filters or make_divisible(32 * alpha, 8),
        strides=2,
        style=conv,
        name="Conv1",
        names={"bn": "bn_Conv1", "act": "Conv1_relu"},
        padding=None if stem_padding else "valid",
    )
    block_outputs = []
    for expansion, channels, repeats, _ in mobilenet_v2_stages(depth_coefficient):
        filters = make_divisible(int(channels * alpha), 8)
        for _ in range(repeats):
            block_id = len(block_outputs)
            stride, dilation = strides[block_id]
            x = blocks.inverted_res_block(
                x,
                expansion,
                filters,
                stride=stride,
                block_id=block_id,
                style=conv,
                dilation=dilation,
                expand=expansion != 1 or expand_first_block,
                pad_input=pad_block_inputs,
            )
            block_outputs.append(x)
    return x, block_outputs


def mobilenet_v2_last_conv(x, alpha=1.0, style="tf", filters=None):
    """The 1x1 conv after the last block (`Conv_1`; by default 1280 channels, more when alpha > 1)."""
    if filters is None:
        filters = make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    return blocks.conv_block(
        x, filters, kernel_size=1, style=style, name="Conv_1", names={"bn": "Conv_1_bn", "act": "out_relu"}
    )


@builders.documented(
    "Instantiates the MobileNetV2 architecture (Sandler et al., 2018).\n\n"
    "Same arguments, layer names and weight order as `keras.applications.MobileNetV2`,\n"
    "so its weight files load with `weights=PATH`.",
    {
        "alpha": "width multiplier (0.35, 0.5, 0.75, 1.0, 1.3, 1.4, or any\npositive value).",
        "style": '`"tf"` for TensorFlow-trained weights, `"torch"` for weights\n'
        "converted from PyTorch (symmetric stride-2 padding, BN eps 1e-5,\n"
        "dropout 0.2 before the classifier as in torchvision).",
        "name": "model name, `mobilenetv2_{alpha}_{rows}` by default.",
        "expand_first_block": "give block 0 an expansion conv (t = 1), as the\n"
        "`c1`/`bottleneck1..7` PyTorch re-implementation does.",
        "depth_coefficient": "scales the block count of stages 2 to 6\n"
        "(`ceil(n * depth_coefficient)`; timm's `mobilenetv2_110d`: 1.2, `_120d`: 1.4).",
        "stem_filters": "channels of the stem conv `Conv1`; by default\n"
        "`alpha * 32` rounded to a multiple of 8 (timm's `d` models keep 32).",
        "last_filters": "channels of the last 1x1 conv `Conv_1`; by default 1280,\n"
        "scaled by `alpha` when it is above 1 (timm's `d` models keep 1280).",
    },
    imagenet=', `"imagenet"` (`style="tf"`: Keras\' official files; `style="torch"`: '
    "torchvision's checkpoint, converted on first use)",
)
@builders.model_options(
    lambda arguments: mobilenet_v2_taps(arguments["alpha"], arguments["depth_coefficient"], arguments["stem_filters"])
)
@builders.loads_without_random_values
def MobileNetV2(input_shape=None, alpha=1.0, include_top=True, weights=None, input_tensor=None,
                pooling=None, classes=1000, classifier_activation="softmax", style="tf", name=None,
                expand_first_block=False, depth_coefficient=1.0, stem_filters=None, last_filters=None):
    conv = conventions_for(style, tf=KERAS_MOBILENET_V2)
    img_input, inputs = builders.image_input(input_shape, input_tensor, include_top)
    x, _ = mobilenet_v2_features(
        img_input, alpha, conv, expand_first_block, depth_coefficient=depth_coefficient, stem_filters=stem_filters
    )
    x = mobilenet_v2_last_conv(x, alpha, conv, last_filters)

    def top(x):
        return builders.dense_top(x, classes, classifier_activation, dropout=0.2 if conv.torch else None)

    rows = img_input.shape[1]
    return builders.finish_model(
        inputs, x, name or f"mobilenetv2_{alpha:0.2f}_{rows}", weights, include_top, pooling, top
    )
