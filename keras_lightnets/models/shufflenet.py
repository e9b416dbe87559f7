"""ShuffleNet v1 (Zhang et al., 2018) and v2 (Ma et al., 2018).

v2 is torchvision's `shufflenetv2`; v1 is megvii's official PyTorch code
(megvii-model/ShuffleNet-Series, `ShuffleNetV1`), whose checkpoints the
converter reads.
"""

from keras import layers

from keras_lightnets.layers import blocks
from keras_lightnets.layers.conventions import conventions_for
from keras_lightnets.models import common as builders
from keras_lightnets.models.tables import (
    SHUFFLENET_STAGE_REPEATS as STAGE_REPEATS,
)
from keras_lightnets.models.tables import (
    SHUFFLENET_V2_CHANNELS,
    shufflenet_v1_channels,
    shufflenet_v2_name,
)


def _stem(x, filters, conv):
    """conv1 3x3/2 → BN → ReLU, then max pool 3x3/2 (padding 1)."""
    x = blocks.conv_block(x, filters, 3, strides=2, style=conv, activation="relu", name="conv1")
    return conv.max_pool(x, 3, 2, padding=1, name="maxpool")


def _classifier_top(classes, classifier_activation, use_bias=True):
    def top(x):
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        return layers.Dense(classes, activation=classifier_activation, use_bias=use_bias, name="predictions")(x)

    return top


def _shufflenet_v2_unit(x, filters, strides, style, name):
    """torchvision's `InvertedResidual`.

    Stride 1: the channels are split in halves; the first passes through
    (branch1), the second goes through branch2. Stride 2: both branches see
    the whole input and branch1 is depthwise 3x3/2 → BN → 1x1 conv → BN →
    ReLU. branch2 is 1x1 conv → BN → ReLU → depthwise 3x3 → BN → 1x1 conv →
    BN → ReLU. Concatenation [branch1, branch2], then a 2-group shuffle.
    """
    branch_filters = filters // 2
    if strides == 1:
        shortcut, x = blocks.channel_split(x, name=f"{name}_split")
    else:
        shortcut = blocks.depthwise_bn(x, 3, strides, style, name=f"{name}_branch1_dwconv")
        shortcut = blocks.conv_block(
            shortcut, branch_filters, 1, style=style, activation="relu", name=f"{name}_branch1_conv"
        )
    x = blocks.conv_block(x, branch_filters, 1, style=style, activation="relu", name=f"{name}_branch2_conv1")
    x = blocks.depthwise_bn(x, 3, strides, style, name=f"{name}_branch2_dwconv")
    x = blocks.conv_block(x, branch_filters, 1, style=style, activation="relu", name=f"{name}_branch2_conv2")
    x = layers.Concatenate(name=f"{name}_concat")([shortcut, x])
    return blocks.channel_shuffle(x, 2, name=f"{name}_shuffle")


def _shufflenet_v1_unit(x, filters, strides, groups, first_unit, style, name):
    """megvii's `ShuffleV1Block`.

    Grouped 1x1 conv (not grouped in the network's first unit) → BN → ReLU
    → depthwise 3x3 → BN → channel shuffle → grouped 1x1 conv → BN. Stride
    1: ReLU(input + branch). Stride 2: the branch gives `filters - input
    channels`, concatenated after a 3x3/2 average pool of the input
    (zero padding counted, as PyTorch's AvgPool2d does), then ReLU on the
    branch half.

    megvii's shuffle reshapes to (channels / groups, groups) before the
    transpose, the converse of torchvision's order: torchvision's shuffle
    with `channels / groups` groups.
    """
    in_channels = x.shape[-1]
    bottleneck = filters // 4
    inputs = x
    x = blocks.conv_block(
        x, bottleneck, 1, style=style, activation="relu", groups=1 if first_unit else groups,
        name=f"{name}_gconv1",
    )
    x = blocks.depthwise_bn(x, 3, strides, style, name=f"{name}_dwconv")
    if groups > 1:
        x = blocks.channel_shuffle(x, bottleneck // groups, name=f"{name}_shuffle")
    x = blocks.conv_block(
        x, filters - in_channels if strides == 2 else filters, 1, style=style, activation=None,
        groups=groups, name=f"{name}_gconv2",
    )
    if strides == 1:
        x = layers.Add(name=f"{name}_add")([inputs, x])
        return layers.ReLU(name=f"{name}_relu")(x)
    shortcut = conventions_for(style).avg_pool(inputs, 3, strides, 1, name=f"{name}_shortcut")
    x = layers.ReLU(name=f"{name}_relu")(x)
    return layers.Concatenate(name=f"{name}_concat")([shortcut, x])


@builders.documented(
    "Instantiates ShuffleNet v2, layer for layer as torchvision's.\n\nconv1 3x3/2 → max pool 3x3/2 → stages 2-4 of shuffle units (4, 8, 4;\nthe first of each with stride 2) → conv5 1x1 → global average → fc.\nLayers: `conv1`, `maxpool`, `stage{s}_unit{u}_branch{1,2}_...`, `conv5`,\n`predictions`.",
    {
        "width": "0.5, 1.0, 1.5 or 2.0 (torchvision's `shufflenet_v2_x*`).",
        "include_top": 'whether to include the classifier (conv5 is part of the features either way).',
        "style": '`"torch"` (symmetric padding, BN eps 1e-5, as torchvision) or `"tf"` (TensorFlow "same" padding, BN eps 1e-3).',
        "name": 'model name, `shufflenet_v2_x{width}` by default.',
    },
)
@builders.model_options("shufflenet_v2")
@builders.loads_without_random_values
def ShuffleNetV2(width=1.0, input_shape=None, include_top=True, weights=None, input_tensor=None,
                 pooling=None, classes=1000, classifier_activation="softmax", style="torch",
                 name=None):
    if width not in SHUFFLENET_V2_CHANNELS:
        raise ValueError(f"width must be one of {sorted(SHUFFLENET_V2_CHANNELS)}, got {width!r}")
    conv = conventions_for(style)
    stem, *stages, last = SHUFFLENET_V2_CHANNELS[width]
    img_input, inputs = builders.image_input(input_shape, input_tensor, include_top)
    x = _stem(img_input, stem, conv)
    for stage, (repeats, filters) in enumerate(zip(STAGE_REPEATS, stages), start=2):
        for unit in range(repeats):
            x = _shufflenet_v2_unit(
                x, filters, 2 if unit == 0 else 1, conv, name=f"stage{stage}_unit{unit + 1}"
            )
    x = blocks.conv_block(x, last, 1, style=conv, activation="relu", name="conv5")
    top = _classifier_top(classes, classifier_activation)
    return builders.finish_model(
        inputs, x, name or shufflenet_v2_name(width), weights, include_top, pooling, top
    )


@builders.documented(
    "Instantiates ShuffleNet v1, layer for layer as megvii's official code.\n\nconv1 3x3/2 → max pool 3x3/2 → stages 2-4 of shuffle units (4, 8, 4;\nthe first of each with stride 2) → global average → fc without bias.\nLayers: `conv1`, `maxpool`, `stage{s}_unit{u}_gconv1`, `..._dwconv`,\n`..._gconv2`, `predictions`. megvii pools with AvgPool2d(7), which is\nthe global average at 224x224; this model averages globally at any size.",
    {
        "groups": 'groups of the 1x1 convolutions: 1, 2, 3, 4 or 8.',
        "scale": 'channel multiplier: 0.5, 1.0, 1.5 or 2.0 (see `shufflenet_v1_channels`).',
        "style": '`"torch"` (symmetric padding, BN eps 1e-5, average pools that count the zero padding, as megvii\'s) or `"tf"` ("same" padding, BN eps 1e-3).',
        "name": 'model name, `shufflenet_v1_g{groups}_x{scale}` by default.',
    },
)
@builders.model_options("shufflenet_v1", preprocessing={"torch": "bgr"})
@builders.loads_without_random_values
def ShuffleNetV1(groups=3, scale=1.0, input_shape=None, include_top=True, weights=None,
                 input_tensor=None, pooling=None, classes=1000, classifier_activation="softmax",
                 style="torch", name=None):
    stem, *stages = shufflenet_v1_channels(groups, scale)
    conv = conventions_for(style)
    img_input, inputs = builders.image_input(input_shape, input_tensor, include_top)
    x = _stem(img_input, stem, conv)
    for stage, (repeats, filters) in enumerate(zip(STAGE_REPEATS, stages), start=2):
        for unit in range(repeats):
            x = _shufflenet_v1_unit(
                x, filters, 2 if unit == 0 else 1, groups, first_unit=stage == 2 and unit == 0,
                style=conv, name=f"stage{stage}_unit{unit + 1}",
            )
    top = _classifier_top(classes, classifier_activation, use_bias=False)
    default_name = f"shufflenet_v1_g{groups}_x{scale:.1f}".replace(".", "_")
    return builders.finish_model(inputs, x, name or default_name, weights, include_top, pooling, top)
