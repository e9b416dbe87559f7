"""torchvision's `lraspp_mobilenet_v3_large` and `deeplabv3_mobilenet_v3_large`, in plain torch.

Written from torchvision 0.29's `segmentation/lraspp.py`, `deeplabv3.py` and
`fcn.py`, with their state_dict keys:

    backbone.0 .. backbone.16   `features` of a dilated MobileNetV3-Large
    classifier.*                the segmentation head
    aux_classifier.*            DeepLabV3's FCN head on the stride-8 features

Backbone BatchNorms have eps 1e-3, the heads' 1e-5. The logits are resized
to the input size (bilinear, align_corners=False); `forward` returns that
tensor (torchvision's `"out"`), not a dict.
"""

import torch
from torch import nn
from torch.nn import functional as F

from keras_lightnets.conversion.references.torchvision.mobilenet_v3 import MobileNetV3


def _resize(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def dilated_backbone():
    """`(features, low index, high index)` of the dilated MobileNetV3-Large.

    As torchvision, the stage boundaries are the stem, every block whose
    spec stride is 2 and the last layer; "low" is the fourth from the end
    (`features[4]`, stride 8), "high" the last (`features[16]`, stride 16).
    """
    features = MobileNetV3("large", dilated=True).features
    stages = [0] + [i for i, m in enumerate(features) if getattr(m, "is_strided", False)] + [len(features) - 1]
    return features, stages[-4], stages[-1]


def run_backbone(backbone, x, taps):
    """Runs the `nn.Sequential` `backbone`; returns `{index: output}` at `taps`."""
    out = {}
    for index, layer in enumerate(backbone):
        x = layer(x)
        if index in taps:
            out[index] = x
    return out


class LRASPPHead(nn.Module):
    """Lite R-ASPP: `low_classifier(low) + high_classifier(resize(cbr(high) * scale(high)))`."""

    def __init__(self, low_channels, high_channels, num_classes, inter_channels=128):
        super().__init__()
        self.cbr = nn.Sequential(
            nn.Conv2d(high_channels, inter_channels, 1, bias=False), nn.BatchNorm2d(inter_channels), nn.ReLU()
        )
        self.scale = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_channels, inter_channels, 1, bias=False), nn.Sigmoid()
        )
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.high_classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, low, high):
        x = _resize(self.cbr(high) * self.scale(high), low.shape[-2:])
        return self.low_classifier(low) + self.high_classifier(x)


class LRASPPMobileNetV3Large(nn.Module):
    """`(N, 3, H, W)` → `(N, num_classes, H, W)` logits."""

    def __init__(self, num_classes=21):
        super().__init__()
        self.backbone, self.low_index, self.high_index = dilated_backbone()
        self.classifier = LRASPPHead(
            self.backbone[self.low_index].out_channels, self.backbone[self.high_index].out_channels, num_classes
        )

    def forward(self, x):
        features = run_backbone(self.backbone, x, (self.low_index, self.high_index))
        return _resize(self.classifier(features[self.low_index], features[self.high_index]), x.shape[-2:])


def _conv_bn_relu(in_channels, out_channels, kernel_size=1, dilation=1):
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2 * dilation, dilation=dilation,
                  bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


class ASPPPooling(nn.Sequential):
    """Global average → 1x1 conv → BN → ReLU, resized back (a broadcast)."""

    def __init__(self, in_channels, out_channels):
        super().__init__(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(in_channels, out_channels))

    def forward(self, x):
        return _resize(super().forward(x), x.shape[-2:])


class ASPP(nn.Module):
    """Branches [1x1, 3x3 at each of `rates`, pooling], concatenated, then
    `project` (1x1 conv, BN, ReLU, Dropout 0.5)."""

    def __init__(self, in_channels, rates=(12, 24, 36), out_channels=256):
        super().__init__()
        branches = [nn.Sequential(*_conv_bn_relu(in_channels, out_channels))]
        branches += [nn.Sequential(*_conv_bn_relu(in_channels, out_channels, 3, rate)) for rate in rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(*_conv_bn_relu(len(branches) * out_channels, out_channels), nn.Dropout(0.5))

    def forward(self, x):
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabHead(nn.Sequential):
    """ASPP → 3x3 conv (256), BN, ReLU → 1x1 conv with bias."""

    def __init__(self, in_channels, num_classes):
        super().__init__(ASPP(in_channels), *_conv_bn_relu(256, 256, 3), nn.Conv2d(256, num_classes, 1))


class FCNHead(nn.Sequential):
    """3x3 conv to a quarter of the channels, BN, ReLU, Dropout 0.1, 1x1 conv with bias."""

    def __init__(self, in_channels, num_classes):
        inter = in_channels // 4
        super().__init__(*_conv_bn_relu(in_channels, inter, 3), nn.Dropout(0.1), nn.Conv2d(inter, num_classes, 1))


class DeepLabV3MobileNetV3Large(nn.Module):
    """`(N, 3, H, W)` → `(N, num_classes, H, W)` logits ("out").

    `classifier` runs on `backbone[16]` (stride 16, 960 channels) and
    `aux_classifier` (built with `aux_loss`, as in the published weights) on
    `backbone[4]` (stride 8); `forward(x, with_aux=True)` returns `(out, aux)`.
    """

    def __init__(self, num_classes=21, aux_loss=True):
        super().__init__()
        self.backbone, self.aux_index, self.out_index = dilated_backbone()
        self.classifier = DeepLabHead(self.backbone[self.out_index].out_channels, num_classes)
        self.aux_classifier = FCNHead(self.backbone[self.aux_index].out_channels, num_classes) if aux_loss else None

    def forward(self, x, with_aux=False):
        if with_aux and self.aux_classifier is None:
            raise ValueError("built with aux_loss=False: no aux output")
        features = run_backbone(self.backbone, x, (self.aux_index, self.out_index))
        out = _resize(self.classifier(features[self.out_index]), x.shape[-2:])
        if not with_aux:
            return out
        return out, _resize(self.aux_classifier(features[self.aux_index]), x.shape[-2:])
