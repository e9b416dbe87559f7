"""EfficientNet-Lite0..4 of `efficientnet_lite_pytorch` (lukemelas' EfficientNet-PyTorch, Lite variant).

Written from its model.py (`MBConvBlock`, `EfficientNet`) and utils.py
(`efficientnet_lite`, `round_filters`, `round_repeats`,
`Conv2dDynamicSamePadding`): TensorFlow "same" padding (the extra row or
column at the bottom/right), BatchNorm eps 1e-3, ReLU6, no squeeze-excite,
stem and head not scaled ("fix_head_stem"). Keys `_conv_stem`, `_bn0`,
`_blocks.N._expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2`,
`_conv_head`, `_bn1`, `_fc`. The package is the parity reference where it
is installed; this one stands in for it elsewhere.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

# variant: (width coefficient, depth coefficient, resolution, dropout), its utils.py's; written out,
# not taken from keras_lightnets.models.tables (which the Keras builder reads)
VARIANTS = {
    0: (1.0, 1.0, 224, 0.2),
    1: (1.0, 1.1, 240, 0.2),
    2: (1.1, 1.2, 260, 0.3),
    3: (1.2, 1.4, 280, 0.3),
    4: (1.4, 1.8, 300, 0.3),
}
# repeats, kernel, stride, expansion, input filters, output filters ('r1_k3_s11_e1_i32_o16', ...)
BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3


def round_filters(filters, width, divisor=8):
    filters *= width
    rounded = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * filters:
        rounded += divisor
    return int(rounded)


class SameConv2d(nn.Conv2d):
    """A conv with TensorFlow's "same" padding: output ceil(input / stride), the odd pixel at the end."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1, bias=False):
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, 1, groups, bias)

    def forward(self, x):
        pads = []
        for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class MBConvBlock(nn.Module):
    def __init__(self, kernel, stride, expand, in_filters, out_filters):
        super().__init__()
        hidden = in_filters * expand
        self.expand = expand
        if expand != 1:
            self._expand_conv = SameConv2d(in_filters, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = SameConv2d(hidden, out_filters, 1)
        self._bn2 = nn.BatchNorm2d(out_filters, eps=BN_EPS)
        self._swish = nn.ReLU6()
        self.residual = stride == 1 and in_filters == out_filters

    def forward(self, inputs):
        x = inputs
        if self.expand != 1:
            x = self._swish(self._bn0(self._expand_conv(x)))
        x = self._swish(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetLite(nn.Module):
    def __init__(self, variant=0, num_classes=1000):
        super().__init__()
        width, depth, _, dropout = VARIANTS[variant]
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        for index, (repeats, kernel, stride, expand, in_filters, out_filters) in enumerate(BLOCKS):
            in_filters = 32 if index == 0 else round_filters(in_filters, width)
            out_filters = round_filters(out_filters, width)
            if 0 < index < len(BLOCKS) - 1:  # the first and last stages keep their repeats
                repeats = int(math.ceil(depth * repeats))
            blocks.append(MBConvBlock(kernel, stride, expand, in_filters, out_filters))
            blocks += [MBConvBlock(kernel, 1, expand, out_filters, out_filters) for _ in range(repeats - 1)]
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(out_filters, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)
        self._swish = nn.ReLU6()

    def forward(self, inputs):
        x = self._swish(self._bn0(self._conv_stem(inputs)))
        for block in self._blocks:
            x = block(x)
        x = self._swish(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(torch.flatten(self._avg_pooling(x), 1)))
