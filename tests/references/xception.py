"""PyTorch reference of jfzhang95/pytorch-deeplab-xception's `DeepLab(backbone="xception")`.

Written after modeling/backbone/xception.py (`fixed_padding`,
`SeparableConv2d` with BatchNorm inside, `Block` with its `rep` Sequential
and shared in-place ReLU, `AlignedXception` entry/middle/exit flows), with
the ASPP and decoder of `tests.references.deeplab` (modeling/aspp.py,
modeling/decoder.py; the Xception decoder takes 128 low-level channels).
Module names, hence state_dict keys, are the original's; the in-place ReLU at
the head of `rep` stays in place, because the skip branch reads its input
after it ran.
"""

import torch.nn.functional as F
from torch import nn

from tests.references.deeplab import JfzASPP, JfzDecoder, fixed_padding


class SeparableConv2d(nn.Module):
    def __init__(self, inplanes, planes, kernel_size=3, stride=1, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, inplanes, kernel_size, stride, 0, dilation, groups=inplanes, bias=False)
        self.bn = nn.BatchNorm2d(inplanes)
        self.pointwise = nn.Conv2d(inplanes, planes, 1, 1, 0, 1, 1, bias=False)

    def forward(self, x):
        x = F.pad(x, fixed_padding(self.conv1.kernel_size[0], self.conv1.dilation[0]))
        return self.pointwise(self.bn(self.conv1(x)))


class Block(nn.Module):
    def __init__(self, inplanes, planes, reps, stride=1, dilation=1, start_with_relu=True, grow_first=True,
                 is_last=False):
        super().__init__()
        if planes != inplanes or stride != 1:
            self.skip = nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False)
            self.skipbn = nn.BatchNorm2d(planes)
        else:
            self.skip = None
        self.relu = nn.ReLU(inplace=True)
        rep = []
        filters = inplanes
        if grow_first:
            rep += [self.relu, SeparableConv2d(inplanes, planes, 3, 1, dilation), nn.BatchNorm2d(planes)]
            filters = planes
        for _ in range(reps - 1):
            rep += [self.relu, SeparableConv2d(filters, filters, 3, 1, dilation), nn.BatchNorm2d(filters)]
        if not grow_first:
            rep += [self.relu, SeparableConv2d(inplanes, planes, 3, 1, dilation), nn.BatchNorm2d(planes)]
        if stride != 1:
            rep += [self.relu, SeparableConv2d(planes, planes, 3, 2), nn.BatchNorm2d(planes)]
        if stride == 1 and is_last:
            rep += [self.relu, SeparableConv2d(planes, planes, 3, 1), nn.BatchNorm2d(planes)]
        if not start_with_relu:
            rep = rep[1:]
        self.rep = nn.Sequential(*rep)

    def forward(self, inp):
        x = self.rep(inp)  # a leading in-place ReLU has now turned `inp` into relu(inp)
        skip = self.skipbn(self.skip(inp)) if self.skip is not None else inp
        return x + skip


class AlignedXception(nn.Module):
    def __init__(self, output_stride):
        super().__init__()
        entry_block3_stride, middle_block_dilation, exit_block_dilations = {
            16: (2, 1, (1, 2)), 8: (1, 2, (2, 4))
        }[output_stride]
        self.conv1 = nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(32, 64, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.block1 = Block(64, 128, reps=2, stride=2, start_with_relu=False)
        self.block2 = Block(128, 256, reps=2, stride=2, start_with_relu=False, grow_first=True)
        self.block3 = Block(256, 728, reps=2, stride=entry_block3_stride, start_with_relu=True, grow_first=True,
                            is_last=True)
        for index in range(4, 20):
            setattr(self, f"block{index}", Block(728, 728, reps=3, stride=1, dilation=middle_block_dilation,
                                                 start_with_relu=True, grow_first=True))
        self.block20 = Block(728, 1024, reps=2, stride=1, dilation=exit_block_dilations[0], start_with_relu=True,
                             grow_first=False, is_last=True)
        self.conv3 = SeparableConv2d(1024, 1536, 3, stride=1, dilation=exit_block_dilations[1])
        self.bn3 = nn.BatchNorm2d(1536)
        self.conv4 = SeparableConv2d(1536, 1536, 3, stride=1, dilation=exit_block_dilations[1])
        self.bn4 = nn.BatchNorm2d(1536)
        self.conv5 = SeparableConv2d(1536, 2048, 3, stride=1, dilation=exit_block_dilations[1])
        self.bn5 = nn.BatchNorm2d(2048)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.block1(x))
        low_level_feat = x
        for index in range(2, 21):
            x = getattr(self, f"block{index}")(x)
        x = self.relu(x)
        for index in (3, 4, 5):
            x = self.relu(getattr(self, f"bn{index}")(getattr(self, f"conv{index}")(x)))
        return x, low_level_feat


class JfzXceptionDeepLab(nn.Module):
    """jfzhang95's `DeepLab(backbone="xception", output_stride, num_classes)`."""

    def __init__(self, output_stride=16, num_classes=21):
        super().__init__()
        self.backbone = AlignedXception(output_stride)
        self.aspp = JfzASPP(2048, output_stride)
        self.decoder = JfzDecoder(num_classes, 128)

    def forward(self, input):
        x, low_level_feat = self.backbone(input)
        x = self.decoder(self.aspp(x), low_level_feat)
        return F.interpolate(x, size=input.shape[2:], mode="bilinear", align_corners=True)
