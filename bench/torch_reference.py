"""PyTorch networks to time against: VainF's DeepLabV3+ MobileNetV2 and
torchvision's MobileNetV2, layer for layer (same convolutions, paddings,
dilations and resizes as the code the checkpoints come from). For timing only:
random weights; the tests hold the parity references."""

import torch
import torch.nn.functional as F
from torch import nn

# expansion t, channels c, repeats n, stride s (MobileNetV2 paper, Table 2)
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def conv_bn(cin, cout, kernel_size=1, stride=1, padding=0, dilation=1, groups=1, activation=nn.ReLU6):
    layers = [nn.Conv2d(cin, cout, kernel_size, stride, padding, dilation, groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, activation()) if activation else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """torchvision's block (`pad_input=False`, padding 1·dilation inside the
    depthwise conv) or VainF's (`fixed_padding` of the block input)."""

    def __init__(self, cin, cout, stride, dilation, expansion, pad_input):
        super().__init__()
        hidden = round(cin * expansion)
        self.residual = stride == 1 and cin == cout
        self.pad = (dilation,) * 4 if pad_input else None
        inner = 0 if pad_input else dilation
        layers = [conv_bn(cin, hidden)] if expansion != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, inner, dilation, hidden), conv_bn(hidden, cout, activation=None)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        y = self.conv(F.pad(x, self.pad) if self.pad else x)
        return x + y if self.residual else y


def mobilenet_v2_features(output_stride=None, pad_input=False):
    """MobileNetV2's 18 feature blocks (stem + 17), dilated after `output_stride`."""
    features = [conv_bn(3, 32, 3, 2, 0 if pad_input else 1)]
    cin, current_stride, dilation = 32, 2, 1
    for t, c, n, s in SETTINGS:
        previous_dilation = dilation
        if output_stride and current_stride == output_stride:
            stride, dilation = 1, dilation * s
        else:
            stride, current_stride = s, current_stride * s
        for i in range(n):
            features.append(InvertedResidual(cin, c, stride if i == 0 else 1,
                                             previous_dilation if i == 0 else dilation, t, pad_input))
            cin = c
    return features


class TorchvisionMobileNetV2(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        self.features = nn.Sequential(*mobilenet_v2_features(), conv_bn(320, 1280))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


class ASPP(nn.Module):
    def __init__(self, cin, rates=(6, 12, 18), filters=256):
        super().__init__()
        self.convs = nn.ModuleList(
            [conv_bn(cin, filters, activation=nn.ReLU)]
            + [conv_bn(cin, filters, 3, 1, r, r, activation=nn.ReLU) for r in rates]
        )
        self.pool = conv_bn(cin, filters, activation=nn.ReLU)
        self.project = nn.Sequential(conv_bn(5 * filters, filters, activation=nn.ReLU), nn.Dropout(0.1))

    def forward(self, x):
        pooled = self.pool(F.adaptive_avg_pool2d(x, 1))
        pooled = F.interpolate(pooled, size=x.shape[2:], mode="bilinear", align_corners=False)
        return self.project(torch.cat([conv(x) for conv in self.convs] + [pooled], 1))


class VainFDeepLabV3PlusMobileNetV2(nn.Module):
    """VainF/DeepLabV3Plus-Pytorch `deeplabv3plus_mobilenet` (not separable)."""

    def __init__(self, classes=21, output_stride=16):
        super().__init__()
        features = mobilenet_v2_features(output_stride, pad_input=True)
        self.low_level = nn.Sequential(*features[:4])
        self.high_level = nn.Sequential(*features[4:])
        self.aspp = ASPP(320, (6, 12, 18) if output_stride == 16 else (12, 24, 36))
        self.low_project = conv_bn(24, 48, activation=nn.ReLU)
        self.classifier = nn.Sequential(conv_bn(304, 256, 3, 1, 1, activation=nn.ReLU), nn.Conv2d(256, classes, 1))

    def forward(self, x):
        low = self.low_level(x)
        out = self.aspp(self.high_level(low))
        low = self.low_project(low)
        out = F.interpolate(out, size=low.shape[2:], mode="bilinear", align_corners=False)
        out = self.classifier(torch.cat([low, out], 1))
        return F.interpolate(out, size=x.shape[2:], mode="bilinear", align_corners=False)
