"""Architecture tables: the numbers that define each network, as data.

Plain Python with no Keras import, so that the builders, the registry and
the checkpoint namings all read the same tables without depending on each
other.
"""

import math

# ---------------------------------------------------------------- channel rounding


def make_divisible(value, divisor=8, min_value=None):
    """Rounds a channel count to a multiple of `divisor`, at most 10% down.

    This is the rounding of the MobileNetV2 paper code, which both
    keras.applications and torchvision use.
    """
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def scale_depth(repeats, depth_coefficient=1.0):
    """Block counts of the stages scaled by `depth_coefficient`.

    Every stage but the first and the last gets `ceil(n * depth_coefficient)`
    blocks, as EfficientNet-Lite and timm's `mobilenetv2_110d`/`_120d` scale
    depth (their one-block first and last stages stay as they are).
    """
    last = len(repeats) - 1
    return tuple(n if i in (0, last) else math.ceil(n * depth_coefficient) for i, n in enumerate(repeats))


# ---------------------------------------------------------------- MobileNet v1 / v2

# (pointwise filters, stride) of MobileNet's 13 depthwise separable blocks.
MOBILENET_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)

# MobileNetV2: (expansion t, output channels c, repeats n, first stride s), as in the paper.
MOBILENET_V2_BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


def mobilenet_v2_stages(depth_coefficient=1.0):
    """`MOBILENET_V2_BLOCKS` with the repeats scaled by `scale_depth`."""
    repeats = scale_depth([n for _, _, n, _ in MOBILENET_V2_BLOCKS], depth_coefficient)
    return tuple((t, c, n, s) for (t, c, _, s), n in zip(MOBILENET_V2_BLOCKS, repeats))


# ---------------------------------------------------------------- MobileNetV3

# The paper's tables 1 (Large) and 2 (Small) as keras.applications writes
# them, one row per inverted residual block: (kernel, expansion, filters,
# stride, se_ratio, activation). The expansion is per input channel of the
# table (72 / 16: 72 hidden channels for 16 inputs). `minimalistic=True`
# makes every kernel 3, every activation "relu" and drops the squeeze-excite.
MOBILENET_V3_BLOCKS = {
    "large": (
        (3, 1, 16, 1, None, "relu"),
        (3, 4, 24, 2, None, "relu"),
        (3, 3, 24, 1, None, "relu"),
        (5, 3, 40, 2, 0.25, "relu"),
        (5, 3, 40, 1, 0.25, "relu"),
        (5, 3, 40, 1, 0.25, "relu"),
        (3, 6, 80, 2, None, "hard_swish"),
        (3, 2.5, 80, 1, None, "hard_swish"),
        (3, 2.3, 80, 1, None, "hard_swish"),
        (3, 2.3, 80, 1, None, "hard_swish"),
        (3, 6, 112, 1, 0.25, "hard_swish"),
        (3, 6, 112, 1, 0.25, "hard_swish"),
        (5, 6, 160, 2, 0.25, "hard_swish"),
        (5, 6, 160, 1, 0.25, "hard_swish"),
        (5, 6, 160, 1, 0.25, "hard_swish"),
    ),
    "small": (
        (3, 1, 16, 2, 0.25, "relu"),
        (3, 72 / 16, 24, 2, None, "relu"),
        (3, 88 / 24, 24, 1, None, "relu"),
        (5, 4, 40, 2, 0.25, "hard_swish"),
        (5, 6, 40, 1, 0.25, "hard_swish"),
        (5, 6, 40, 1, 0.25, "hard_swish"),
        (5, 3, 48, 1, 0.25, "hard_swish"),
        (5, 3, 48, 1, 0.25, "hard_swish"),
        (5, 6, 96, 2, 0.25, "hard_swish"),
        (5, 6, 96, 1, 0.25, "hard_swish"),
        (5, 6, 96, 1, 0.25, "hard_swish"),
    ),
}
MOBILENET_V3_STEM = 16
MOBILENET_V3_LAST_POINT = {"large": 1280, "small": 1024}  # the classifier's hidden width
MOBILENET_V3_TAIL = 3  # the last blocks: the stride-32 stage, dilated in segmentation backbones


def mobilenet_v3_plan(size, alpha=1.0, minimalistic=False, torchvision=False, dilated=False):
    """The widths and strides of MobileNetV3 `size` ("large" or "small").

    keras.applications keeps a 16-channel stem, rounds the hidden channels
    from the block's actual input (`make_divisible(in * expansion)`) and
    widens the classifier only for alpha > 1; torchvision (`width_mult`)
    scales the stem and the table's hidden channels and classifier
    (`make_divisible(c * alpha)`). Both round the squeeze-excite width as
    `make_divisible(hidden / 4)` (hidden is a multiple of 8). `dilated`
    gives the last stage dilation 2 and its first block stride 1
    (torchvision's segmentation backbones: output stride 16).

    Returns:
        `(stem filters, blocks, last conv filters, classifier hidden width)`,
        each block `(kernel, hidden, filters, stride, dilation, squeeze or
        None, activation)`; a block whose hidden width equals its input's
        has no expansion conv.
    """
    if size not in MOBILENET_V3_BLOCKS:
        raise ValueError(f"size must be one of {sorted(MOBILENET_V3_BLOCKS)}, got {size!r}")
    rows = MOBILENET_V3_BLOCKS[size]
    stem = make_divisible(MOBILENET_V3_STEM * alpha) if torchvision else MOBILENET_V3_STEM
    blocks, in_channels, table_in = [], stem, MOBILENET_V3_STEM
    for index, (kernel, expansion, filters, stride, se_ratio, activation) in enumerate(rows):
        if torchvision:
            hidden = make_divisible(round(table_in * expansion) * alpha)
        else:
            hidden = make_divisible(in_channels * expansion)
        out_channels = make_divisible(filters * alpha)
        dilation = 1
        if dilated and index >= len(rows) - MOBILENET_V3_TAIL:
            stride, dilation = 1, 2
        if minimalistic:
            kernel, se_ratio, activation = 3, None, "relu"
        squeeze = make_divisible(hidden * se_ratio) if se_ratio else None
        blocks.append((kernel, hidden, out_channels, stride, dilation, squeeze, activation))
        in_channels, table_in = out_channels, filters
    last_point = MOBILENET_V3_LAST_POINT[size]
    if torchvision or alpha > 1.0:
        last_point = make_divisible(last_point * alpha)
    return stem, blocks, 6 * in_channels, last_point


# ---------------------------------------------------------------- EfficientNet-Lite

# (kernel, repeats, stride, expansion, output channels) of the seven stages.
EFFICIENTNET_LITE_BLOCKS = (
    (3, 1, 1, 1, 16),
    (3, 2, 2, 6, 24),
    (5, 2, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (5, 3, 1, 6, 112),
    (5, 4, 2, 6, 192),
    (3, 1, 1, 6, 320),
)
# variant: (width coefficient, depth coefficient, resolution, dropout)
EFFICIENTNET_LITE_VARIANTS = {
    0: (1.0, 1.0, 224, 0.2),
    1: (1.0, 1.1, 240, 0.2),
    2: (1.1, 1.2, 260, 0.3),
    3: (1.2, 1.4, 280, 0.3),
    4: (1.4, 1.8, 300, 0.3),
}


# ---------------------------------------------------------------- SqueezeNet

# (squeeze, expand 1x1, expand 3x3) of fire2 .. fire9; both versions share them.
FIRE_MODULES = (
    (16, 64, 64),
    (16, 64, 64),
    (32, 128, 128),
    (32, 128, 128),
    (48, 192, 192),
    (48, 192, 192),
    (64, 256, 256),
    (64, 256, 256),
)
# version: (conv1 filters, conv1 kernel, the Fire modules followed by a max
# pool); conv1 is followed by one in both versions.
SQUEEZENET_VERSIONS = {
    "1_0": (96, 7, (4, 8)),
    "1_1": (64, 3, (3, 5)),
}

# ---------------------------------------------------------------- ShuffleNet

SHUFFLENET_STAGE_REPEATS = (4, 8, 4)  # units in stages 2, 3, 4 (both versions)

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
    stages = [make_divisible(stage2 * 2**i, 4 * groups) for i in range(3)]
    return (stem, *stages)

# ---------------------------------------------------------------- ResNet (DeepLabV3+)

RESNET_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}  # bottlenecks in layer1..layer4

# ---------------------------------------------------------------- Xception-65 (DeepLabV3+)

# DeepLabV3+'s modified Xception: a 3x3/2 and a 3x3 stem conv (32, 64
# channels), then 20 blocks of three 3x3 separable convs with a residual
# (a 1x1 conv + BN when the shape changes), then three separable convs.
# Block rows: (output channels, grow first, flow). "grow first": the first
# separable conv makes the output channels (else the second does).
XCEPTION_65_STEM = ((32, 2), (64, 1))  # (channels, stride) of conv1, conv2
XCEPTION_65_BLOCKS = (
    (128, True, "entry"),
    (256, True, "entry"),
    (728, True, "entry"),
    *((728, True, "middle"),) * 16,
    (1024, False, "exit"),
)
XCEPTION_65_EXIT_CONVS = (1536, 1536, 2048)  # conv3, conv4, conv5

# How each source's code builds it. `schedules`: output stride → (strides of
# the entry blocks, dilation of the middle blocks, dilations of the exit
# block's three separable convs, dilation of conv3..conv5); a strided
# separable conv always has dilation 1.
# - "bubbliiiing" (bubbliiiing/deeplabv3-plus-pytorch, nets/xception.py):
#   `Block`/`SeparableConv2d(activate_first=True)`; the skip conv sees the raw
#   block input; conv3..5 have `activate_first=False` (ReLU after each BN);
#   the low-level features (the decoder's input) are block2's second separable
#   conv (`hook_layer`).
# - "jfzhang95" (pytorch-deeplab-xception, AlignedXception): the in-place
#   ReLU at the head of `rep` also feeds the skip conv; ReLU after block1
#   (the low-level features) and after block20; no ReLU inside conv3..5.
# In both, an identity residual adds the ReLU'd input (the in-place ReLU).
XCEPTION_65_VARIANTS = {
    "bubbliiiing": {
        "schedules": {16: ((2, 2, 2), 1, (1, 1, 1), 1), 8: ((2, 2, 1), 2, (2, 2, 2), 2)},
        "relu_before_skip_conv": False,
        "low_level": "block2_sepconv2_pointwise_bn",
        "exit_input_relu": False,
        "exit_inner_relu": True,
    },
    "jfzhang95": {
        "schedules": {16: ((2, 2, 2), 1, (1, 1, 1), 2), 8: ((2, 2, 1), 2, (2, 2, 1), 4)},
        "relu_before_skip_conv": True,
        "low_level": "block2_relu",
        "exit_input_relu": True,
        "exit_inner_relu": False,
    },
}


def xception_65_plan(output_stride, variant):
    """`([(stride, (dilation of the 3 separable convs))] of the 20 blocks, exit conv dilation)`."""
    schedules = XCEPTION_65_VARIANTS[variant]["schedules"]
    if output_stride not in schedules:
        raise ValueError(f"output_stride must be one of {sorted(schedules)}, got {output_stride!r}")
    entry_strides, middle, exit_block, exit_convs = schedules[output_stride]
    entry = iter(entry_strides)
    plan = []
    for _, _, flow in XCEPTION_65_BLOCKS:
        if flow == "entry":
            plan.append((next(entry), (1, 1, 1)))
        elif flow == "middle":
            plan.append((1, (middle,) * 3))
        else:
            plan.append((1, exit_block))
    return plan, exit_convs


# ---------------------------------------------------------------- feature taps

LEVELS = ("P1", "P2", "P3", "P4", "P5")


def _levels(*layer_names):
    return dict(zip(LEVELS, layer_names))


def block_outputs(stem_channels, blocks):
    """`[(layer name, stride)]` of the output of each inverted residual block.

    `blocks`: `[(name prefix, out channels, stride, project BN suffix)]`. A
    block with stride 1 and as many channels out as in ends with its
    residual `{prefix}add`, the others with their projection's BN.
    """
    outputs, channels = [], stem_channels
    for prefix, filters, stride, project_bn in blocks:
        outputs.append((prefix + ("add" if stride == 1 and filters == channels else project_bn), stride))
        channels = filters
    return outputs


def last_at_each_stride(stem, outputs, head=None):
    """`{P1..P5: layer}`: `stem` (stride 2), then of `outputs` (`[(layer, stride)]`) the last at
    each stride; `head` (a conv after the last block, at its stride) ends the last level."""
    levels, stride = {"P1": stem}, 2
    for name, block_stride in outputs:
        stride *= block_stride
        levels[f"P{stride.bit_length() - 1}"] = name
    if head is not None:
        levels[f"P{stride.bit_length() - 1}"] = head
    return levels


def mobilenet_v2_taps(alpha=1.0, depth_coefficient=1.0, stem_filters=None):
    """The feature taps of `MobileNetV2(alpha, ..., depth_coefficient, stem_filters)`."""
    blocks = []
    for _, channels, repeats, stride in mobilenet_v2_stages(depth_coefficient):
        for i in range(repeats):
            prefix = f"block_{len(blocks)}_" if blocks else "expanded_conv_"
            blocks.append((prefix, make_divisible(int(channels * alpha), 8), stride if i == 0 else 1, "project_BN"))
    stem = stem_filters or make_divisible(32 * alpha, 8)
    return last_at_each_stride("Conv1_relu", block_outputs(stem, blocks))


def mobilenet_v3_block_outputs(size, alpha=1.0, minimalistic=False, torchvision=False):
    """`[(layer name, stride)]` of MobileNetV3's blocks (`mobilenet_v3_plan`)."""
    stem, plan, _, _ = mobilenet_v3_plan(size, alpha, minimalistic, torchvision)
    names = [(f"expanded_conv_{i}_" if i else "expanded_conv_", filters, stride, "project_bn")
             for i, (_, _, filters, stride, _, _, _) in enumerate(plan)]
    return block_outputs(stem, names)


def mobilenet_v3_taps(size, alpha=1.0, minimalistic=False, torchvision=False):
    """The feature taps of MobileNetV3 `size`: its last level ends with the 1x1 conv `conv_1`
    (part of timm's and torchvision's `features`; the head is `conv_2` after the pooling)."""
    outputs = mobilenet_v3_block_outputs(size, alpha, minimalistic, torchvision)
    return last_at_each_stride("conv_activation", outputs, head="conv_1_activation")


def efficientnet_lite_taps(variant):
    """The feature taps of `EfficientNetLite(variant)`."""
    width, depth, _, _ = EFFICIENTNET_LITE_VARIANTS[variant]
    repeats = scale_depth([row[1] for row in EFFICIENTNET_LITE_BLOCKS], depth)
    blocks = [
        (f"block{stage + 1}{chr(ord('a') + i)}_", make_divisible(channels * width, 8), stride if i == 0 else 1,
         "project_bn")
        for stage, ((_, _, stride, _, channels), n) in enumerate(zip(EFFICIENTNET_LITE_BLOCKS, repeats))
        for i in range(n)
    ]
    return last_at_each_stride("stem_activation", block_outputs(32, blocks))


def _shufflenet_taps(unit_end):
    units = (f"stage{stage}_unit{n}_{unit_end}" for stage, n in enumerate(SHUFFLENET_STAGE_REPEATS, start=2))
    return _levels("conv1_relu", "maxpool", *units)


def _resnet_taps(depth):
    blocks = (f"conv{stage}_block{n}_out" for stage, n in enumerate(RESNET_DEPTHS[depth], start=2))
    return _levels("conv1_relu", *blocks)


# The feature taps of every backbone: the layer whose output is the last
# feature map at each stride, as keras-hub's `pyramid_outputs` and kimm's
# feature keys name them: `P1` (stride 2), `P2` (4), `P3` (8), `P4` (16),
# `P5` (32). The last block's output, not the 1x1 head conv after it
# (MobileNetV2's `Conv_1`, EfficientNet's `top_conv`, ShuffleNet v2's `conv5`),
# as timm's `features_only`; MobileNetV3's `conv_1` is part of the features
# there (its head is `conv_2`, after the pooling), so it ends `P5`.
# SqueezeNet stops at stride 16. Dilated backbones (DeepLabV3+ at output
# stride 8 or 16) keep the names, and their deeper levels keep the
# resolution. Xception-65's `P2` is the low-level input of its DeepLab
# decoder, which differs between the two sources. The rows of networks
# whose depth or widths change the names are for their default arguments;
# the builders compute theirs (`mobilenet_v2_taps`, `mobilenet_v3_taps`).
# `feature_extractor=True` and the segmentation heads read these taps.
FEATURE_TAPS = {
    "mobilenet": _levels("conv_pw_1_relu", "conv_pw_3_relu", "conv_pw_5_relu", "conv_pw_11_relu", "conv_pw_13_relu"),
    "mobilenet_v2": mobilenet_v2_taps(),
    "mobilenet_v3_large": mobilenet_v3_taps("large"),
    "mobilenet_v3_small": mobilenet_v3_taps("small"),
    **{f"efficientnet_lite{variant}": efficientnet_lite_taps(variant) for variant in EFFICIENTNET_LITE_VARIANTS},
    "squeezenet1_0": _levels("relu_conv1", "fire4_concat", "fire8_concat", "fire9_concat"),
    "squeezenet1_1": _levels("relu_conv1", "fire3_concat", "fire5_concat", "fire9_concat"),
    "shufflenet_v1": _shufflenet_taps("relu"),
    "shufflenet_v2": _shufflenet_taps("shuffle"),
    **{f"resnet{depth}": _resnet_taps(depth) for depth in RESNET_DEPTHS},
    **{
        f"xception_{variant}": _levels(
            "conv2_relu", conventions["low_level"], "block2_add", "block19_add", "conv5_pointwise_relu"
        )
        for variant, conventions in XCEPTION_65_VARIANTS.items()
    },
}
