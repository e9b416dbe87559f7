"""The layer-by-layer MobileNetV2 whose modules are `c1`, `bottleneck1..7`, `c2`, `c3`.

Each conv is a `ConvBNRelu` whose Sequential is `layers2` (conv 0, BN 1,
ReLU6 2 unless linear); `bottleneckN.stack.M` is an `InvertedResidualBlock`
of `exp` (1x1, also when t = 1), `depthwise` (3x3, padding 1) and
`pointwise` (1x1, linear); `c3` is a 1x1 conv classifier with bias after a
global average pool. Width 1.0 only (its channels are written out).
"""

from torch import nn


class ConvBNRelu(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=0, groups=1, activation=True):
        super().__init__()
        layers = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if activation:
            layers.append(nn.ReLU6(inplace=True))
        self.layers2 = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers2(x)


class InvertedResidualBlock(nn.Module):
    def __init__(self, in_channels, t, c, s):
        super().__init__()
        hidden = in_channels * t
        self.exp = ConvBNRelu(in_channels, hidden, kernel_size=1)
        self.depthwise = ConvBNRelu(hidden, hidden, kernel_size=3, stride=s, padding=1, groups=hidden)
        self.pointwise = ConvBNRelu(hidden, c, kernel_size=1, activation=False)
        self.is_res = in_channels == c and s == 1

    def forward(self, x):
        y = self.pointwise(self.depthwise(self.exp(x)))
        return x + y if self.is_res else y


class BottleneckLayer(nn.Module):
    def __init__(self, in_channels, t, c, n, s):
        super().__init__()
        self.stack = nn.Sequential(
            InvertedResidualBlock(in_channels, t, c, s), *(InvertedResidualBlock(c, t, c, 1) for _ in range(n - 1))
        )

    def forward(self, x):
        return self.stack(x)


# (input channels, t, c, n, s) of bottleneck1..7
BOTTLENECKS = (
    (32, 1, 16, 1, 1), (16, 6, 24, 2, 2), (24, 6, 32, 3, 2), (32, 6, 64, 4, 2),
    (64, 6, 96, 3, 1), (96, 6, 160, 3, 2), (160, 6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.c1 = ConvBNRelu(3, 32, kernel_size=3, stride=2, padding=1)
        for index, row in enumerate(BOTTLENECKS, start=1):
            setattr(self, f"bottleneck{index}", BottleneckLayer(*row))
        self.c2 = ConvBNRelu(320, 1280, 1)
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.c3 = nn.Conv2d(1280, num_classes, kernel_size=1)

    def forward(self, x):
        x = self.c1(x)
        for index in range(1, len(BOTTLENECKS) + 1):
            x = getattr(self, f"bottleneck{index}")(x)
        x = self.c3(self.avg_pool(self.c2(x)))
        return x.view(x.size(0), -1)
