"""ShuffleNet v1 (Zhang et al., 2018) and v2 (Ma et al., 2018).

v2 is torchvision's `shufflenetv2`; v1 is megvii's official PyTorch code
(megvii-model/ShuffleNet-Series, `ShuffleNetV1`), whose checkpoints the
converter reads.
"""

import keras
from keras import layers

from keras_lightnets import blocks
from keras_lightnets.weights import load_weights

STAGE_REPEATS = (4, 8, 4)  # units in stages 2, 3, 4 (both versions)

# width: output channels of conv1, stages 2-4 and conv5 (torchvision).
SHUFFLENET_V2_CHANNELS = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}

# groups: stage 2 output channels at scale 1.0 (the paper's Table 1); stages
# 3 and 4 double them.
SHUFFLENET_V1_STAGE2_CHANNELS = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}
# scale: conv1 output channels, as megvii's code has them.
SHUFFLENET_V1_STEM_CHANNELS = {0.5: 12, 1.0: 24, 1.5: 24, 2.0: 48}


def shufflenet_v2_name(width):
    """torchvision's name of the ShuffleNet v2 of `width`: `shufflenet_v2_x1_0`, ..."""
    return f"shufflenet_v2_x{width:.1f}".replace(".", "_")


def shufflenet_v1_channels(groups, scale):
    """Output channels of conv1 and stages 2-4 of ShuffleNet v1.

    Stage widths are the paper's, scaled and rounded to a multiple of
    `4 * groups` (the bottleneck has a quarter of them, in `groups` groups);
    conv1's are megvii's, rounded up to a multiple of `groups`. For groups 3
    and 8 this is megvii's table; groups 1, 2 and 4, which megvii's code does
    not offer, follow the same rule.
    """
    if groups not in SHUFFLENET_V1_STAGE2_CHANNELS:
        raise ValueError(f"groups must be one of {sorted(SHUFFLENET_V1_STAGE2_CHANNELS)}, got {groups!r}")
    if scale not in SHUFFLENET_V1_STEM_CHANNELS:
        raise ValueError(f"scale must be one of {sorted(SHUFFLENET_V1_STEM_CHANNELS)}, got {scale!r}")
    stem = -(-SHUFFLENET_V1_STEM_CHANNELS[scale] // groups) * groups
    stage2 = SHUFFLENET_V1_STAGE2_CHANNELS[groups] * scale
    stages = [blocks.make_divisible(stage2 * 2**i, 4 * groups) for i in range(3)]
    return (stem, *stages)


def _stem(x, filters, style):
    """conv1 3x3/2 → BN → ReLU, then max pool 3x3/2 (padding 1)."""
    x = blocks._conv_block(x, filters, 3, strides=2, style=style, activation="relu", name="conv1")
    if style == "torch":
        return blocks.torch_max_pool(x, 3, 2, padding=1, name="maxpool")
    return layers.MaxPooling2D(3, 2, padding="same", name="maxpool")(x)


def _depthwise_bn(x, strides, style, name):
    """Depthwise 3x3 conv (no bias) → BN, without activation."""
    padding = "same"
    if strides != 1:
        x = blocks.stride_padding(x, 3, style, name=f"{name}_pad")
        padding = "valid"
    x = layers.DepthwiseConv2D(3, strides, padding=padding, use_bias=False, name=name)(x)
    return layers.BatchNormalization(**blocks.bn_params(style), name=f"{name}_bn")(x)


def _classifier(x, include_top, pooling, classes, classifier_activation, use_bias=True):
    if not include_top:
        return blocks.pooling_head(x, pooling)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return layers.Dense(
        classes, activation=classifier_activation, use_bias=use_bias, name="predictions"
    )(x)


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
        shortcut = _depthwise_bn(x, strides, style, name=f"{name}_branch1_dwconv")
        shortcut = blocks._conv_block(
            shortcut, branch_filters, 1, style=style, activation="relu", name=f"{name}_branch1_conv"
        )
    x = blocks._conv_block(x, branch_filters, 1, style=style, activation="relu", name=f"{name}_branch2_conv1")
    x = _depthwise_bn(x, strides, style, name=f"{name}_branch2_dwconv")
    x = blocks._conv_block(x, branch_filters, 1, style=style, activation="relu", name=f"{name}_branch2_conv2")
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
    x = blocks._conv_block(
        x, bottleneck, 1, style=style, activation="relu", groups=1 if first_unit else groups,
        name=f"{name}_gconv1",
    )
    x = _depthwise_bn(x, strides, style, name=f"{name}_dwconv")
    if groups > 1:
        x = blocks.channel_shuffle(x, bottleneck // groups, name=f"{name}_shuffle")
    x = blocks._conv_block(
        x, filters - in_channels if strides == 2 else filters, 1, style=style, activation=None,
        groups=groups, name=f"{name}_gconv2",
    )
    if strides == 1:
        x = layers.Add(name=f"{name}_add")([inputs, x])
        return layers.ReLU(name=f"{name}_relu")(x)
    if style == "torch":
        shortcut = layers.ZeroPadding2D(1, name=f"{name}_shortcut_pad")(inputs)
        shortcut = layers.AveragePooling2D(3, strides, name=f"{name}_shortcut")(shortcut)
    else:
        shortcut = layers.AveragePooling2D(3, strides, padding="same", name=f"{name}_shortcut")(inputs)
    x = layers.ReLU(name=f"{name}_relu")(x)
    return layers.Concatenate(name=f"{name}_concat")([shortcut, x])


def ShuffleNetV2(
    width=1.0,
    input_shape=None,
    include_top=True,
    weights=None,
    input_tensor=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    style="torch",
    name=None,
):
    """Instantiates ShuffleNet v2, layer for layer as torchvision's.

    conv1 3x3/2 → max pool 3x3/2 → stages 2-4 of shuffle units (4, 8, 4;
    the first of each with stride 2) → conv5 1x1 → global average → fc.
    Layers: `conv1`, `maxpool`, `stage{s}_unit{u}_branch{1,2}_...`, `conv5`,
    `predictions`.

    Args:
        width: 0.5, 1.0, 1.5 or 2.0 (torchvision's `shufflenet_v2_x*`).
        input_shape: optional shape tuple, `(224, 224, 3)` by default with the
            classifier, any size >= 32 without it.
        include_top: whether to include the classifier (conv5 is part of
            the features either way).
        weights: `None` or the path of a weights file (.h5).
        input_tensor: optional Keras tensor to use as the model input.
        pooling: `None`, `"avg"` or `"max"` when `include_top=False`.
        classes: number of classes of the classifier.
        classifier_activation: activation of the classifier, `None` for logits.
        style: `"torch"` (symmetric padding, BN eps 1e-5, as torchvision) or
            `"tf"` (TensorFlow "same" padding, BN eps 1e-3).
        name: model name, `shufflenet_v2_x{width}` by default.

    Returns:
        A `keras.Model`.
    """
    if width not in SHUFFLENET_V2_CHANNELS:
        raise ValueError(f"width must be one of {sorted(SHUFFLENET_V2_CHANNELS)}, got {width!r}")
    blocks.check_style(style)
    stem, *stages, last = SHUFFLENET_V2_CHANNELS[width]
    img_input, inputs = blocks.image_input(input_shape, input_tensor, include_top)
    x = _stem(img_input, stem, style)
    for stage, (repeats, filters) in enumerate(zip(STAGE_REPEATS, stages), start=2):
        for unit in range(repeats):
            x = _shufflenet_v2_unit(
                x, filters, 2 if unit == 0 else 1, style, name=f"stage{stage}_unit{unit + 1}"
            )
    x = blocks._conv_block(x, last, 1, style=style, activation="relu", name="conv5")
    x = _classifier(x, include_top, pooling, classes, classifier_activation)
    model = keras.Model(inputs, x, name=name or shufflenet_v2_name(width))
    load_weights(model, weights)
    return model


def ShuffleNetV1(
    groups=3,
    scale=1.0,
    input_shape=None,
    include_top=True,
    weights=None,
    input_tensor=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    style="torch",
    name=None,
):
    """Instantiates ShuffleNet v1, layer for layer as megvii's official code.

    conv1 3x3/2 → max pool 3x3/2 → stages 2-4 of shuffle units (4, 8, 4;
    the first of each with stride 2) → global average → fc without bias.
    Layers: `conv1`, `maxpool`, `stage{s}_unit{u}_gconv1`, `..._dwconv`,
    `..._gconv2`, `predictions`. megvii pools with AvgPool2d(7), which is
    the global average at 224x224; this model averages globally at any size.

    Args:
        groups: groups of the 1x1 convolutions: 1, 2, 3, 4 or 8.
        scale: channel multiplier: 0.5, 1.0, 1.5 or 2.0 (see
            `shufflenet_v1_channels`).
        input_shape: optional shape tuple, `(224, 224, 3)` by default with the
            classifier, any size >= 32 without it.
        include_top: whether to include the classifier.
        weights: `None` or the path of a weights file (.h5).
        input_tensor: optional Keras tensor to use as the model input.
        pooling: `None`, `"avg"` or `"max"` when `include_top=False`.
        classes: number of classes of the classifier.
        classifier_activation: activation of the classifier, `None` for logits.
        style: `"torch"` (symmetric padding, BN eps 1e-5, average pools that
            count the zero padding, as megvii's) or `"tf"` ("same" padding,
            BN eps 1e-3).
        name: model name, `shufflenet_v1_g{groups}_x{scale}` by default.

    Returns:
        A `keras.Model`.
    """
    stem, *stages = shufflenet_v1_channels(groups, scale)
    blocks.check_style(style)
    img_input, inputs = blocks.image_input(input_shape, input_tensor, include_top)
    x = _stem(img_input, stem, style)
    for stage, (repeats, filters) in enumerate(zip(STAGE_REPEATS, stages), start=2):
        for unit in range(repeats):
            x = _shufflenet_v1_unit(
                x, filters, 2 if unit == 0 else 1, groups, first_unit=stage == 2 and unit == 0,
                style=style, name=f"stage{stage}_unit{unit + 1}",
            )
    x = _classifier(x, include_top, pooling, classes, classifier_activation, use_bias=False)
    default_name = f"shufflenet_v1_g{groups}_x{scale:.1f}".replace(".", "_")
    model = keras.Model(inputs, x, name=name or default_name)
    load_weights(model, weights)
    return model
