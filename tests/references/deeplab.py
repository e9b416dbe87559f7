"""PyTorch DeepLabV3+ references, written after the code whose checkpoints we convert.

Module structure (hence state_dict keys), padding, dilation schedules,
interpolation and concat order follow:
- VainF/DeepLabV3Plus-Pytorch: network/backbone/mobilenetv2.py (stem without
  padding, `fixed_padding` of the block input, `low_level_features` =
  features[:4], `high_level_features` = features[4:-1]), torchvision's
  resnet.py (replace_stride_with_dilation), network/_deeplab.py
  (ASPP, DeepLabHeadV3Plus), network/utils.py (IntermediateLayerGetter,
  align_corners=False);
- jfzhang95/pytorch-deeplab-xception: modeling/backbone/mobilenet.py,
  modeling/backbone/resnet.py (multi-grid layer4), modeling/aspp.py,
  modeling/decoder.py (current versions, with dropouts), modeling/deeplab.py
  (align_corners=True);
- seed 003 (`DeepLabv3_plus`, ResNet-101).
"""

import math
from collections import OrderedDict
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from tests.references.mobilenet import V2_SETTING, tv_make_divisible

RESNET_LAYERS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}


def fixed_padding(kernel_size, dilation):
    kernel_size_effective = kernel_size + (kernel_size - 1) * (dilation - 1)
    pad_total = kernel_size_effective - 1
    pad_beg = pad_total // 2
    return (pad_beg, pad_total - pad_beg, pad_beg, pad_total - pad_beg)


# --- VainF -------------------------------------------------------------------------------


class VainFConvBNReLU(nn.Sequential):
    def __init__(self, in_planes, out_planes, kernel_size=3, stride=1, dilation=1, groups=1):
        super().__init__(
            nn.Conv2d(in_planes, out_planes, kernel_size, stride, 0, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.ReLU6(inplace=True),
        )


class VainFInvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, dilation, expand_ratio):
        super().__init__()
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(VainFConvBNReLU(inp, hidden_dim, kernel_size=1))
        layers.extend(
            [
                VainFConvBNReLU(hidden_dim, hidden_dim, stride=stride, dilation=dilation, groups=hidden_dim),
                nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
                nn.BatchNorm2d(oup),
            ]
        )
        self.conv = nn.Sequential(*layers)
        self.input_padding = fixed_padding(3, dilation)

    def forward(self, x):
        x_pad = F.pad(x, self.input_padding)
        return x + self.conv(x_pad) if self.use_res_connect else self.conv(x_pad)


class VainFMobileNetV2(nn.Module):
    def __init__(self, output_stride=8, width_mult=1.0):
        super().__init__()
        input_channel = tv_make_divisible(32 * width_mult, 8)
        self.last_channel = tv_make_divisible(1280 * max(1.0, width_mult), 8)
        features = [VainFConvBNReLU(3, input_channel, stride=2)]
        current_stride, dilation = 2, 1
        for t, c, n, s in V2_SETTING:
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
                    features.append(VainFInvertedResidual(input_channel, output_channel, stride, previous_dilation, t))
                else:
                    features.append(VainFInvertedResidual(input_channel, output_channel, 1, dilation, t))
                input_channel = output_channel
        features.append(VainFConvBNReLU(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, 1000))


class TorchvisionBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class TorchvisionResNet(nn.Module):
    def __init__(self, depth=101, replace_stride_with_dilation=(False, False, False)):
        super().__init__()
        layers = RESNET_LAYERS[depth]
        self.inplanes, self.dilation = 64, 1
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], 2, replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(256, layers[2], 2, replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(512, layers[3], 2, replace_stride_with_dilation[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2048, 1000)

    def _make_layer(self, planes, blocks, stride=1, dilate=False):
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
        layers = [TorchvisionBottleneck(self.inplanes, planes, stride, downsample, previous_dilation)]
        self.inplanes = planes * 4
        layers += [TorchvisionBottleneck(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)


class IntermediateLayerGetter(nn.ModuleDict):
    """VainF's network/utils.py: the model's children up to the last returned one."""

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


class VainFASPPPooling(nn.Sequential):
    def __init__(self, in_channels, out_channels):
        super().__init__(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        size = x.shape[-2:]
        x = super().forward(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class VainFASPP(nn.Module):
    def __init__(self, in_channels, atrous_rates):
        super().__init__()
        out = 256
        modules = [nn.Sequential(nn.Conv2d(in_channels, out, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True))]
        for rate in atrous_rates:
            modules.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, out, 3, padding=rate, dilation=rate, bias=False),
                    nn.BatchNorm2d(out), nn.ReLU(inplace=True),
                )
            )
        modules.append(VainFASPPPooling(in_channels, out))
        self.convs = nn.ModuleList(modules)
        self.project = nn.Sequential(
            nn.Conv2d(5 * out, out, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True), nn.Dropout(0.1)
        )

    def forward(self, x):
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class DeepLabHeadV3Plus(nn.Module):
    def __init__(self, in_channels, low_level_channels, num_classes, aspp_dilate):
        super().__init__()
        self.project = nn.Sequential(
            nn.Conv2d(low_level_channels, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True)
        )
        self.aspp = VainFASPP(in_channels, aspp_dilate)
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
    """VainF's network/utils.py: depthwise kxk then pointwise 1x1, as `body`."""

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
    """VainF's network/_deeplab.py: every kxk Conv2d (k > 1) becomes separable.

    Like VainF, the conv's `bias` (a Parameter or None) is passed as the
    `bias` flag, so bias-free convs stay bias-free.
    """
    new_module = module
    if isinstance(module, nn.Conv2d) and module.kernel_size[0] > 1:
        new_module = AtrousSeparableConvolution(
            module.in_channels, module.out_channels, module.kernel_size,
            module.stride, module.padding, module.dilation, module.bias is not None,
        )
    for name, child in module.named_children():
        new_module.add_module(name, convert_to_separable_conv(child))
    return new_module


class VainFDeepLabV3Plus(nn.Module):
    """VainF's `deeplabv3plus_mobilenet` / `deeplabv3plus_resnet50|101`."""

    def __init__(self, backbone="mobilenetv2", num_classes=21, output_stride=16):
        super().__init__()
        aspp_dilate = [12, 24, 36] if output_stride == 8 else [6, 12, 18]
        if backbone == "mobilenetv2":
            net = VainFMobileNetV2(output_stride=output_stride)
            net.low_level_features = net.features[:4]
            net.high_level_features = net.features[4:-1]
            net.features = None
            net.classifier = None
            return_layers = {"high_level_features": "out", "low_level_features": "low_level"}
            inplanes, low_level_planes = 320, 24
        else:
            dilation = [False, True, True] if output_stride == 8 else [False, False, True]
            net = TorchvisionResNet(int(backbone[len("resnet"):]), dilation)
            return_layers = {"layer4": "out", "layer1": "low_level"}
            inplanes, low_level_planes = 2048, 256
        self.backbone = IntermediateLayerGetter(net, return_layers)
        self.classifier = DeepLabHeadV3Plus(inplanes, low_level_planes, num_classes, aspp_dilate)

    def forward(self, x):
        input_shape = x.shape[-2:]
        x = self.classifier(self.backbone(x))
        return F.interpolate(x, size=input_shape, mode="bilinear", align_corners=False)


# --- jfzhang95 ---------------------------------------------------------------------------


class JfzInvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, dilation, expand_ratio):
        super().__init__()
        hidden_dim = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        self.dilation = dilation
        if expand_ratio == 1:
            self.conv = nn.Sequential(
                nn.Conv2d(hidden_dim, hidden_dim, 3, stride, 0, dilation, groups=hidden_dim, bias=False),
                nn.BatchNorm2d(hidden_dim), nn.ReLU6(inplace=True),
                nn.Conv2d(hidden_dim, oup, 1, 1, 0, 1, 1, bias=False), nn.BatchNorm2d(oup),
            )
        else:
            self.conv = nn.Sequential(
                nn.Conv2d(inp, hidden_dim, 1, 1, 0, 1, bias=False), nn.BatchNorm2d(hidden_dim), nn.ReLU6(inplace=True),
                nn.Conv2d(hidden_dim, hidden_dim, 3, stride, 0, dilation, groups=hidden_dim, bias=False),
                nn.BatchNorm2d(hidden_dim), nn.ReLU6(inplace=True),
                nn.Conv2d(hidden_dim, oup, 1, 1, 0, 1, bias=False), nn.BatchNorm2d(oup),
            )

    def forward(self, x):
        x_pad = F.pad(x, fixed_padding(3, self.dilation))
        return x + self.conv(x_pad) if self.use_res_connect else self.conv(x_pad)


class JfzMobileNetV2(nn.Module):
    def __init__(self, output_stride=8, width_mult=1.0):
        super().__init__()
        input_channel = int(32 * width_mult)
        current_stride, rate = 1, 1
        features = [
            nn.Sequential(nn.Conv2d(3, input_channel, 3, 2, 1, bias=False), nn.BatchNorm2d(input_channel), nn.ReLU6(inplace=True))
        ]
        current_stride *= 2
        for t, c, n, s in V2_SETTING:
            if current_stride == output_stride:
                stride, dilation = 1, rate
                rate *= s
            else:
                stride, dilation = s, 1
                current_stride *= s
            output_channel = int(c * width_mult)
            for i in range(n):
                features.append(JfzInvertedResidual(input_channel, output_channel, stride if i == 0 else 1, dilation, t))
                input_channel = output_channel
        self.features = nn.Sequential(*features)
        self.low_level_features = self.features[0:4]
        self.high_level_features = self.features[4:]

    def forward(self, x):
        low_level_feat = self.low_level_features(x)
        return self.high_level_features(low_level_feat), low_level_feat


class MultiGridBottleneck(nn.Module):
    """jfzhang95's and seed 003's Bottleneck (same structure as torchvision's)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, dilation=dilation, padding=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        return self.relu(out + residual)


class MultiGridResNet(nn.Module):
    """jfzhang95's ResNet (`seed003=False`) or seed 003's (`_make_layer` gives
    the stage's dilation to its first block only; OS 8: dilations [1, 1, 2, 2],
    multi-grid [1, 2, 1])."""

    def __init__(self, depth=101, output_stride=16, seed003=False):
        super().__init__()
        self.inplanes, self.seed003 = 64, seed003
        blocks = [1, 2, 4]
        if output_stride == 16:
            strides, dilations = [1, 2, 2, 1], [1, 1, 1, 2]
        elif seed003:
            strides, dilations, blocks = [1, 2, 1, 1], [1, 1, 2, 2], [1, 2, 1]
        else:
            strides, dilations = [1, 2, 1, 1], [1, 1, 2, 4]
        layers = RESNET_LAYERS[depth]
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, layers[0], strides[0], dilations[0])
        self.layer2 = self._make_layer(128, layers[1], strides[1], dilations[1])
        self.layer3 = self._make_layer(256, layers[2], strides[2], dilations[2])
        self.layer4 = self._make_mg_unit(512, blocks, strides[3], dilations[3])

    def _downsample(self, planes, stride):
        if stride != 1 or self.inplanes != planes * 4:
            return nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))
        return None

    def _make_layer(self, planes, blocks, stride, dilation):
        layers = [MultiGridBottleneck(self.inplanes, planes, stride, dilation, self._downsample(planes, stride))]
        self.inplanes = planes * 4
        rest = 1 if self.seed003 else dilation
        layers += [MultiGridBottleneck(self.inplanes, planes, dilation=rest) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _make_mg_unit(self, planes, blocks, stride, dilation):
        layers = [MultiGridBottleneck(self.inplanes, planes, stride, blocks[0] * dilation, self._downsample(planes, stride))]
        self.inplanes = planes * 4
        layers += [MultiGridBottleneck(self.inplanes, planes, 1, b * dilation) for b in blocks[1:]]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low_level_feat = x = self.layer1(x)
        return self.layer4(self.layer3(self.layer2(x))), low_level_feat


class JfzASPPModule(nn.Module):
    def __init__(self, inplanes, planes, kernel_size, padding, dilation):
        super().__init__()
        self.atrous_conv = nn.Conv2d(inplanes, planes, kernel_size, 1, padding, dilation, bias=False)
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.atrous_conv(x)))


class JfzASPP(nn.Module):
    def __init__(self, inplanes, output_stride):
        super().__init__()
        dilations = [1, 6, 12, 18] if output_stride == 16 else [1, 12, 24, 36]
        self.aspp1 = JfzASPPModule(inplanes, 256, 1, 0, dilations[0])
        self.aspp2 = JfzASPPModule(inplanes, 256, 3, dilations[1], dilations[1])
        self.aspp3 = JfzASPPModule(inplanes, 256, 3, dilations[2], dilations[2])
        self.aspp4 = JfzASPPModule(inplanes, 256, 3, dilations[3], dilations[3])
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d((1, 1)), nn.Conv2d(inplanes, 256, 1, stride=1, bias=False), nn.BatchNorm2d(256), nn.ReLU()
        )
        self.conv1 = nn.Conv2d(1280, 256, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(256)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        x1, x2, x3, x4 = self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x)
        x5 = F.interpolate(self.global_avg_pool(x), size=x4.size()[2:], mode="bilinear", align_corners=True)
        x = torch.cat((x1, x2, x3, x4, x5), dim=1)
        return self.dropout(self.relu(self.bn1(self.conv1(x))))


class JfzDecoder(nn.Module):
    def __init__(self, num_classes, low_level_inplanes):
        super().__init__()
        self.conv1 = nn.Conv2d(low_level_inplanes, 48, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(48)
        self.relu = nn.ReLU()
        self.last_conv = nn.Sequential(
            nn.Conv2d(304, 256, 3, 1, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(), nn.Dropout(0.5),
            nn.Conv2d(256, 256, 3, 1, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(), nn.Dropout(0.1),
            nn.Conv2d(256, num_classes, 1, 1),
        )

    def forward(self, x, low_level_feat):
        low_level_feat = self.relu(self.bn1(self.conv1(low_level_feat)))
        x = F.interpolate(x, size=low_level_feat.size()[2:], mode="bilinear", align_corners=True)
        return self.last_conv(torch.cat((x, low_level_feat), dim=1))


class JfzDeepLab(nn.Module):
    """jfzhang95's `DeepLab(backbone="mobilenet"|"resnet")` (ResNet-101, or 50 for speed)."""

    def __init__(self, backbone="mobilenet", output_stride=16, num_classes=21, depth=101):
        super().__init__()
        if backbone == "mobilenet":
            self.backbone = JfzMobileNetV2(output_stride)
            inplanes, low_level = 320, 24
        else:
            self.backbone = MultiGridResNet(depth, output_stride)
            inplanes, low_level = 2048, 256
        self.aspp = JfzASPP(inplanes, output_stride)
        self.decoder = JfzDecoder(num_classes, low_level)

    def forward(self, input):
        x, low_level_feat = self.backbone(input)
        x = self.decoder(self.aspp(x), low_level_feat)
        return F.interpolate(x, size=input.size()[2:], mode="bilinear", align_corners=True)


# --- seed 003 ----------------------------------------------------------------------------


class SeedASPPModule(nn.Module):
    def __init__(self, inplanes, planes, dilation):
        super().__init__()
        kernel_size, padding = (1, 0) if dilation == 1 else (3, dilation)
        self.atrous_convolution = nn.Conv2d(inplanes, planes, kernel_size, 1, padding, dilation, bias=False)
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.atrous_convolution(x)))


class SeedDeepLabV3Plus(nn.Module):
    """Seed 003's `DeepLabv3_plus` (ResNet-101 by default)."""

    def __init__(self, n_classes=21, os=16, depth=101):
        super().__init__()
        self.resnet_features = MultiGridResNet(depth, os, seed003=True)
        dilations = [1, 6, 12, 18] if os == 16 else [1, 12, 24, 36]
        self.aspp1 = SeedASPPModule(2048, 256, dilations[0])
        self.aspp2 = SeedASPPModule(2048, 256, dilations[1])
        self.aspp3 = SeedASPPModule(2048, 256, dilations[2])
        self.aspp4 = SeedASPPModule(2048, 256, dilations[3])
        self.relu = nn.ReLU()
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d((1, 1)), nn.Conv2d(2048, 256, 1, stride=1, bias=False), nn.BatchNorm2d(256), nn.ReLU()
        )
        self.conv1 = nn.Conv2d(1280, 256, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(256)
        self.conv2 = nn.Conv2d(256, 48, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(48)
        self.last_conv = nn.Sequential(
            nn.Conv2d(304, 256, 3, 1, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
            nn.Conv2d(256, 256, 3, 1, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
            nn.Conv2d(256, n_classes, 1, 1),
        )

    def forward(self, input):
        x, low_level_features = self.resnet_features(input)
        x1, x2, x3, x4 = self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x)
        x5 = F.interpolate(self.global_avg_pool(x), size=x4.size()[2:], mode="bilinear", align_corners=True)
        x = self.relu(self.bn1(self.conv1(torch.cat((x1, x2, x3, x4, x5), dim=1))))
        size = (int(math.ceil(input.size()[-2] / 4)), int(math.ceil(input.size()[-1] / 4)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        low_level_features = self.relu(self.bn2(self.conv2(low_level_features)))
        x = self.last_conv(torch.cat((x, low_level_features), dim=1))
        return F.interpolate(x, size=input.size()[2:], mode="bilinear", align_corners=True)


# --- seed 000 -------------------------------------------------------------------------------


class SeedDeepLabMobileNetV2(nn.Module):
    """Seed 000's DeepLabV3+ backbone: `features[:-1]` of the seed MobileNetV2,
    dilated in place (`_nostride_dilate`) for downsample factor 8 or 16;
    returns (low-level = features[:4], high-level = features[4:])."""

    def __init__(self, mobilenetv2, downsample_factor=16):
        super().__init__()
        self.features = mobilenetv2.features[:-1]
        total_idx = len(self.features)
        down_idx = [2, 4, 7, 14]
        if downsample_factor == 8:
            for i in range(down_idx[-2], down_idx[-1]):
                self.features[i].apply(partial(self._nostride_dilate, dilate=2))
            for i in range(down_idx[-1], total_idx):
                self.features[i].apply(partial(self._nostride_dilate, dilate=4))
        elif downsample_factor == 16:
            for i in range(down_idx[-1], total_idx):
                self.features[i].apply(partial(self._nostride_dilate, dilate=2))

    @staticmethod
    def _nostride_dilate(m, dilate):
        if m.__class__.__name__.find("Conv") != -1:
            if m.stride == (2, 2):
                m.stride = (1, 1)
                if m.kernel_size == (3, 3):
                    m.dilation = (dilate // 2, dilate // 2)
                    m.padding = (dilate // 2, dilate // 2)
            elif m.kernel_size == (3, 3):
                m.dilation = (dilate, dilate)
                m.padding = (dilate, dilate)

    def forward(self, x):
        low_level_features = self.features[:4](x)
        return low_level_features, self.features[4:](low_level_features)
