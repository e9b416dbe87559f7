"""tonylins/pytorch-mobilenet-v2's MobileNetV2 (also bubbliiiing's nets/mobilenetv2.py).

`features.0` = conv_bn (3x3 conv, BN, ReLU6), `features.1..17`
InvertedResidual whose `conv` is one flat Sequential (t = 1: dw 0, BN 1,
ReLU6 2, project 3, BN 4; else expand 0, BN 1, ReLU6 2, dw 3, BN 4, ReLU6 5,
project 6, BN 7), `features.18` = conv_1x1_bn, global mean
(`x.mean(3).mean(2)`), `classifier` = [Dropout, Linear]. Channels
`int(c * width_mult)`, padding 1 on every side.
"""

from torch import nn

from keras_lightnets.conversion.references.torchvision.mobilenet_v2 import (
    MOBILENET_V2_SETTING,
)


def conv_bn(inp, oup, stride):
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


def conv_1x1_bn(inp, oup):
    return nn.Sequential(nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden_dim = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        depthwise = [
            nn.Conv2d(hidden_dim, hidden_dim, 3, stride, 1, groups=hidden_dim, bias=False),
            nn.BatchNorm2d(hidden_dim),
            nn.ReLU6(inplace=True),
        ]
        project = [nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        expand = [] if expand_ratio == 1 else [
            nn.Conv2d(inp, hidden_dim, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden_dim), nn.ReLU6(inplace=True),
        ]
        self.conv = nn.Sequential(*expand, *depthwise, *project)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, n_class=1000, width_mult=1.0):
        super().__init__()
        input_channel = int(32 * width_mult)
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        features = [conv_bn(3, input_channel, 2)]
        for t, c, n, s in MOBILENET_V2_SETTING:
            output_channel = int(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                input_channel = output_channel
        features.append(conv_1x1_bn(input_channel, self.last_channel))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, n_class))

    def forward(self, x):
        return self.classifier(self.features(x).mean(3).mean(2))
