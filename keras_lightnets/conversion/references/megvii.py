"""megvii-model/ShuffleNet-Series' ShuffleNetV1 (ShuffleNetV1/network.py and blocks.py).

`first_conv` = [3x3/2 conv, BN, ReLU], max pool, `features.N` ShuffleV1Block
units numbered through all stages (`branch_main_1` = [grouped 1x1 conv, BN,
ReLU, 3x3 dw conv, BN], channel shuffle, `branch_main_2` = [grouped 1x1
conv, BN]; stride 2: concat with a 3x3 average pool of the input), global
7x7 average pool, `classifier.0` Linear without bias.
"""

import torch
import torch.nn.functional as F
from torch import nn

from keras_lightnets.models.tables import shufflenet_v1_channels

STAGE_REPEATS = (4, 8, 4)
# megvii's stage_out_channels ([-1, conv1, stage2, stage3, stage4]); its code has groups 3 and 8 only
STAGE_OUT_CHANNELS = {
    (3, "0.5x"): (-1, 12, 120, 240, 480),
    (3, "1.0x"): (-1, 24, 240, 480, 960),
    (3, "1.5x"): (-1, 24, 360, 720, 1440),
    (3, "2.0x"): (-1, 48, 480, 960, 1920),
    (8, "0.5x"): (-1, 16, 192, 384, 768),
    (8, "1.0x"): (-1, 24, 384, 768, 1536),
    (8, "1.5x"): (-1, 24, 576, 1152, 2304),
    (8, "2.0x"): (-1, 48, 768, 1536, 3072),
}


class ShuffleV1Block(nn.Module):
    def __init__(self, inp, oup, *, group, first_group, mid_channels, ksize, stride):
        super().__init__()
        self.stride = stride
        self.group = group
        outputs = oup - inp if stride == 2 else oup
        self.branch_main_1 = nn.Sequential(
            nn.Conv2d(inp, mid_channels, 1, 1, 0, groups=1 if first_group else group, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, mid_channels, ksize, stride, ksize // 2, groups=mid_channels, bias=False),
            nn.BatchNorm2d(mid_channels),
        )
        self.branch_main_2 = nn.Sequential(
            nn.Conv2d(mid_channels, outputs, 1, 1, 0, groups=group, bias=False), nn.BatchNorm2d(outputs)
        )
        if stride == 2:
            self.branch_proj = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, old_x):
        x = self.branch_main_1(old_x)
        if self.group > 1:
            x = self.channel_shuffle(x)
        x = self.branch_main_2(x)
        if self.stride == 1:
            return F.relu(x + old_x)
        return torch.cat((self.branch_proj(old_x), F.relu(x)), 1)

    def channel_shuffle(self, x):
        batchsize, num_channels, height, width = x.data.size()
        group_channels = num_channels // self.group
        x = x.reshape(batchsize, group_channels, self.group, height, width)
        x = x.permute(0, 2, 1, 3, 4)
        return x.reshape(batchsize, num_channels, height, width)


class ShuffleNetV1(nn.Module):
    def __init__(self, n_class=1000, model_size="2.0x", group=None):
        super().__init__()
        if (group, model_size) in STAGE_OUT_CHANNELS:
            self.stage_out_channels = STAGE_OUT_CHANNELS[group, model_size]
        else:  # groups 1, 2, 4: the Keras builder's extension of megvii's table
            self.stage_out_channels = (-1, *shufflenet_v1_channels(group, float(model_size[:-1])))
        input_channel = self.stage_out_channels[1]
        self.first_conv = nn.Sequential(
            nn.Conv2d(3, input_channel, 3, 2, 1, bias=False), nn.BatchNorm2d(input_channel), nn.ReLU(inplace=True)
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        units = []
        for stage, repeats in enumerate(STAGE_REPEATS):
            output_channel = self.stage_out_channels[stage + 2]
            for i in range(repeats):
                units.append(ShuffleV1Block(
                    input_channel, output_channel, group=group, first_group=stage == 0 and i == 0,
                    mid_channels=output_channel // 4, ksize=3, stride=2 if i == 0 else 1,
                ))
                input_channel = output_channel
        self.features = nn.Sequential(*units)
        self.globalpool = nn.AvgPool2d(7)
        self.classifier = nn.Sequential(nn.Linear(self.stage_out_channels[-1], n_class, bias=False))

    def forward(self, x):
        x = self.globalpool(self.features(self.maxpool(self.first_conv(x))))
        return self.classifier(x.contiguous().view(-1, self.stage_out_channels[-1]))
