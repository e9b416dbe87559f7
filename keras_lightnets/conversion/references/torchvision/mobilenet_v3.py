"""torchvision's `mobilenet_v3_large` and `mobilenet_v3_small`, in plain torch.

Written from torchvision 0.29's `mobilenetv3.py`, with its state_dict keys
(a torchvision checkpoint loads with `strict=True`):

    features.0           stem: conv 3x3/2, BN, Hardswish
    features.1 .. N      inverted residual blocks, `features.i.block.j`
    features.N+1         conv 1x1 to 6x the last block's width, BN, Hardswish
    classifier.0, .3     Linear → Hardswish → Dropout → Linear

Every BatchNorm has eps 1e-3 (momentum 0.01). Deliberately independent of
the Keras builders' tables: it is what they are checked against.
"""

import collections
import functools

import torch
from torch import nn

BlockSpec = collections.namedtuple(
    "BlockSpec", ["in_channels", "kernel", "expanded", "out_channels", "use_se", "activation", "stride", "dilation"]
)

# The paper's tables 1 and 2: (in, kernel, expanded, out, SE, activation, stride).
# The last three rows are the stride-32 stage that `reduced_tail` halves and
# `dilated` turns into a dilation-2 stage.
LARGE = (
    (16, 3, 16, 16, False, "RE", 1),
    (16, 3, 64, 24, False, "RE", 2),
    (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", 2),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2),
    (80, 3, 200, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 480, 112, True, "HS", 1),
    (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2),
    (160, 5, 960, 160, True, "HS", 1),
    (160, 5, 960, 160, True, "HS", 1),
)
SMALL = (
    (16, 3, 16, 16, True, "RE", 2),
    (16, 3, 72, 24, False, "RE", 2),
    (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1),
    (48, 5, 144, 48, True, "HS", 1),
    (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1),
    (96, 5, 576, 96, True, "HS", 1),
)
LAST_CHANNEL = {"large": 1280, "small": 1024}


def make_divisible(value, divisor=8):
    """torchvision's `_make_divisible`: the nearest multiple of `divisor`, at
    least `divisor`, never more than 10 % below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def mobilenet_v3_config(arch, width_mult=1.0, reduced_tail=False, dilated=False):
    """`(block specs, classifier hidden width)` of `arch` ("large" or "small"),
    as torchvision's `_mobilenet_v3_conf`."""
    table = {"large": LARGE, "small": SMALL}[arch]
    reduce_divider = 2 if reduced_tail else 1
    tail = len(table) - 3
    specs = []
    for index, (cin, kernel, expanded, cout, use_se, activation, stride) in enumerate(table):
        dilation = 1
        if index >= tail:
            cout //= reduce_divider
            if index > tail:
                cin //= reduce_divider
                expanded //= reduce_divider
            dilation = 2 if dilated else 1
        specs.append(BlockSpec(
            make_divisible(cin * width_mult), kernel, make_divisible(expanded * width_mult),
            make_divisible(cout * width_mult), use_se, activation, stride, dilation,
        ))
    return specs, make_divisible(LAST_CHANNEL[arch] // reduce_divider * width_mult)


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) → norm → optional activation; padding `(k - 1) // 2 * dilation` on every side."""

    def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, dilation=1, groups=1, activation=None,
                 norm_layer=nn.BatchNorm2d):
        layers = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=(kernel_size - 1) // 2 * dilation,
                      dilation=dilation, groups=groups, bias=False),
            norm_layer(out_channels),
        ]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    """`x * hardsigmoid(fc2(relu(fc1(mean(x)))))`; `fc1`, `fc2` are 1x1 convs with bias."""

    def __init__(self, channels, squeeze_channels):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x):
        scale = self.activation(self.fc1(self.avgpool(x)))
        return x * self.scale_activation(self.fc2(scale))


class InvertedResidual(nn.Module):
    """[expand 1x1] → depthwise → [SE] → project 1x1.

    No expand conv when `expanded == in_channels`; a dilated block has
    stride 1 even where its spec says 2; the residual is added when the
    spec's stride is 1 and the width unchanged.
    """

    def __init__(self, spec, norm_layer):
        super().__init__()
        activation = nn.Hardswish if spec.activation == "HS" else nn.ReLU
        layers = []
        if spec.expanded != spec.in_channels:
            layers.append(ConvBNAct(spec.in_channels, spec.expanded, 1, activation=activation, norm_layer=norm_layer))
        layers.append(ConvBNAct(
            spec.expanded, spec.expanded, spec.kernel, stride=1 if spec.dilation > 1 else spec.stride,
            dilation=spec.dilation, groups=spec.expanded, activation=activation, norm_layer=norm_layer,
        ))
        if spec.use_se:
            layers.append(SqueezeExcitation(spec.expanded, make_divisible(spec.expanded // 4)))
        layers.append(ConvBNAct(spec.expanded, spec.out_channels, 1, norm_layer=norm_layer))
        self.block = nn.Sequential(*layers)
        self.use_residual = spec.stride == 1 and spec.in_channels == spec.out_channels
        self.out_channels = spec.out_channels
        # the first block of a stage (spec stride 2, dilated or not): the
        # segmentation models take their taps from these
        self.is_strided = spec.stride > 1

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_residual else y


class MobileNetV3(nn.Module):
    """torchvision's MobileNetV3 classifier: `(N, 3, H, W)` → `(N, num_classes)` logits.

    Args:
        arch: "large" or "small".
        num_classes: outputs of the last Linear.
        width_mult, reduced_tail, dilated: as torchvision's builders take them.
        dropout: the classifier's dropout (inactive in eval mode).
    """

    def __init__(self, arch="large", num_classes=1000, width_mult=1.0, reduced_tail=False, dilated=False,
                 dropout=0.2):
        super().__init__()
        specs, last_channel = mobilenet_v3_config(arch, width_mult, reduced_tail, dilated)
        norm = functools.partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        head_in = specs[-1].out_channels
        self.features = nn.Sequential(
            ConvBNAct(3, specs[0].in_channels, 3, stride=2, activation=nn.Hardswish, norm_layer=norm),
            *(InvertedResidual(spec, norm) for spec in specs),
            ConvBNAct(head_in, 6 * head_in, 1, activation=nn.Hardswish, norm_layer=norm),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(6 * head_in, last_channel), nn.Hardswish(), nn.Dropout(dropout), nn.Linear(last_channel, num_classes)
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
