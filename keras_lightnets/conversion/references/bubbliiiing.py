"""bubbliiiing/deeplabv3-plus-pytorch's DeepLabV3+ (MobileNetV2 and Xception backbones).

Written from nets/deeplabv3_plus.py (the `MobileNetV2` wrapper: tonylins'
MobileNetV2 `features[:-1]`, dilated in place by `_nostride_dilate`; `ASPP`;
`DeepLab`), nets/mobilenetv2.py (tonylins' MobileNetV2) and nets/xception.py
(`SeparableConv2d` with `activate_first`, `Block` with its `hook_layer` and
in-place ReLUs, `Xception` with `stride_list`). The in-place ReLUs stay in
place: they change what the identity shortcuts add.
"""

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from keras_lightnets.conversion.references import tonylins


class SeparableConv2d(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, padding=0, dilation=1,
                 activate_first=True, inplace=True):
        super().__init__()
        self.relu0 = nn.ReLU(inplace=inplace)
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation,
                                   groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, 1, 0, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.activate_first = activate_first

    def forward(self, x):
        if self.activate_first:
            x = self.relu0(x)  # in place when `inplace`: the caller's tensor changes too
        x = self.bn1(self.depthwise(x))
        if not self.activate_first:
            x = self.relu1(x)
        x = self.bn2(self.pointwise(x))
        if not self.activate_first:
            x = self.relu2(x)
        return x


class Block(nn.Module):
    def __init__(self, in_filters, out_filters, strides=1, atrous=None, grow_first=True, inplace=True):
        super().__init__()
        if atrous is None:
            atrous = [1] * 3
        elif isinstance(atrous, int):
            atrous = [atrous] * 3
        self.head_relu = True
        if out_filters != in_filters or strides != 1:
            self.skip = nn.Conv2d(in_filters, out_filters, 1, stride=strides, bias=False)
            self.skipbn = nn.BatchNorm2d(out_filters)
            self.head_relu = False
        else:
            self.skip = None
        self.hook_layer = None
        filters = out_filters if grow_first else in_filters
        self.sepconv1 = SeparableConv2d(in_filters, filters, 3, 1, atrous[0], atrous[0], inplace=self.head_relu)
        self.sepconv2 = SeparableConv2d(filters, out_filters, 3, 1, atrous[1], atrous[1])
        self.sepconv3 = SeparableConv2d(out_filters, out_filters, 3, strides, atrous[2], atrous[2], inplace=inplace)

    def forward(self, inp):
        skip = self.skipbn(self.skip(inp)) if self.skip is not None else inp
        x = self.sepconv1(inp)  # with an identity skip, its in-place ReLU turns `skip` into relu(inp)
        x = self.sepconv2(x)
        self.hook_layer = x
        x = self.sepconv3(x)
        x += skip
        return x


class Xception(nn.Module):
    def __init__(self, downsample_factor):
        super().__init__()
        stride_list = {8: [2, 1, 1], 16: [2, 2, 1]}[downsample_factor]
        self.conv1 = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(32, 64, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.block1 = Block(64, 128, 2)
        self.block2 = Block(128, 256, stride_list[0], inplace=False)
        self.block3 = Block(256, 728, stride_list[1])
        rate = 16 // downsample_factor
        for index in range(4, 20):
            setattr(self, f"block{index}", Block(728, 728, 1, atrous=rate))
        self.block20 = Block(728, 1024, stride_list[2], atrous=rate, grow_first=False)
        self.conv3 = SeparableConv2d(1024, 1536, 3, 1, rate, dilation=rate, activate_first=False)
        self.conv4 = SeparableConv2d(1536, 1536, 3, 1, rate, dilation=rate, activate_first=False)
        self.conv5 = SeparableConv2d(1536, 2048, 3, 1, rate, dilation=rate, activate_first=False)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.block1(x)
        x = self.block2(x)
        low_level = self.block2.hook_layer
        for index in range(3, 21):
            x = getattr(self, f"block{index}")(x)
        return low_level, self.conv5(self.conv4(self.conv3(x)))


class MobileNetV2(nn.Module):
    """The DeepLab backbone: `features[:-1]` of tonylins' MobileNetV2, dilated in
    place (`_nostride_dilate`) for downsample factor 8 or 16; returns
    (low-level = features[:4], high-level = features[4:])."""

    def __init__(self, downsample_factor=16, mobilenetv2=None):
        super().__init__()
        self.features = (mobilenetv2 or tonylins.MobileNetV2()).features[:-1]
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


class ASPP(nn.Module):
    def __init__(self, dim_in, dim_out, rate=1):
        super().__init__()

        def branch(kernel_size, dilation):
            return nn.Sequential(
                nn.Conv2d(dim_in, dim_out, kernel_size, 1, padding=dilation if kernel_size == 3 else 0,
                          dilation=dilation, bias=True),
                nn.BatchNorm2d(dim_out), nn.ReLU(inplace=True),
            )

        self.branch1 = branch(1, rate)
        self.branch2 = branch(3, 6 * rate)
        self.branch3 = branch(3, 12 * rate)
        self.branch4 = branch(3, 18 * rate)
        self.branch5_conv = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=True)
        self.branch5_bn = nn.BatchNorm2d(dim_out)
        self.branch5_relu = nn.ReLU(inplace=True)
        self.conv_cat = nn.Sequential(
            nn.Conv2d(dim_out * 5, dim_out, 1, 1, padding=0, bias=True), nn.BatchNorm2d(dim_out), nn.ReLU(inplace=True)
        )

    def forward(self, x):
        row, col = x.shape[2:]
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        pooled = torch.mean(torch.mean(x, 2, True), 3, True)
        pooled = self.branch5_relu(self.branch5_bn(self.branch5_conv(pooled)))
        branches.append(F.interpolate(pooled, (row, col), None, "bilinear", True))
        return self.conv_cat(torch.cat(branches, dim=1))


class DeepLab(nn.Module):
    """`DeepLab(num_classes, backbone="mobilenet"|"xception", downsample_factor=8|16)`."""

    def __init__(self, num_classes=21, backbone="mobilenet", downsample_factor=16):
        super().__init__()
        if backbone == "xception":
            self.backbone = Xception(downsample_factor)
            in_channels, low_level_channels = 2048, 256
        else:
            self.backbone = MobileNetV2(downsample_factor)
            in_channels, low_level_channels = 320, 24
        self.aspp = ASPP(in_channels, 256, rate=16 // downsample_factor)
        self.shortcut_conv = nn.Sequential(
            nn.Conv2d(low_level_channels, 48, 1), nn.BatchNorm2d(48), nn.ReLU(inplace=True)
        )
        self.cat_conv = nn.Sequential(
            nn.Conv2d(48 + 256, 256, 3, stride=1, padding=1), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Conv2d(256, 256, 3, stride=1, padding=1), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
            nn.Dropout(0.1),
        )
        self.cls_conv = nn.Conv2d(256, num_classes, 1, stride=1)

    def forward(self, x):
        height, width = x.shape[2:]
        low_level, x = self.backbone(x)
        x = self.aspp(x)
        low_level = self.shortcut_conv(low_level)
        x = F.interpolate(x, size=low_level.shape[2:], mode="bilinear", align_corners=True)
        x = self.cls_conv(self.cat_conv(torch.cat((x, low_level), dim=1)))
        return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=True)
