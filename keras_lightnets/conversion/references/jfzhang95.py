"""jfzhang95/pytorch-deeplab-xception's DeepLabV3+ with its MobileNetV2 and ResNet backbones.

Written from modeling/backbone/mobilenet.py (each block pads its input with
`fixed_padding`; `low_level_features` = features[0:4] and
`high_level_features` = features[4:] are views whose keys the checkpoints
carry too), modeling/backbone/resnet.py (torchvision's Bottleneck; layer4 a
multi-grid unit [1, 2, 4]), modeling/aspp.py, modeling/decoder.py (the
current versions, with dropouts) and modeling/deeplab.py (bilinear with
align_corners=True). Keys `backbone.*`, `aspp.aspp1..4.atrous_conv/bn`,
`aspp.global_avg_pool.1/2`, `aspp.conv1/bn1`, `decoder.conv1/bn1`,
`decoder.last_conv.0/1/4/5/8`.
"""

import torch
import torch.nn.functional as F
from torch import nn

from keras_lightnets.conversion.references.common import fixed_padding
from keras_lightnets.conversion.references.torchvision.mobilenet_v2 import (
    MOBILENET_V2_SETTING,
)
from keras_lightnets.conversion.references.torchvision.resnet import (
    RESNET_LAYERS,
    Bottleneck,
    downsample,
)


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, dilation, expand_ratio):
        super().__init__()
        hidden_dim = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        self.dilation = dilation
        depthwise = [
            nn.Conv2d(hidden_dim, hidden_dim, 3, stride, 0, dilation, groups=hidden_dim, bias=False),
            nn.BatchNorm2d(hidden_dim),
            nn.ReLU6(inplace=True),
        ]
        project = [nn.Conv2d(hidden_dim, oup, 1, 1, 0, 1, 1, bias=False), nn.BatchNorm2d(oup)]
        expand = [] if expand_ratio == 1 else [
            nn.Conv2d(inp, hidden_dim, 1, 1, 0, 1, bias=False), nn.BatchNorm2d(hidden_dim), nn.ReLU6(inplace=True),
        ]
        self.conv = nn.Sequential(*expand, *depthwise, *project)

    def forward(self, x):
        out = self.conv(F.pad(x, fixed_padding(3, self.dilation)))
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    def __init__(self, output_stride=8, width_mult=1.0):
        super().__init__()
        input_channel = int(32 * width_mult)
        features = [nn.Sequential(
            nn.Conv2d(3, input_channel, 3, 2, 1, bias=False), nn.BatchNorm2d(input_channel), nn.ReLU6(inplace=True)
        )]
        current_stride, rate = 2, 1
        for t, c, n, s in MOBILENET_V2_SETTING:
            if current_stride == output_stride:
                stride, dilation = 1, rate
                rate *= s
            else:
                stride, dilation = s, 1
                current_stride *= s
            output_channel = int(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, stride if i == 0 else 1, dilation, t))
                input_channel = output_channel
        self.features = nn.Sequential(*features)
        self.low_level_features = self.features[0:4]
        self.high_level_features = self.features[4:]

    def forward(self, x):
        low_level_feat = self.low_level_features(x)
        return self.high_level_features(low_level_feat), low_level_feat


class ResNet(nn.Module):
    """The ResNet of jfzhang95 (`legacy=False`) or of its earlier `DeepLabv3_plus`
    (`legacy=True`: a stage's dilation goes to its first block only; output
    stride 8: dilations [1, 1, 2, 2], multi-grid [1, 2, 1])."""

    def __init__(self, depth=101, output_stride=16, legacy=False):
        super().__init__()
        self.inplanes, self.legacy = 64, legacy
        blocks = [1, 2, 4]
        if output_stride == 16:
            strides, dilations = [1, 2, 2, 1], [1, 1, 1, 2]
        elif legacy:
            strides, dilations, blocks = [1, 2, 1, 1], [1, 1, 2, 2], [1, 2, 1]
        else:
            strides, dilations = [1, 2, 1, 1], [1, 1, 2, 4]
        layers = RESNET_LAYERS[depth]
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)

        def stage_dilations(index):  # the stage's dilation for its first block, and for the others
            return [dilations[index]] + [1 if legacy else dilations[index]] * (layers[index] - 1)

        self.layer1 = self._make_layer(64, stage_dilations(0), strides[0])
        self.layer2 = self._make_layer(128, stage_dilations(1), strides[1])
        self.layer3 = self._make_layer(256, stage_dilations(2), strides[2])
        self.layer4 = self._make_layer(512, [b * dilations[3] for b in blocks], strides[3])

    def _make_layer(self, planes, block_dilations, stride):
        shortcut = downsample(self.inplanes, planes, stride)
        layers = [Bottleneck(self.inplanes, planes, stride, shortcut, block_dilations[0])]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes, dilation=d) for d in block_dilations[1:]]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low_level_feat = x = self.layer1(x)
        return self.layer4(self.layer3(self.layer2(x))), low_level_feat


class ASPPModule(nn.Module):
    def __init__(self, inplanes, planes, kernel_size, padding, dilation):
        super().__init__()
        self.atrous_conv = nn.Conv2d(inplanes, planes, kernel_size, 1, padding, dilation, bias=False)
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.atrous_conv(x)))


def image_pooling(inplanes):
    """`global_avg_pool`: pool, 1x1 conv, BN, ReLU."""
    return nn.Sequential(
        nn.AdaptiveAvgPool2d((1, 1)), nn.Conv2d(inplanes, 256, 1, stride=1, bias=False), nn.BatchNorm2d(256), nn.ReLU()
    )


class ASPP(nn.Module):
    def __init__(self, inplanes, output_stride):
        super().__init__()
        dilations = [1, 6, 12, 18] if output_stride == 16 else [1, 12, 24, 36]
        self.aspp1 = ASPPModule(inplanes, 256, 1, 0, dilations[0])
        self.aspp2 = ASPPModule(inplanes, 256, 3, dilations[1], dilations[1])
        self.aspp3 = ASPPModule(inplanes, 256, 3, dilations[2], dilations[2])
        self.aspp4 = ASPPModule(inplanes, 256, 3, dilations[3], dilations[3])
        self.global_avg_pool = image_pooling(inplanes)
        self.conv1 = nn.Conv2d(1280, 256, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(256)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        x1, x2, x3, x4 = self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x)
        x5 = F.interpolate(self.global_avg_pool(x), size=x4.size()[2:], mode="bilinear", align_corners=True)
        x = torch.cat((x1, x2, x3, x4, x5), dim=1)
        return self.dropout(self.relu(self.bn1(self.conv1(x))))


def last_conv(num_classes, dropouts=True):
    """The decoder's 3x3 convs and classifier: `last_conv.0/1/4/5/8` with the
    dropouts of the current code, `0/1/3/4/6` without (its early versions)."""
    first = [nn.Dropout(0.5)] if dropouts else []
    second = [nn.Dropout(0.1)] if dropouts else []
    return nn.Sequential(
        nn.Conv2d(304, 256, 3, 1, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(), *first,
        nn.Conv2d(256, 256, 3, 1, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(), *second,
        nn.Conv2d(256, num_classes, 1, 1),
    )


class Decoder(nn.Module):
    def __init__(self, num_classes, low_level_inplanes, dropouts=True):
        super().__init__()
        self.conv1 = nn.Conv2d(low_level_inplanes, 48, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(48)
        self.relu = nn.ReLU()
        self.last_conv = last_conv(num_classes, dropouts)

    def forward(self, x, low_level_feat):
        low_level_feat = self.relu(self.bn1(self.conv1(low_level_feat)))
        x = F.interpolate(x, size=low_level_feat.size()[2:], mode="bilinear", align_corners=True)
        return self.last_conv(torch.cat((x, low_level_feat), dim=1))


class DeepLab(nn.Module):
    """`DeepLab(backbone="mobilenet"|"resnet", output_stride, num_classes)` (ResNet-101, or 50);
    `dropouts=False`: the decoder of its early versions."""

    def __init__(self, backbone="mobilenet", output_stride=16, num_classes=21, depth=101, dropouts=True):
        super().__init__()
        if backbone == "mobilenet":
            self.backbone = MobileNetV2(output_stride)
            inplanes, low_level = 320, 24
        else:
            self.backbone = ResNet(depth, output_stride)
            inplanes, low_level = 2048, 256
        self.aspp = ASPP(inplanes, output_stride)
        self.decoder = Decoder(num_classes, low_level, dropouts)

    def forward(self, input):
        x, low_level_feat = self.backbone(input)
        x = self.decoder(self.aspp(x), low_level_feat)
        return F.interpolate(x, size=input.size()[2:], mode="bilinear", align_corners=True)
