"""torchvision-style ResNet (v1.5) backbones for dense prediction.

The stride of a bottleneck sits on its 3x3 conv (torchvision, the DeepLab
PyTorch code), not on its first 1x1 conv as in keras.applications' ResNet
(v1). Layers carry keras.applications' names (`conv1_conv`,
`conv{stage}_block{b}_{i}_conv`, `_0_conv` for the projection shortcut).
"""

from keras import layers

from keras_lightnets.layers import blocks
from keras_lightnets.layers.conventions import conventions_for
from keras_lightnets.models.tables import RESNET_DEPTHS

STAGE_WIDTHS = (64, 128, 256, 512)  # bottleneck width; outputs are 4x
STAGE_STRIDES = (1, 2, 2, 2)

# How the DeepLab sources dilate layer1..4, per output stride: stage strides,
# stage dilations, and how a stage's blocks use its dilation.
# - "torchvision": replace_stride_with_dilation; a dilated stage's first
#   block keeps the previous rate (VainF).
# - "jfzhang95": every block of a stage uses its rate; layer4 is the
#   multi-grid unit (1, 2, 4) x rate.
# - "first_block_multigrid" (seed 003's code): as jfzhang95, but only the first block of layer1..3 gets the
#   rate (the others 1), and multi-grid (1, 2, 1) at output stride 8.
# - "smp" (segmentation_models_pytorch's `make_dilated`): as "torchvision", but a
#   dilated stage's first block gets the stage's rate too.
MULTI_GRID_SCHEDULES = {
    "jfzhang95": {16: ((1, 2, 2, 1), (1, 1, 1, 2), (1, 2, 4)), 8: ((1, 2, 1, 1), (1, 1, 2, 4), (1, 2, 4))},
    "first_block_multigrid": {16: ((1, 2, 2, 1), (1, 1, 1, 2), (1, 2, 4)), 8: ((1, 2, 1, 1), (1, 1, 2, 2), (1, 2, 1))},
}
DILATION_SCHEDULES = ("torchvision", "smp", *MULTI_GRID_SCHEDULES)


def resnet_strides(depth=101, output_stride=None, schedule="torchvision"):
    """`[(stage stride, [dilation of each block])]` for layer1..layer4."""
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"depth must be one of {sorted(RESNET_DEPTHS)}, got {depth!r}")
    if schedule not in DILATION_SCHEDULES:
        raise ValueError(f"schedule must be one of {DILATION_SCHEDULES}, got {schedule!r}")
    if output_stride not in (None, 8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
    repeats = RESNET_DEPTHS[depth]
    if schedule not in MULTI_GRID_SCHEDULES or output_stride in (None, 32):
        plan, current_stride, dilation = [], 4, 1
        for stride, n in zip(STAGE_STRIDES, repeats):
            previous = dilation
            if stride > 1 and current_stride == (output_stride or 32):
                dilation *= stride
                stride = 1
            current_stride *= stride
            first = dilation if schedule == "smp" else previous
            plan.append((stride, [first] + [dilation] * (n - 1)))
        return plan
    strides, dilations, multi_grid = MULTI_GRID_SCHEDULES[schedule][output_stride]
    rest = (lambda d: d) if schedule == "jfzhang95" else (lambda d: 1)
    plan = [
        (stride, [dilation] + [rest(dilation)] * (n - 1))
        for stride, dilation, n in zip(strides[:3], dilations[:3], repeats[:3])
    ]
    plan.append((strides[3], [m * dilations[3] for m in multi_grid]))
    return plan


def _bottleneck(x, width, stride, dilation, style, name):
    """1x1 → 3x3 (stride, dilation) → 1x1 (4 x width), projection shortcut
    when the shape changes, add, ReLU."""
    shortcut = x
    if stride != 1 or x.shape[-1] != 4 * width:
        shortcut = layers.Conv2D(4 * width, 1, strides=stride, use_bias=False, name=f"{name}_0_conv")(x)
        shortcut = conventions_for(style).batch_norm(f"{name}_0_bn")(shortcut)

    def conv(inputs, filters, kernel_size, index, activation="relu", **kwargs):
        return blocks.conv_block(
            inputs, filters, kernel_size, style=style, activation=activation,
            name=f"{name}_{index}_conv",
            names={"bn": f"{name}_{index}_bn", "act": f"{name}_{index}_relu", "pad": f"{name}_{index}_pad"},
            **kwargs,
        )

    x = conv(x, width, 1, 1)
    x = conv(x, width, 3, 2, strides=stride, dilation=dilation)
    x = conv(x, 4 * width, 1, 3, activation=None)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.ReLU(name=f"{name}_out")(x)


def resnet_features(x, depth=101, output_stride=None, schedule="torchvision", style="torch"):
    """The ResNet body (stem, layer1..4); returns layer4's output.

    With `output_stride` 8 or 16 the deeper stages keep that resolution and
    dilate instead (see `resnet_strides`). Its feature taps are the
    `FEATURE_TAPS` rows `resnet50` and `resnet101`.
    """
    x = blocks.conv_block(
        x, 64, 7, strides=2, style=style, activation="relu", name="conv1_conv",
        names={"bn": "conv1_bn", "act": "conv1_relu"},
    )
    # MaxPool2d(3, 2, padding=1) pads with -inf; after the ReLU every window
    # holds a value >= 0, so zero padding gives the same maxima.
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (width, (stride, dilations)) in enumerate(
        zip(STAGE_WIDTHS, resnet_strides(depth, output_stride, schedule)), start=2
    ):
        for index, dilation in enumerate(dilations):
            x = _bottleneck(
                x, width, stride if index == 0 else 1, dilation, style, f"conv{stage}_block{index + 1}"
            )
    return x
