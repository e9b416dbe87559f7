"""segmentation_models_pytorch's `DeepLabV3Plus`, in plain torch, for the parity check.

`DeepLabV3Plus(encoder_name, encoder_output_stride, classes, in_channels)` is
`smp.DeepLabV3Plus(encoder_name, encoder_weights=None, ...)` of smp 0.6 with its
defaults (`encoder_depth=5`, `decoder_channels=256`, `decoder_atrous_rates=(12, 24, 36)`,
`decoder_aspp_separable=True`, `upsampling=4`, no activation, no aux head), for the
encoders `"mobilenet_v2"`, `"resnet50"` and `"resnet101"` (torchvision's networks
without their classifiers). Its `state_dict` keys are smp's:

    encoder.features.*                     MobileNetV2
    encoder.conv1 / bn1 / layer1..layer4   ResNet
    decoder.aspp.0.{convs,project}.*       ASPP (separable atrous branches)
    decoder.aspp.1 / .2                    separable 3x3 conv + BN (+ ReLU)
    decoder.block1                         48-channel 1x1 conv on the stride-4 features
    decoder.block2                         separable 3x3 conv + BN + ReLU
    segmentation_head.0                    1x1 conv to `classes`

Every BatchNorm has eps 1e-5. The encoder dilates as smp's `make_dilated` does:
every conv of a stage whose nominal stride exceeds the output stride gets stride 1,
dilation `stage stride // output stride` and padding `(k // 2) * dilation`, the
stage's first block included (torchvision's `replace_stride_with_dilation` leaves
that block at the previous rate). Checked bit-identical (max |Δ| = 0) against smp
0.6.0 for both encoders and output strides.
"""

import torch
from torch import nn

# torchvision's MobileNetV2 table: (expansion t, channels c, repeats n, stride s)
MOBILENET_V2 = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
RESNET_DEPTHS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}


def stage_dilation(stage_stride, output_stride):
    return max(1, stage_stride // output_stride)


def conv(in_channels, out_channels, kernel_size, stride=1, dilation=1, groups=1, bias=False):
    """A conv with smp's padding, `(k // 2) * dilation` on every side."""
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=(kernel_size // 2) * dilation,
        dilation=dilation, groups=groups, bias=bias,
    )


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias) → BatchNorm → ReLU6."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1, groups=1):
        super().__init__(
            conv(in_channels, out_channels, kernel_size, stride, dilation, groups),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(),
        )


class MobileNetV2Block(nn.Module):
    """Inverted residual: [1x1 expand] → 3x3 depthwise → 1x1 linear projection.

    In a dilated stage (`dilation > 1`) the depthwise conv has stride 1. The
    residual is added when the nominal stride is 1 and the channels match.
    """

    def __init__(self, in_channels, out_channels, stride, expansion, dilation=1):
        super().__init__()
        hidden = int(round(in_channels * expansion))
        layers = [ConvBNReLU6(in_channels, hidden, 1, dilation=dilation)] if expansion != 1 else []
        layers += [
            ConvBNReLU6(hidden, hidden, 3, stride=1 if dilation > 1 else stride, dilation=dilation, groups=hidden),
            conv(hidden, out_channels, 1, dilation=dilation),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.use_residual else y


class MobileNetV2Encoder(nn.Module):
    """torchvision's MobileNetV2 `features` (19 modules) returning 6 feature maps:
    the input and `features[1, 3, 6, 13, 18]` (16, 24, 32, 96, 1280 channels at
    nominal strides 2 to 32). Dilated stages: stride 16 = `features[7:14]`,
    stride 32 = `features[14:]`."""

    out_channels = (3, 16, 24, 32, 96, 1280)
    taps = (1, 3, 6, 13, 18)

    def __init__(self, in_channels=3, output_stride=32):
        super().__init__()
        layers = [ConvBNReLU6(in_channels, 32, 3, stride=2)]
        channels, stride = 32, 2
        for t, c, n, s in MOBILENET_V2:
            for i in range(n):
                block_stride = s if i == 0 else 1
                stride *= block_stride
                layers.append(MobileNetV2Block(channels, c, block_stride, t, stage_dilation(stride, output_stride)))
                channels = c
        layers.append(ConvBNReLU6(channels, 1280, 1, dilation=stage_dilation(stride, output_stride)))
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        features = [x]
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                features.append(x)
        return features


class Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck (v1.5: the stride on the 3x3 conv), 1x1 → 3x3 →
    1x1 (x4) with a projection shortcut; in a dilated stage every conv has stride 1
    and the stage's dilation."""

    expansion = 4

    def __init__(self, in_channels, planes, stride=1, dilation=1):
        super().__init__()
        if dilation > 1:
            stride = 1
        out_channels = planes * self.expansion
        self.conv1 = conv(in_channels, planes, 1, dilation=dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv(planes, planes, 3, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv(planes, out_channels, 1, dilation=dilation)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                conv(in_channels, out_channels, 1, stride, dilation), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


class ResNetEncoder(nn.Module):
    """torchvision's ResNet-50/101 trunk returning 6 feature maps: the input,
    relu(bn1(conv1)), layer1..layer4 (64, 256, 512, 1024, 2048 channels at nominal
    strides 2 to 32). Dilated stages: stride 16 = `layer3`, stride 32 = `layer4`."""

    out_channels = (3, 64, 256, 512, 1024, 2048)

    def __init__(self, depths, in_channels=3, output_stride=32):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), depths, strict=True)):
            stride = 1 if index == 0 else 2
            dilation = stage_dilation(4 * 2**index, output_stride)
            layer = []
            for block in range(blocks):
                layer.append(Bottleneck(channels, planes, stride if block == 0 else 1, dilation))
                channels = planes * Bottleneck.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))

    def forward(self, x):
        features = [x]
        x = self.relu(self.bn1(self.conv1(x)))
        features.append(x)
        x = self.maxpool(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)
        return features


class SeparableConv2d(nn.Sequential):
    """Depthwise kxk conv (no bias, padding `(k // 2) * dilation`) → pointwise 1x1 conv (no bias)."""

    def __init__(self, in_channels, out_channels, kernel_size=3, dilation=1):
        super().__init__(
            conv(in_channels, in_channels, kernel_size, dilation=dilation, groups=in_channels),
            conv(in_channels, out_channels, 1),
        )


class ASPPPooling(nn.Sequential):
    """Global average → 1x1 conv → BN → ReLU, resized back (from 1x1: a broadcast)."""

    def __init__(self, in_channels, out_channels):
        super().__init__(
            nn.AdaptiveAvgPool2d(1), conv(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels), nn.ReLU()
        )

    def forward(self, x):
        return nn.functional.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Separable ASPP: [1x1, separable 3x3 at each rate, image pooling], each with BN +
    ReLU, concatenated, then `project` (1x1 conv, BN, ReLU, Dropout 0.5)."""

    def __init__(self, in_channels, out_channels=256, rates=(12, 24, 36)):
        super().__init__()
        def with_bn_relu(module):
            return nn.Sequential(module, nn.BatchNorm2d(out_channels), nn.ReLU())

        branches = [with_bn_relu(conv(in_channels, out_channels, 1))]
        branches += [with_bn_relu(SeparableConv2d(in_channels, out_channels, 3, rate)) for rate in rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            conv(len(branches) * out_channels, out_channels, 1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Dropout(0.5),
        )

    def forward(self, x):
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabV3PlusDecoder(nn.Module):
    """`aspp` (ASPP, separable 3x3, BN, ReLU) on the deepest features, `up` (bilinear,
    align_corners=True) by 4 (output stride 16) or 2 (8) to stride 4, concatenated
    [aspp, block1(stride-4 features)], then `block2` (separable 3x3, BN, ReLU)."""

    def __init__(self, encoder_channels, output_stride=16, out_channels=256, rates=(12, 24, 36)):
        super().__init__()
        self.aspp = nn.Sequential(
            ASPP(encoder_channels[-1], out_channels, rates),
            SeparableConv2d(out_channels, out_channels, 3),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )
        self.up = nn.Upsample(scale_factor=4 if output_stride == 16 else 2, mode="bilinear", align_corners=True)
        self.block1 = nn.Sequential(conv(encoder_channels[2], 48, 1), nn.BatchNorm2d(48), nn.ReLU())
        self.block2 = nn.Sequential(
            SeparableConv2d(48 + out_channels, out_channels, 3), nn.BatchNorm2d(out_channels), nn.ReLU()
        )

    def forward(self, features):
        x = self.up(self.aspp(features[-1]))
        return self.block2(torch.cat([x, self.block1(features[2])], dim=1))


class DeepLabV3Plus(nn.Module):
    """smp's `DeepLabV3Plus` (encoder depth 5, no activation, no aux head).

    Args:
        encoder_name: `"mobilenet_v2"`, `"resnet50"` or `"resnet101"`.
        encoder_output_stride: 16 or 8.
        classes: output channels.
        in_channels: input channels.

    Input `(N, in_channels, H, W)` with H and W divisible by the output stride
    (smp refuses other sizes); output `(N, classes, H, W)` logits: the 1x1
    `segmentation_head.0` at stride 4, then bilinear x4 with align_corners=True.
    """

    def __init__(self, encoder_name="resnet50", encoder_output_stride=16, classes=1, in_channels=3):
        super().__init__()
        if encoder_output_stride not in (8, 16):
            raise ValueError("encoder_output_stride must be 8 or 16")
        if encoder_name == "mobilenet_v2":
            self.encoder = MobileNetV2Encoder(in_channels, encoder_output_stride)
        elif encoder_name in RESNET_DEPTHS:
            self.encoder = ResNetEncoder(RESNET_DEPTHS[encoder_name], in_channels, encoder_output_stride)
        else:
            raise ValueError(f"unsupported encoder {encoder_name!r}")
        self.output_stride = encoder_output_stride
        self.decoder = DeepLabV3PlusDecoder(self.encoder.out_channels, encoder_output_stride)
        self.segmentation_head = nn.Sequential(
            nn.Conv2d(256, classes, 1),
            nn.Upsample(scale_factor=4, mode="bilinear", align_corners=True),
            nn.Identity(),
        )

    def forward(self, x):
        height, width = x.shape[-2:]
        if height % self.output_stride or width % self.output_stride:
            raise ValueError(f"input size {height}x{width} is not divisible by {self.output_stride}")
        return self.segmentation_head(self.decoder(self.encoder(x)))
