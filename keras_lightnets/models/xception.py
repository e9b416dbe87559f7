"""Xception-65, the DeepLabV3+ backbone (Chen et al., 2018), as two PyTorch sources build it.

`xception_features` builds the network from the tables in
`keras_lightnets.models.tables` (`XCEPTION_65_BLOCKS`, `XCEPTION_65_VARIANTS`;
its feature taps: `FEATURE_TAPS["xception_<variant>"]`):
- `"bubbliiiing"`: bubbliiiing/deeplabv3-plus-pytorch's `Xception` (the
  backbone of seed 000's DeepLabV3+ platform);
- `"jfzhang95"`: jfzhang95/pytorch-deeplab-xception's `AlignedXception`.
Both have the same layers and weight shapes; they differ in where the ReLUs
sit, which features the decoder taps and how the output stride becomes
dilation.

Layers: `conv1`, `conv2` (+ `_bn`, `_relu`); `block{n}_relu` (the block's
leading ReLU), `block{n}_sepconv{k}_depthwise` (+ `_bn`, `_pad` when
strided), `block{n}_sepconv{k}_pointwise` (+ `_bn`), `block{n}_sepconv{k}_relu`,
`block{n}_skip` (+ `_bn`), `block{n}_add`; `conv3..conv5_depthwise`,
`..._pointwise` (+ `_bn`, `_relu`).
"""

from keras import layers

from keras_lightnets.layers import blocks
from keras_lightnets.models.tables import (
    XCEPTION_65_BLOCKS,
    XCEPTION_65_EXIT_CONVS,
    XCEPTION_65_STEM,
    XCEPTION_65_VARIANTS,
    xception_65_plan,
)


def _separable_bn(x, filters, strides, dilation, style, name, inner_relu=False, activation=None):
    """Depthwise 3x3 → BN → [ReLU] → pointwise 1x1 → BN → [activation], no biases.

    Padding is PyTorch's `dilation` on every side (`fixed_padding` of a 3x3
    kernel is symmetric too).
    """
    x = blocks.depthwise_bn(x, 3, strides, style, dilation, name=f"{name}_depthwise")
    if inner_relu:
        x = layers.ReLU(name=f"{name}_depthwise_relu")(x)
    return blocks.conv_block(x, filters, 1, style=style, activation=activation, name=f"{name}_pointwise")


def xception_block(x, filters, strides, dilations, grow_first, style, name, relu_before_skip_conv):
    """One Xception block: ReLU → three (separable conv + BN) with ReLUs between, plus a residual.

    The residual is a strided 1x1 conv + BN when the shape changes, fed the
    ReLU'd input if `relu_before_skip_conv` (else the raw input); otherwise
    the ReLU'd input itself (both sources' in-place ReLU overwrites the
    input the identity shortcut adds).
    """
    in_channels = x.shape[-1]
    activated = layers.ReLU(name=f"{name}_relu")(x)
    widths = (filters if grow_first else in_channels, filters, filters)
    y = activated
    for index, (width, dilation) in enumerate(zip(widths, dilations), start=1):
        sepconv = f"{name}_sepconv{index}"
        if index > 1:
            y = layers.ReLU(name=f"{sepconv}_relu")(y)
        y = _separable_bn(y, width, strides if index == len(widths) else 1, dilation, style, sepconv)
    if strides != 1 or in_channels != filters:
        shortcut = blocks.conv_block(
            activated if relu_before_skip_conv else x, filters, 1, strides, style,
            activation=None, name=f"{name}_skip", padding="valid",
        )
    else:
        shortcut = activated
    return layers.Add(name=f"{name}_add")([y, shortcut])


def xception_features(x, output_stride=16, variant="jfzhang95", style="torch"):
    """Xception-65 from the stem to conv5, dilated for `output_stride` (8 or 16); returns conv5's output."""
    if variant not in XCEPTION_65_VARIANTS:
        raise ValueError(f"variant must be one of {sorted(XCEPTION_65_VARIANTS)}, got {variant!r}")
    conventions = XCEPTION_65_VARIANTS[variant]
    plan, exit_dilation = xception_65_plan(output_stride, variant)
    for index, (channels, strides) in enumerate(XCEPTION_65_STEM, start=1):
        x = blocks.conv_block(x, channels, 3, strides, style, activation="relu", name=f"conv{index}")
    rows = zip(XCEPTION_65_BLOCKS, plan)
    for index, ((filters, grow_first, _), (strides, dilations)) in enumerate(rows, start=1):
        name = f"block{index}"
        x = xception_block(
            x, filters, strides, dilations, grow_first, style, name, conventions["relu_before_skip_conv"]
        )
    if conventions["exit_input_relu"]:
        x = layers.ReLU(name="exit_relu")(x)
    for index, filters in enumerate(XCEPTION_65_EXIT_CONVS, start=3):
        x = _separable_bn(
            x, filters, 1, exit_dilation, style, f"conv{index}",
            inner_relu=conventions["exit_inner_relu"], activation="relu",
        )
    return x
