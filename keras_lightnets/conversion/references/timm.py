"""timm's MobileNet v1/V2, EfficientNet-Lite and MobileNetV3, in plain torch.

Written from timm 1.0's `_efficientnet_builder.py`, `_efficientnet_blocks.py`,
`efficientnet.py` and `mobilenetv3.py`, with timm's state_dict keys (a timm
checkpoint loads with `strict=True`); proven bit-identical to timm 1.0.31's
forward pass for every model of `keras_lightnets.conversion.namings.timm_models.TIMM_MODELS`:

    conv_stem, bn1                       conv 3x3/2, BN + act
    blocks.{stage}.{index}               ds/dsa: conv_dw, bn1, [se], conv_pw, bn2
                                         ir: conv_pw, bn1, conv_dw, bn2, [se], conv_pwl, bn3
                                         cn: conv, bn1
    conv_head, bn2                       "efficientnet" head: conv 1x1 + BN + act on the map
    conv_head (bias)                     "mobilenetv3" head: after the pooling, act, no BN
    classifier                           Linear

The widths come from `timm_models.resolve_blocks` (timm's arithmetic as data).
`tf_` models pad strided convs as TensorFlow's "SAME" (computed from the
input size at every call) and use BN eps 1e-3; the others pad `k // 2` and
use eps 1e-5.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from keras_lightnets.conversion.namings import timm_models

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hard_swish": nn.Hardswish}


class Conv2dSame(nn.Conv2d):
    """`nn.Conv2d` with TensorFlow "SAME" padding: `max((ceil(n / s) - 1) * s + k - n, 0)`
    in total per axis, the smaller half at the top/left."""

    def forward(self, x):
        pads = []
        for size, kernel, stride in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, 1, self.groups)


def conv(in_channels, out_channels, kernel_size, tf, stride=1, groups=1, bias=False):
    """timm's `create_conv2d`: symmetric `k // 2` padding, or for a strided
    conv of a `tf_` model, run-time TF "SAME" padding (stride 1 is symmetric in both)."""
    if tf and stride > 1:
        return Conv2dSame(in_channels, out_channels, kernel_size, stride, 0, groups=groups, bias=bias)
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias)


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm then an activation (`act=None`: none), with BatchNorm's own keys."""

    def __init__(self, channels, tf, act=None):
        super().__init__(channels, eps=1e-3 if tf else 1e-5)
        self.act = ACTIVATIONS[act]() if act else nn.Identity()

    def forward(self, x):
        return self.act(super().forward(x))


class SqueezeExcite(nn.Module):
    """MobileNetV3's squeeze-excite: mean, 1x1 reduce (bias), ReLU, 1x1 expand (bias), hard sigmoid gate."""

    def __init__(self, channels, squeeze):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, squeeze, 1)
        self.act1 = nn.ReLU()
        self.conv_expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        scale = self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True)))
        return x * self.gate(self.conv_expand(scale))


class DepthwiseSeparable(nn.Module):
    """`ds`/`dsa`: conv_dw, bn1 (+act), [se], conv_pw, bn2 (+act for `dsa`), residual if `has_skip`."""

    def __init__(self, block, tf):
        super().__init__()
        channels = block.in_channels
        self.has_skip = block.has_skip
        self.conv_dw = conv(channels, channels, block.kernel_size, tf, block.stride, groups=channels)
        self.bn1 = BatchNormAct2d(channels, tf, block.act)
        self.se = SqueezeExcite(channels, block.se) if block.se else nn.Identity()
        self.conv_pw = conv(channels, block.out_channels, 1, tf)
        self.bn2 = BatchNormAct2d(block.out_channels, tf, block.act if block.kind == "dsa" else None)

    def forward(self, x):
        y = self.bn2(self.conv_pw(self.se(self.bn1(self.conv_dw(x)))))
        return x + y if self.has_skip else y


class InvertedResidual(nn.Module):
    """`ir`: conv_pw, bn1 (+act), conv_dw, bn2 (+act), [se], conv_pwl, bn3, residual if `has_skip`."""

    def __init__(self, block, tf):
        super().__init__()
        mid = block.mid_channels
        self.has_skip = block.has_skip
        self.conv_pw = conv(block.in_channels, mid, 1, tf)
        self.bn1 = BatchNormAct2d(mid, tf, block.act)
        self.conv_dw = conv(mid, mid, block.kernel_size, tf, block.stride, groups=mid)
        self.bn2 = BatchNormAct2d(mid, tf, block.act)
        self.se = SqueezeExcite(mid, block.se) if block.se else nn.Identity()
        self.conv_pwl = conv(mid, block.out_channels, 1, tf)
        self.bn3 = BatchNormAct2d(block.out_channels, tf)

    def forward(self, x):
        y = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        y = self.bn3(self.conv_pwl(self.se(y)))
        return x + y if self.has_skip else y


class ConvBnAct(nn.Module):
    """`cn`: conv, bn1 (+act)."""

    def __init__(self, block, tf):
        super().__init__()
        self.conv = conv(block.in_channels, block.out_channels, block.kernel_size, tf, block.stride)
        self.bn1 = BatchNormAct2d(block.out_channels, tf, block.act)

    def forward(self, x):
        return self.bn1(self.conv(x))


BLOCKS = {"ds": DepthwiseSeparable, "dsa": DepthwiseSeparable, "ir": InvertedResidual, "cn": ConvBnAct}


class TimmMobileNet(nn.Module):
    """A timm EfficientNet-builder network (`timm_models.TIMM_MODELS[name]`).

    Args:
        name: the timm model name.
        num_classes: classifier outputs (0: the pooled features).
    """

    def __init__(self, name, num_classes=1000):
        super().__init__()
        config = timm_models.TIMM_MODELS[name]
        stem, blocks, head = timm_models.resolve_blocks(config)
        tf, self.head_kind = config.tf, config.head_kind
        self.conv_stem = conv(3, stem, 3, tf, stride=2)
        self.bn1 = BatchNormAct2d(stem, tf, config.act)
        stages = [[] for _ in range(blocks[-1].stage + 1)]
        for block in blocks:
            stages[block.stage].append(BLOCKS[block.kind](block, tf))
        self.blocks = nn.Sequential(*(nn.Sequential(*stage) for stage in stages))
        features = blocks[-1].out_channels
        if self.head_kind == "mobilenetv3":
            self.conv_head = nn.Conv2d(features, head, 1)
            self.act2 = ACTIVATIONS[config.act]()
        elif head:
            self.conv_head = conv(features, head, 1, tf)
            self.bn2 = BatchNormAct2d(head, tf, config.act)
        self.classifier = nn.Linear(head or features, num_classes) if num_classes else nn.Identity()

    def forward(self, x):
        x = self.blocks(self.bn1(self.conv_stem(x)))
        if self.head_kind == "mobilenetv3":
            x = self.act2(self.conv_head(x.mean((2, 3), keepdim=True))).flatten(1)
        else:
            if hasattr(self, "conv_head"):
                x = self.bn2(self.conv_head(x))
            x = x.mean((2, 3))
        return self.classifier(x)


def build(name, num_classes=1000):
    """timm's model `name` with `num_classes` outputs: timm's own
    (`timm.create_model`, random weights) when timm is importable, else `TimmMobileNet`."""
    try:
        import timm
    except ImportError:
        return TimmMobileNet(name, num_classes)
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


def load(name, tensors):
    """timm's model `name` holding the checkpoint `tensors` (`{key: numpy array}`), in eval mode."""
    model = build(name, timm_models.checkpoint_classes(tensors))
    result = model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()}, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ValueError(f"timm's {name} does not take this state_dict ({(missing + result.unexpected_keys)[0]})")
    return model.eval()
