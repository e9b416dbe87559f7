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

import numpy as np
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
    def __init__(self, num_classes=1000):
        super().__init__()

        def conv_bn_v1(dim_in, dim_out, stride):
            return nn.Sequential(
                nn.Conv2d(dim_in, dim_out, 3, stride, 1, bias=False),
                nn.BatchNorm2d(dim_out),
                nn.ReLU(inplace=True),
            )

        def conv_dw(dim_in, dim_out, stride):
            return nn.Sequential(
                nn.Conv2d(dim_in, dim_in, 3, stride, 1, groups=dim_in, bias=False),
                nn.BatchNorm2d(dim_in),
                nn.ReLU(inplace=True),
                nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False),
                nn.BatchNorm2d(dim_out),
                nn.ReLU(inplace=True),
            )

        self.model = nn.Sequential(
            conv_bn_v1(3, 32, 2),
            conv_dw(32, 64, 1),
            conv_dw(64, 128, 2),
            conv_dw(128, 128, 1),
            conv_dw(128, 256, 2),
            conv_dw(256, 256, 1),
            conv_dw(256, 512, 2),
            conv_dw(512, 512, 1),
            conv_dw(512, 512, 1),
            conv_dw(512, 512, 1),
            conv_dw(512, 512, 1),
            conv_dw(512, 512, 1),
            conv_dw(512, 1024, 2),
            conv_dw(1024, 1024, 1),
            nn.AvgPool2d(7),
        )
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = self.model(x)
        x = x.view(-1, 1024)
        return self.fc(x)


@torch.no_grad()
def randomize_torch_model(model, calibration_images, seed=0):
    """Random weights with data-calibrated, then perturbed, BN statistics.

    Convolutions get He-normal weights; BN gets random gamma/beta; the
    running statistics are first measured on `calibration_images` (so every
    layer's output has roughly unit spread and no error is washed out or
    saturated), then perturbed per channel (variance x U[0.6, 1.6], mean
    shifted) so that a swapped or default statistic changes the logits.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.normal_(0, (2.0 / fan_in) ** 0.5, generator=gen)
            if module.bias is not None:
                module.bias.normal_(0, 0.5, generator=gen)
        elif isinstance(module, nn.Linear):
            module.weight.normal_(0, (2.0 / module.in_features) ** 0.5, generator=gen)
            if module.bias is not None:
                module.bias.normal_(0, 0.5, generator=gen)
        elif isinstance(module, nn.BatchNorm2d):
            module.weight.uniform_(0.5, 1.5, generator=gen)
            module.bias.normal_(0, 0.3, generator=gen)
            module.reset_running_stats()
            module.momentum = None  # cumulative average: stats of this one batch
    model.train()
    model(torch.as_tensor(calibration_images))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            std = module.running_var.sqrt()
            module.running_mean.add_(0.2 * std * torch.randn(n, generator=gen))
            module.running_var.mul_(torch.empty(n).uniform_(0.6, 1.6, generator=gen))
            module.momentum = 0.1
    return model.eval()


def torch_forward(model, images_nhwc):
    """Runs `model` on NHWC float32 images; returns numpy logits."""
    x = torch.as_tensor(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        return model.eval()(x).numpy()


def nchw(images_nhwc):
    return np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2))
