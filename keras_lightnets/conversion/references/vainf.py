"""VainF/DeepLabV3Plus-Pytorch's DeepLabV3+ (MobileNetV2, ResNet-50/101 backbones).

Written from network/backbone/mobilenetv2.py (a stem without padding, each
block padding its input with `fixed_padding`; `low_level_features` =
features[:4], `high_level_features` = features[4:-1]), torchvision's
resnet.py (`replace_stride_with_dilation`), network/_deeplab.py (`ASPP`,
`DeepLabHeadV3Plus`, `convert_to_separable_conv`) and network/utils.py
(`IntermediateLayerGetter`, `AtrousSeparableConvolution`; bilinear
upsampling with align_corners=False). Keys `backbone.*`,
`classifier.aspp.*`, `classifier.project.*`, `classifier.classifier.*`.
"""

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from keras_lightnets.conversion.references.common import fixed_padding
from keras_lightnets.conversion.references.torchvision.mobilenet_v2 import (
    MOBILENET_V2_SETTING,
    make_divisible,
)
from keras_lightnets.conversion.references.torchvision.resnet import ResNet


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_planes, out_planes, kernel_size=3, stride=1, dilation=1, groups=1):
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, 0, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, dilation, expand_ratio):
        super().__init__()
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = [] if expand_ratio == 1 else [ConvBNReLU(inp, hidden_dim, kernel_size=1)]
        layers += [
            ConvBNReLU(hidden_dim, hidden_dim, stride=stride, dilation=dilation, groups=hidden_dim),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.input_padding = fixed_padding(3, dilation)

    def forward(self, x):
        out = self.conv(F.pad(x, self.input_padding))
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    def __init__(self, output_stride=8, width_mult=1.0):
        super().__init__()
        input_channel = make_divisible(32 * width_mult, 8)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), 8)
        features = [ConvBNReLU(3, input_channel, stride=2)]
        current_stride, dilation = 2, 1
        for t, c, n, s in MOBILENET_V2_SETTING:
            previous_dilation = dilation
            if current_stride == output_stride:
                stride = 1
                dilation *= s
            else:
                stride = s
                current_stride *= s
            output_channel = int(c * width_mult)
            for i in range(n):
                if i == 0:
                    features.append(InvertedResidual(input_channel, output_channel, stride, previous_dilation, t))
                else:
                    features.append(InvertedResidual(input_channel, output_channel, 1, dilation, t))
                input_channel = output_channel
        features.append(ConvBNReLU(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, 1000))


class IntermediateLayerGetter(nn.ModuleDict):
    """The model's children up to the last returned one; returns their outputs by name."""

    def __init__(self, model, return_layers):
        layers, remaining = OrderedDict(), dict(return_layers)
        for name, module in model.named_children():
            layers[name] = module
            remaining.pop(name, None)
            if not remaining:
                break
        super().__init__(layers)
        self.return_layers = return_layers

    def forward(self, x):
        out = OrderedDict()
        for name, module in self.named_children():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


class ASPPPooling(nn.Sequential):
    def __init__(self, in_channels, out_channels):
        super().__init__(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        size = x.shape[-2:]
        return F.interpolate(super().forward(x), size=size, mode="bilinear", align_corners=False)


def conv_bn_relu(in_channels, out_channels, kernel_size=1, rate=1):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=rate if kernel_size == 3 else 0, dilation=rate,
                  bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ASPP(nn.Module):
    def __init__(self, in_channels, atrous_rates, out_channels=256):
        super().__init__()
        modules = [conv_bn_relu(in_channels, out_channels)]
        modules += [conv_bn_relu(in_channels, out_channels, 3, rate) for rate in atrous_rates]
        modules.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(modules)
        self.project = nn.Sequential(
            nn.Conv2d(5 * out_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True), nn.Dropout(0.1),
        )

    def forward(self, x):
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class DeepLabHeadV3Plus(nn.Module):
    def __init__(self, in_channels, low_level_channels, num_classes, aspp_dilate):
        super().__init__()
        self.project = conv_bn_relu(low_level_channels, 48)
        self.aspp = ASPP(in_channels, aspp_dilate)
        self.classifier = nn.Sequential(
            nn.Conv2d(304, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
            nn.Conv2d(256, num_classes, 1),
        )

    def forward(self, feature):
        low_level_feature = self.project(feature["low_level"])
        output_feature = self.aspp(feature["out"])
        output_feature = F.interpolate(
            output_feature, size=low_level_feature.shape[2:], mode="bilinear", align_corners=False
        )
        return self.classifier(torch.cat([low_level_feature, output_feature], dim=1))


class AtrousSeparableConvolution(nn.Module):
    """A kxk depthwise conv then a 1x1 pointwise conv, as `body`."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size=kernel_size, stride=stride, padding=padding,
                      dilation=dilation, bias=bias, groups=in_channels),
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0, bias=bias),
        )

    def forward(self, x):
        return self.body(x)


def convert_to_separable_conv(module):
    """Every kxk Conv2d (k > 1) of `module` becomes an `AtrousSeparableConvolution`
    (`--separable_conv`). As in VainF's code, the conv's `bias` (a Parameter or
    None) is passed as the `bias` flag: bias-free convs stay bias-free."""
    new_module = module
    if isinstance(module, nn.Conv2d) and module.kernel_size[0] > 1:
        new_module = AtrousSeparableConvolution(
            module.in_channels, module.out_channels, module.kernel_size,
            module.stride, module.padding, module.dilation, module.bias is not None,
        )
    for name, child in module.named_children():
        new_module.add_module(name, convert_to_separable_conv(child))
    return new_module


class DeepLabV3Plus(nn.Module):
    """`deeplabv3plus_mobilenet` / `deeplabv3plus_resnet50|101`; `separable`:
    the head after `convert_to_separable_conv(model.classifier)`."""

    def __init__(self, backbone="mobilenetv2", num_classes=21, output_stride=16, separable=False):
        super().__init__()
        aspp_dilate = [12, 24, 36] if output_stride == 8 else [6, 12, 18]
        if backbone == "mobilenetv2":
            net = MobileNetV2(output_stride=output_stride)
            net.low_level_features = net.features[:4]
            net.high_level_features = net.features[4:-1]
            net.features = None
            net.classifier = None
            return_layers = {"high_level_features": "out", "low_level_features": "low_level"}
            inplanes, low_level_planes = 320, 24
        else:
            dilation = [False, True, True] if output_stride == 8 else [False, False, True]
            net = ResNet(int(backbone[len("resnet"):]), dilation)
            return_layers = {"layer4": "out", "layer1": "low_level"}
            inplanes, low_level_planes = 2048, 256
        self.backbone = IntermediateLayerGetter(net, return_layers)
        self.classifier = DeepLabHeadV3Plus(inplanes, low_level_planes, num_classes, aspp_dilate)
        if separable:
            self.classifier = convert_to_separable_conv(self.classifier)

    def forward(self, x):
        input_shape = x.shape[-2:]
        x = self.classifier(self.backbone(x))
        return F.interpolate(x, size=input_shape, mode="bilinear", align_corners=False)
