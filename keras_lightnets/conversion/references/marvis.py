"""marvis/pytorch-mobilenet's MobileNet (v1).

`model` is one Sequential: `model.0` = conv_bn (3x3/2 conv, BN, ReLU),
`model.1..13` = conv_dw (3x3 depthwise 0, BN 1, ReLU 2, 1x1 pointwise 3,
BN 4, ReLU 5), `model.14` = AvgPool2d(7); then `fc`. Plain ReLU.
`depth_multiplier` (depthwise convs give `in * depth_multiplier`
channels) and `width_mult` (channels `int(c * width_mult)`) default to the
original's 1 and 1.0 and keep its key names.
"""

from torch import nn

# (pointwise output channels, stride) of conv_dw 1..13, at width 1.0
CONV_DW = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)


class MobileNet(nn.Module):
    def __init__(self, num_classes=1000, depth_multiplier=1, width_mult=1.0):
        super().__init__()
        m = depth_multiplier

        def conv_bn(dim_in, dim_out, stride):
            return nn.Sequential(
                nn.Conv2d(dim_in, dim_out, 3, stride, 1, bias=False), nn.BatchNorm2d(dim_out), nn.ReLU(inplace=True)
            )

        def conv_dw(dim_in, dim_out, stride):
            return nn.Sequential(
                nn.Conv2d(dim_in, dim_in * m, 3, stride, 1, groups=dim_in, bias=False),
                nn.BatchNorm2d(dim_in * m),
                nn.ReLU(inplace=True),
                nn.Conv2d(dim_in * m, dim_out, 1, 1, 0, bias=False),
                nn.BatchNorm2d(dim_out),
                nn.ReLU(inplace=True),
            )

        channels = int(32 * width_mult)
        layers = [conv_bn(3, channels, 2)]
        for out, stride in CONV_DW:
            layers.append(conv_dw(channels, int(out * width_mult), stride))
            channels = int(out * width_mult)
        self.last_channel = channels
        self.model = nn.Sequential(*layers, nn.AvgPool2d(7))
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(self.model(x).view(-1, self.last_channel))
