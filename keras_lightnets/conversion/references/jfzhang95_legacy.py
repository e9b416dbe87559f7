"""The DeepLabV3+ (ResNet-101) of jfzhang95's early `deeplab_resnet.py` (`DeepLabv3_plus`).

`resnet_features.*` (jfzhang95's ResNet, `legacy=True`: a stage's dilation
goes to its first block only), `aspp1..4.atrous_convolution/bn` (a 1x1
conv where the rate is 1), `global_avg_pool.1/2`, `conv1/bn1` (ASPP
projection), `conv2/bn2` (48-channel low-level conv), `last_conv.0, 1, 3, 4,
6` without dropouts; the ASPP output is upsampled to ceil(input / 4)
(align_corners=True).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from keras_lightnets.conversion.references.jfzhang95 import (
    ResNet,
    image_pooling,
    last_conv,
)


class ASPPModule(nn.Module):
    def __init__(self, inplanes, planes, dilation):
        super().__init__()
        kernel_size, padding = (1, 0) if dilation == 1 else (3, dilation)
        self.atrous_convolution = nn.Conv2d(inplanes, planes, kernel_size, 1, padding, dilation, bias=False)
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.atrous_convolution(x)))


class DeepLabV3Plus(nn.Module):
    """`DeepLabv3_plus(n_classes, os)`; `depth` 101 (the original) or 50."""

    def __init__(self, n_classes=21, os=16, depth=101):
        super().__init__()
        self.resnet_features = ResNet(depth, os, legacy=True)
        dilations = [1, 6, 12, 18] if os == 16 else [1, 12, 24, 36]
        for index, dilation in enumerate(dilations, start=1):
            setattr(self, f"aspp{index}", ASPPModule(2048, 256, dilation))
        self.relu = nn.ReLU()
        self.global_avg_pool = image_pooling(2048)
        self.conv1 = nn.Conv2d(1280, 256, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(256)
        self.conv2 = nn.Conv2d(256, 48, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(48)
        self.last_conv = last_conv(n_classes, dropouts=False)

    def forward(self, input):
        x, low_level_features = self.resnet_features(input)
        branches = [getattr(self, f"aspp{index}")(x) for index in range(1, 5)]
        pooled = self.global_avg_pool(x)
        branches.append(F.interpolate(pooled, size=branches[-1].size()[2:], mode="bilinear", align_corners=True))
        x = self.relu(self.bn1(self.conv1(torch.cat(branches, dim=1))))
        size = (int(math.ceil(input.size()[-2] / 4)), int(math.ceil(input.size()[-1] / 4)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        low_level_features = self.relu(self.bn2(self.conv2(low_level_features)))
        x = self.last_conv(torch.cat((x, low_level_features), dim=1))
        return F.interpolate(x, size=input.size()[2:], mode="bilinear", align_corners=True)
