"""PyTorch reference networks, written after the code whose checkpoints we convert.

Each class keeps the module structure (hence the state_dict key names),
padding and forward pass of its source:
- `TorchvisionMobileNetV2`: torchvision.models.mobilenet_v2 (`features.N.conv...`,
  `Conv2dNormActivation` = Sequential(conv, bn, relu6), `classifier.1`).
- `SeedMobileNetV2`: the seeds' MobileNetV2 (`conv_bn`, `conv_1x1_bn`,
  `InvertedResidual.conv` as one flat Sequential, `x.mean(3).mean(2)`).
- `SeedLayerMobileNetV2`: seed 002 (`c1`, `bottleneck1..7.stack.N.exp/depthwise/
  pointwise.layers2.M`, `c2`, `c3` a 1x1 conv classifier with bias).
- `SeedMobileNetV1`: seed 001 (`model.N.M` Sequential with ReLU, `fc`).

torchvision itself does not import beside torch 2.13 here, so these are
written out.
"""

import torch
from torch import nn

V2_SETTING = [
    # t, c, n, s
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


def tv_make_divisible(v, divisor=8, min_value=None):
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class Conv2dNormActivation(nn.Sequential):
    """torchvision.ops.misc.Conv2dNormActivation with BatchNorm2d and ReLU6."""

    def __init__(self, inp, oup, kernel_size=3, stride=1, groups=1, activation=True):
        padding = (kernel_size - 1) // 2
        layers = [
            nn.Conv2d(inp, oup, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(oup),
        ]
        if activation:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class TorchvisionInvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(Conv2dNormActivation(inp, hidden_dim, kernel_size=1))
        layers.extend(
            [
                Conv2dNormActivation(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),
                nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
                nn.BatchNorm2d(oup),
            ]
        )
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class TorchvisionMobileNetV2(nn.Module):
    def __init__(self, num_classes=1000, width_mult=1.0, dropout=0.2):
        super().__init__()
        input_channel = tv_make_divisible(32 * width_mult)
        self.last_channel = tv_make_divisible(1280 * max(1.0, width_mult))
        features = [Conv2dNormActivation(3, input_channel, stride=2)]
        for t, c, n, s in V2_SETTING:
            output_channel = tv_make_divisible(c * width_mult)
            for i in range(n):
                features.append(
                    TorchvisionInvertedResidual(input_channel, output_channel, s if i == 0 else 1, t)
                )
                input_channel = output_channel
        features.append(Conv2dNormActivation(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(torch.flatten(x, 1))


def conv_bn(inp, oup, stride):
    return nn.Sequential(
        nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU6(inplace=True)
    )


def conv_1x1_bn(inp, oup):
    return nn.Sequential(
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.ReLU6(inplace=True)
    )


class SeedInvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden_dim = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        if expand_ratio == 1:
            self.conv = nn.Sequential(
                nn.Conv2d(hidden_dim, hidden_dim, 3, stride, 1, groups=hidden_dim, bias=False),
                nn.BatchNorm2d(hidden_dim),
                nn.ReLU6(inplace=True),
                nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
                nn.BatchNorm2d(oup),
            )
        else:
            self.conv = nn.Sequential(
                nn.Conv2d(inp, hidden_dim, 1, 1, 0, bias=False),
                nn.BatchNorm2d(hidden_dim),
                nn.ReLU6(inplace=True),
                nn.Conv2d(hidden_dim, hidden_dim, 3, stride, 1, groups=hidden_dim, bias=False),
                nn.BatchNorm2d(hidden_dim),
                nn.ReLU6(inplace=True),
                nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
                nn.BatchNorm2d(oup),
            )

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class SeedMobileNetV2(nn.Module):
    def __init__(self, n_class=1000, width_mult=1.0):
        super().__init__()
        input_channel = int(32 * width_mult)
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        features = [conv_bn(3, input_channel, 2)]
        for t, c, n, s in V2_SETTING:
            output_channel = int(c * width_mult)
            for i in range(n):
                features.append(
                    SeedInvertedResidual(input_channel, output_channel, s if i == 0 else 1, t)
                )
                input_channel = output_channel
        features.append(conv_1x1_bn(input_channel, self.last_channel))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, n_class))

    def forward(self, x):
        x = self.features(x)
        x = x.mean(3).mean(2)
        return self.classifier(x)


class ConvBNRelu(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=0, groups=1, activation=True):
        super().__init__()
        if padding == "same":
            padding = (kernel_size - 1) // 2
        self.layers = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        ]
        self.layers.append(nn.BatchNorm2d(out_channels))
        if activation:
            self.layers.append(nn.ReLU6(inplace=True))
        self.layers2 = nn.Sequential(*self.layers)

    def forward(self, x):
        return self.layers2(x)


class InvertedResidualBlock(nn.Module):
    def __init__(self, in_channels, t, c, s):
        super().__init__()
        self.exp = ConvBNRelu(in_channels, in_channels * t, kernel_size=1, stride=1)
        self.depthwise = ConvBNRelu(
            in_channels * t, in_channels * t, kernel_size=3, stride=s, padding=1, groups=in_channels * t
        )
        self.pointwise = ConvBNRelu(in_channels * t, c, kernel_size=1, activation=False)
        self.is_res = in_channels == c and s == 1

    def forward(self, x):
        y = self.pointwise(self.depthwise(self.exp(x)))
        return x + y if self.is_res else y


class BottleneckLayer(nn.Module):
    def __init__(self, in_channels, t, c, n, s):
        super().__init__()
        self.stack = nn.Sequential(
            InvertedResidualBlock(in_channels, t, c, s),
            *(InvertedResidualBlock(c, t, c, 1) for _ in range(n - 1)),
        )

    def forward(self, x):
        return self.stack(x)


class SeedLayerMobileNetV2(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.c1 = ConvBNRelu(3, 32, kernel_size=3, stride=2, padding=1)
        self.bottleneck1 = BottleneckLayer(32, 1, 16, 1, 1)
        self.bottleneck2 = BottleneckLayer(16, 6, 24, 2, 2)
        self.bottleneck3 = BottleneckLayer(24, 6, 32, 3, 2)
        self.bottleneck4 = BottleneckLayer(32, 6, 64, 4, 2)
        self.bottleneck5 = BottleneckLayer(64, 6, 96, 3, 1)
        self.bottleneck6 = BottleneckLayer(96, 6, 160, 3, 2)
        self.bottleneck7 = BottleneckLayer(160, 6, 320, 1, 1)
        self.c2 = ConvBNRelu(320, 1280, 1)
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.c3 = nn.Conv2d(1280, num_classes, kernel_size=1)

    def forward(self, x):
        x = self.c1(x)
        for i in range(1, 8):
            x = getattr(self, f"bottleneck{i}")(x)
        x = self.c3(self.avg_pool(self.c2(x)))
        return x.view(x.size(0), -1)


class SeedMobileNetV1(nn.Module):
    """Seed 001's MobileNet v1; `depth_multiplier` (the depthwise convs give
    `dim_in * depth_multiplier` channels, as Keras' `depth_multiplier`) and
    `width_mult` (channels `int(c * width_mult)`) default to the seed's 1 and
    1.0 and leave the key names unchanged."""

    def __init__(self, num_classes=1000, depth_multiplier=1, width_mult=1.0):
        super().__init__()
        m = depth_multiplier

        def conv_bn_v1(dim_in, dim_out, stride):
            return nn.Sequential(
                nn.Conv2d(dim_in, dim_out, 3, stride, 1, bias=False),
                nn.BatchNorm2d(dim_out),
                nn.ReLU(inplace=True),
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

        c = [int(n * width_mult) for n in (32, 64, 128, 256, 512, 1024)]
        self.last_channel = c[5]
        self.model = nn.Sequential(
            conv_bn_v1(3, c[0], 2),
            conv_dw(c[0], c[1], 1),
            conv_dw(c[1], c[2], 2),
            conv_dw(c[2], c[2], 1),
            conv_dw(c[2], c[3], 2),
            conv_dw(c[3], c[3], 1),
            conv_dw(c[3], c[4], 2),
            conv_dw(c[4], c[4], 1),
            conv_dw(c[4], c[4], 1),
            conv_dw(c[4], c[4], 1),
            conv_dw(c[4], c[4], 1),
            conv_dw(c[4], c[4], 1),
            conv_dw(c[4], c[5], 2),
            conv_dw(c[5], c[5], 1),
            nn.AvgPool2d(7),
        )
        self.fc = nn.Linear(c[5], num_classes)

    def forward(self, x):
        x = self.model(x)
        x = x.view(-1, self.last_channel)
        return self.fc(x)


def _seed_v1_holding(state_dict):
    """A SeedMobileNetV1 of the state_dict's shape, holding it, in eval mode."""
    stem = state_dict["model.0.0.weight"].shape[0]
    model = SeedMobileNetV1(
        num_classes=state_dict["fc.weight"].shape[0],
        depth_multiplier=state_dict["model.1.0.weight"].shape[0] // stem,
        width_mult=stem / 32,
    )
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state_dict.items()})
    return model.eval()


def seed_v1_reference(spec, builder_kwargs, tensors):
    """Parity reference (`--reference tests.references.mobilenet:seed_v1_reference`):
    the seed's MobileNet v1 holding the checkpoint's own tensors."""
    return _seed_v1_holding({k: torch.from_numpy(v.copy()) for k, v in tensors.items()})


ORIGINAL_CHECKPOINT_ENV = "KL_TEST_ORIGINAL_CHECKPOINT"


def original_seed_v1_reference(spec, builder_kwargs, tensors):
    """Parity reference that ignores the converted checkpoint and holds the
    weights of the file named by $KL_TEST_ORIGINAL_CHECKPOINT instead (the
    unperturbed original), so a tampered checkpoint meets the weights it
    should have had."""
    import os

    state_dict = torch.load(os.environ[ORIGINAL_CHECKPOINT_ENV], weights_only=True)
    return _seed_v1_holding(state_dict)
