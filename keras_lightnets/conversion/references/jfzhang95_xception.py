"""jfzhang95/pytorch-deeplab-xception's `DeepLab(backbone="xception")` (Aligned Xception-65).

Written from modeling/backbone/xception.py (`fixed_padding`,
`SeparableConv2d` with a BatchNorm between depthwise `conv1` and
`pointwise`, `Block` with its `rep` Sequential and one shared in-place
ReLU, `AlignedXception` entry/middle/exit flows), with jfzhang95's ASPP and
decoder (128 low-level channels). The in-place ReLU at the head of `rep`
stays in place: the skip branch reads its input after it ran.
"""

import torch.nn.functional as F
from torch import nn

from keras_lightnets.conversion.references.common import fixed_padding
from keras_lightnets.conversion.references.jfzhang95 import ASPP, Decoder


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
        for index, (channels_in, channels_out) in zip((3, 4, 5), ((1024, 1536), (1536, 1536), (1536, 2048))):
            setattr(self, f"conv{index}", SeparableConv2d(channels_in, channels_out, 3, 1, exit_block_dilations[1]))
            setattr(self, f"bn{index}", nn.BatchNorm2d(channels_out))

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


class DeepLab(nn.Module):
    """`DeepLab(backbone="xception", output_stride, num_classes)`; `dropouts=False`:
    the decoder of jfzhang95's early versions."""

    def __init__(self, output_stride=16, num_classes=21, dropouts=True):
        super().__init__()
        self.backbone = AlignedXception(output_stride)
        self.aspp = ASPP(2048, output_stride)
        self.decoder = Decoder(num_classes, 128, dropouts)

    def forward(self, input):
        x, low_level_feat = self.backbone(input)
        x = self.decoder(self.aspp(x), low_level_feat)
        return F.interpolate(x, size=input.shape[2:], mode="bilinear", align_corners=True)
