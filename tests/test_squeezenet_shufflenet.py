"""SqueezeNet 1.0/1.1, ShuffleNet v1 and v2: blocks, builders and conversion,
against PyTorch references written here after torchvision's and megvii's code.

The reference modules keep their sources' module structure (hence state_dict
keys), padding and forward passes:
- `TorchvisionSqueezeNet`: torchvision/models/squeezenet.py (`features.N`
  Sequential with `Fire` modules, `classifier.1` 1x1 conv).
- `TorchvisionShuffleNetV2`: torchvision/models/shufflenetv2.py (`conv1`,
  `stage2..4.N.branch1/branch2`, `conv5`, `fc`).
- `MegviiShuffleNetV1`: megvii-model/ShuffleNet-Series ShuffleNetV1/network.py
  and blocks.py (`first_conv`, `features.N.branch_main_1/2`, `classifier.0`).
torchvision does not import beside torch 2.13 here, so they are written out.
"""

import copy
import types

import keras
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import keras_lightnets as kl
from keras_lightnets import blocks
from keras_lightnets.shufflenet import shufflenet_v1_channels
from tests import torch_models
from tests.test_convert import assert_parity, reference_images, run_cli

# ---------------------------------------------------------------- torchvision SqueezeNet


class Fire(nn.Module):
    def __init__(self, inplanes, squeeze_planes, expand1x1_planes, expand3x3_planes):
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


class TorchvisionSqueezeNet(nn.Module):
    def __init__(self, version="1_0", num_classes=1000, dropout=0.5):
        super().__init__()
        if version == "1_0":
            self.features = nn.Sequential(
                nn.Conv2d(3, 96, kernel_size=7, stride=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
                Fire(96, 16, 64, 64),
                Fire(128, 16, 64, 64),
                Fire(128, 32, 128, 128),
                nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
                Fire(256, 32, 128, 128),
                Fire(256, 48, 192, 192),
                Fire(384, 48, 192, 192),
                Fire(384, 64, 256, 256),
                nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
                Fire(512, 64, 256, 256),
            )
        else:
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, kernel_size=3, stride=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
                Fire(64, 16, 64, 64),
                Fire(128, 16, 64, 64),
                nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
                Fire(128, 32, 128, 128),
                Fire(256, 32, 128, 128),
                nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
                Fire(256, 48, 192, 192),
                Fire(384, 48, 192, 192),
                Fire(384, 64, 256, 256),
                Fire(512, 64, 256, 256),
            )
        final_conv = nn.Conv2d(512, num_classes, kernel_size=1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), final_conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
        )

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


# ---------------------------------------------------------------- torchvision ShuffleNet v2


def channel_shuffle(x, groups):
    batchsize, num_channels, height, width = x.size()
    x = x.view(batchsize, groups, num_channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, -1, height, width)


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride):
        super().__init__()
        self.stride = stride
        branch_features = oup // 2
        if self.stride > 1:
            self.branch1 = nn.Sequential(
                self.depthwise_conv(inp, inp, kernel_size=3, stride=self.stride, padding=1),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch_features, kernel_size=1, stride=1, padding=0, bias=False),
                nn.BatchNorm2d(branch_features),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if self.stride > 1 else branch_features, branch_features, 1, 1, 0, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
            self.depthwise_conv(branch_features, branch_features, kernel_size=3, stride=self.stride, padding=1),
            nn.BatchNorm2d(branch_features),
            nn.Conv2d(branch_features, branch_features, 1, 1, 0, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
        )

    @staticmethod
    def depthwise_conv(i, o, kernel_size, stride=1, padding=0, bias=False):
        return nn.Conv2d(i, o, kernel_size, stride, padding, bias=bias, groups=i)

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class TorchvisionShuffleNetV2(nn.Module):
    def __init__(self, stages_repeats, stages_out_channels, num_classes=1000):
        super().__init__()
        input_channels = 3
        output_channels = stages_out_channels[0]
        self.conv1 = nn.Sequential(
            nn.Conv2d(input_channels, output_channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(output_channels),
            nn.ReLU(inplace=True),
        )
        input_channels = output_channels
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for name, repeats, output_channels in zip(
            ["stage2", "stage3", "stage4"], stages_repeats, stages_out_channels[1:]
        ):
            seq = [InvertedResidual(input_channels, output_channels, 2)]
            for _ in range(repeats - 1):
                seq.append(InvertedResidual(output_channels, output_channels, 1))
            setattr(self, name, nn.Sequential(*seq))
            input_channels = output_channels
        output_channels = stages_out_channels[-1]
        self.conv5 = nn.Sequential(
            nn.Conv2d(input_channels, output_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(output_channels),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(output_channels, num_classes)

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        x = self.conv5(x).mean([2, 3])
        return self.fc(x)


# torchvision's shufflenet_v2_x*: stages_out_channels (stages_repeats [4, 8, 4]).
TORCHVISION_V2 = {
    "shufflenet_v2_x0_5": [24, 48, 96, 192, 1024],
    "shufflenet_v2_x1_0": [24, 116, 232, 464, 1024],
    "shufflenet_v2_x1_5": [24, 176, 352, 704, 1024],
    "shufflenet_v2_x2_0": [24, 244, 488, 976, 2048],
}

# ---------------------------------------------------------------- megvii ShuffleNet v1


class ShuffleV1Block(nn.Module):
    def __init__(self, inp, oup, *, group, first_group, mid_channels, ksize, stride):
        super().__init__()
        self.stride = stride
        pad = ksize // 2
        self.group = group
        outputs = oup - inp if stride == 2 else oup
        branch_main_1 = [
            nn.Conv2d(inp, mid_channels, 1, 1, 0, groups=1 if first_group else group, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, mid_channels, ksize, stride, pad, groups=mid_channels, bias=False),
            nn.BatchNorm2d(mid_channels),
        ]
        branch_main_2 = [
            nn.Conv2d(mid_channels, outputs, 1, 1, 0, groups=group, bias=False),
            nn.BatchNorm2d(outputs),
        ]
        self.branch_main_1 = nn.Sequential(*branch_main_1)
        self.branch_main_2 = nn.Sequential(*branch_main_2)
        if stride == 2:
            self.branch_proj = nn.AvgPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, old_x):
        x = old_x
        x_proj = old_x
        x = self.branch_main_1(x)
        if self.group > 1:
            x = self.channel_shuffle(x)
        x = self.branch_main_2(x)
        if self.stride == 1:
            return F.relu(x + x_proj)
        return torch.cat((self.branch_proj(x_proj), F.relu(x)), 1)

    def channel_shuffle(self, x):
        batchsize, num_channels, height, width = x.data.size()
        group_channels = num_channels // self.group
        x = x.reshape(batchsize, group_channels, self.group, height, width)
        x = x.permute(0, 2, 1, 3, 4)
        return x.reshape(batchsize, num_channels, height, width)


# megvii's stage_out_channels ([-1, conv1, stage2, stage3, stage4]); its code has groups 3 and 8 only.
MEGVII_V1_CHANNELS = {
    (3, "0.5x"): [-1, 12, 120, 240, 480],
    (3, "1.0x"): [-1, 24, 240, 480, 960],
    (3, "1.5x"): [-1, 24, 360, 720, 1440],
    (3, "2.0x"): [-1, 48, 480, 960, 1920],
    (8, "0.5x"): [-1, 16, 192, 384, 768],
    (8, "1.0x"): [-1, 24, 384, 768, 1536],
    (8, "1.5x"): [-1, 24, 576, 1152, 2304],
    (8, "2.0x"): [-1, 48, 768, 1536, 3072],
}


class MegviiShuffleNetV1(nn.Module):
    def __init__(self, n_class=1000, model_size="2.0x", group=None):
        super().__init__()
        self.stage_repeats = [4, 8, 4]
        if (group, model_size) in MEGVII_V1_CHANNELS:
            self.stage_out_channels = MEGVII_V1_CHANNELS[group, model_size]
        else:  # groups 1, 2, 4: the Keras builder's extension of megvii's table
            self.stage_out_channels = [-1, *shufflenet_v1_channels(group, float(model_size[:-1]))]
        input_channel = self.stage_out_channels[1]
        self.first_conv = nn.Sequential(
            nn.Conv2d(3, input_channel, 3, 2, 1, bias=False),
            nn.BatchNorm2d(input_channel),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.features = []
        for idxstage in range(len(self.stage_repeats)):
            numrepeat = self.stage_repeats[idxstage]
            output_channel = self.stage_out_channels[idxstage + 2]
            for i in range(numrepeat):
                stride = 2 if i == 0 else 1
                first_group = idxstage == 0 and i == 0
                self.features.append(
                    ShuffleV1Block(
                        input_channel, output_channel, group=group, first_group=first_group,
                        mid_channels=output_channel // 4, ksize=3, stride=stride,
                    )
                )
                input_channel = output_channel
        self.features = nn.Sequential(*self.features)
        self.globalpool = nn.AvgPool2d(7)
        self.classifier = nn.Sequential(nn.Linear(self.stage_out_channels[-1], n_class, bias=False))

    def forward(self, x):
        x = self.maxpool(self.first_conv(x))
        x = self.globalpool(self.features(x))
        x = x.contiguous().view(-1, self.stage_out_channels[-1])
        return self.classifier(x)


# ---------------------------------------------------------------- the variants

# arch: (PyTorch reference, the same network in Keras)
VARIANTS = {
    "squeezenet1_0": (lambda: TorchvisionSqueezeNet("1_0"), lambda: kl.SqueezeNet("1_0")),
    "squeezenet1_1": (lambda: TorchvisionSqueezeNet("1_1"), lambda: kl.SqueezeNet("1_1")),
    **{
        arch: (
            lambda channels=channels: TorchvisionShuffleNetV2([4, 8, 4], channels),
            lambda width=float(arch[-3:].replace("_", ".")): kl.ShuffleNetV2(width),
        )
        for arch, channels in TORCHVISION_V2.items()
    },
    # every groups value, at varied scales (0.5x g8: a rounded-up conv1; g2/g4 at
    # 0.5x/1.5x: stage widths rounded to 4 * groups); g1 with 100 classes.
    "shufflenet_v1_g1": (
        lambda: MegviiShuffleNetV1(100, "1.0x", group=1), lambda: kl.ShuffleNetV1(1, 1.0, classes=100)
    ),
    "shufflenet_v1_g2": (lambda: MegviiShuffleNetV1(1000, "0.5x", group=2), lambda: kl.ShuffleNetV1(2, 0.5)),
    "shufflenet_v1_g3": (lambda: MegviiShuffleNetV1(1000, "2.0x", group=3), lambda: kl.ShuffleNetV1(3, 2.0)),
    "shufflenet_v1_g4": (lambda: MegviiShuffleNetV1(1000, "1.5x", group=4), lambda: kl.ShuffleNetV1(4, 1.5)),
    "shufflenet_v1_g8": (lambda: MegviiShuffleNetV1(1000, "0.5x", group=8), lambda: kl.ShuffleNetV1(8, 0.5)),
}

# torchvision's documented `num_params` of each model (trainable parameters).
TORCHVISION_NUM_PARAMS = {
    "squeezenet1_0": 1248424,
    "squeezenet1_1": 1235496,
    "shufflenet_v2_x0_5": 1366792,
    "shufflenet_v2_x1_0": 2278604,
    "shufflenet_v2_x1_5": 3503624,
    "shufflenet_v2_x2_0": 7393996,
}

# Quick parity cases; the others are marked slow.
QUICK = {"squeezenet1_1", "shufflenet_v2_x0_5", "shufflenet_v1_g3"}
ODD_SIZE_ARCHS = ("squeezenet1_0", "squeezenet1_1", "shufflenet_v2_x1_0")

_converted = {}


def converted(arch, tmp_path_factory, capsys):
    """`(PyTorch reference, checkpoint, converted .h5)` for `arch`, made once per session."""
    if arch not in _converted:
        torch.manual_seed(0)
        reference = VARIANTS[arch][0]()
        images = reference_images(224)
        torch_models.randomize_torch_model(reference, torch_models.nchw(images), seed=0)
        folder = tmp_path_factory.mktemp(arch)
        checkpoint, out = folder / f"{arch}.pth", folder / f"{arch}.h5"
        torch.save(reference.state_dict(), checkpoint)
        status, report, err = run_cli(capsys, checkpoint, out, "--arch", arch)
        assert status == 0, err
        assert "unused tensors  none" in report and "unset weights   none" in report, report
        _converted[arch] = (reference.eval(), checkpoint, out)
    return _converted[arch]


def _parity_params():
    params = []
    for arch in VARIANTS:
        sizes = (224, 227, 193) if arch in ODD_SIZE_ARCHS else (224,)
        for size in sizes:
            marks = () if arch in QUICK and size == 224 else (pytest.mark.slow,)
            params.append(pytest.param(arch, size, marks=marks, id=f"{arch}-{size}"))
    return params


@pytest.mark.parametrize("arch,size", _parity_params())
def test_cli_conversion_reproduces_pytorch(arch, size, tmp_path_factory, capsys):
    reference, _, out = converted(arch, tmp_path_factory, capsys)
    model = kl.from_h5(out, classifier_activation=None, input_shape=(size, size, 3))
    assert model.input_shape == (None, size, size, 3)
    images = reference_images(size)
    got, expected = np.asarray(model(images)), torch_models.torch_forward(reference, images)
    assert_parity(got, expected)
    print(f"{arch} at {size}: max |Δlogit| {np.abs(got - expected).max():.2e}")


# Sizes where PyTorch's ceil-mode pools give other feature maps than floor mode.
CEIL_MODE_MATTERS = {
    "squeezenet1_0": {224: True, 227: False, 193: True},
    "squeezenet1_1": {224: False, 227: True, 193: True},
}


@pytest.mark.parametrize("arch", sorted(CEIL_MODE_MATTERS))
def test_the_tested_sizes_exercise_ceil_mode(arch):
    """So that the parity tests above check the ceil-mode padding."""
    reference = VARIANTS[arch][0]().eval()
    floor_mode = copy.deepcopy(reference)
    for module in floor_mode.modules():
        if isinstance(module, nn.MaxPool2d):
            module.ceil_mode = False
    with torch.no_grad():
        matters = {
            size: reference.features(torch.zeros(1, 3, size, size)).shape
            != floor_mode.features(torch.zeros(1, 3, size, size)).shape
            for size in CEIL_MODE_MATTERS[arch]
        }
    assert matters == CEIL_MODE_MATTERS[arch]


# ---------------------------------------------------------------- blocks


@pytest.mark.parametrize("channels,groups", [(12, 2), (12, 3), (24, 4), (24, 8), (6, 6)])
def test_channel_shuffle_matches_torchvision_order(channels, groups, rng):
    x = rng.normal(size=(2, 5, 7, channels)).astype("float32")
    expected = channel_shuffle(torch.from_numpy(torch_models.nchw(x)), groups).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(np.asarray(blocks.ChannelShuffle(groups)(x)), expected)
    # unknown spatial size in a Functional model
    inputs = keras.Input((None, None, channels))
    model = keras.Model(inputs, blocks.channel_shuffle(inputs, groups, name="shuffle"))
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)  # traced graph


@pytest.mark.parametrize("channels,groups", [(24, 2), (24, 3), (48, 8)])
def test_megvii_v1_shuffle_is_torchvision_shuffle_with_channels_over_groups(channels, groups, rng):
    x = rng.normal(size=(1, 3, 4, channels)).astype("float32")
    megvii_block = types.SimpleNamespace(group=groups)
    expected = ShuffleV1Block.channel_shuffle(megvii_block, torch.from_numpy(torch_models.nchw(x)))
    expected = expected.numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(np.asarray(blocks.ChannelShuffle(channels // groups)(x)), expected)
    assert not np.array_equal(np.asarray(blocks.ChannelShuffle(groups)(x)), expected)


def test_channel_split_gives_torch_chunks(rng):
    x = rng.normal(size=(2, 3, 3, 10)).astype("float32")
    first, second = torch.from_numpy(torch_models.nchw(x)).chunk(2, dim=1)
    ours = blocks.ChannelSplit()(x)
    np.testing.assert_array_equal(np.asarray(ours[0]), first.numpy().transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(np.asarray(ours[1]), second.numpy().transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match="halve 9 channels"):
        blocks.ChannelSplit()(x[..., :9])


@pytest.mark.parametrize(
    "pool_size,strides,padding,ceil_mode",
    [(3, 2, 0, True), (3, 2, 1, True), (3, 2, 1, False), (3, 2, 0, False), (2, 2, 0, True), (3, 1, 1, True)],
)
def test_torch_max_pool_matches_pytorch_at_every_size(pool_size, strides, padding, ceil_mode, rng):
    inputs = keras.Input((None, None, 2))
    model = keras.Model(
        inputs, blocks.torch_max_pool(inputs, pool_size, strides, padding, ceil_mode, name="pool")
    )
    for height, width in [(5, 5), (6, 7), (8, 9), (10, 13), (13, 12), (14, 14)]:
        x = rng.normal(-10, 1, size=(1, height, width, 2)).astype("float32")  # negative: padding must be -inf
        expected = F.max_pool2d(
            torch.from_numpy(torch_models.nchw(x)), pool_size, strides, padding, ceil_mode=ceil_mode
        ).numpy().transpose(0, 2, 3, 1)
        np.testing.assert_array_equal(np.asarray(model(x)), expected, err_msg=f"{height}x{width}")


def test_torch_max_pool_refuses_windows_in_the_padding():
    with pytest.raises(ValueError, match="ceil_mode"):
        blocks.torch_max_pool(keras.Input((8, 8, 1)), 2, 2, padding=1, ceil_mode=True, name="pool")


# ---------------------------------------------------------------- builders


@pytest.mark.parametrize("arch", sorted(VARIANTS))
def test_parameter_count_matches_pytorch(arch):
    torch_factory, keras_factory = VARIANTS[arch]
    reference = torch_factory()
    state = reference.state_dict()
    expected = sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert keras_factory().count_params() == expected  # BN statistics included
    if arch in TORCHVISION_NUM_PARAMS:  # and the reference is torchvision's network
        assert sum(p.numel() for p in reference.parameters()) == TORCHVISION_NUM_PARAMS[arch]


def test_v1_channels_are_megvii_table_for_groups_3_and_8():
    for (groups, size), channels in MEGVII_V1_CHANNELS.items():
        assert list(shufflenet_v1_channels(groups, float(size[:-1]))) == channels[1:]
    with pytest.raises(ValueError, match="groups must be one of"):
        shufflenet_v1_channels(5, 1.0)


@pytest.mark.parametrize(
    "builder",
    [
        lambda: kl.SqueezeNet("1_1", input_shape=(64, 64, 3), classes=5),
        lambda: kl.ShuffleNetV2(0.5, input_shape=(64, 64, 3), classes=5),
    ],
    ids=["squeezenet1_1", "shufflenet_v2_x0_5"],
)
def test_models_train(builder):
    """Three steps on one batch lower the loss (eager: tracing the training
    graph takes longer than the steps; TF's CPU backward pass of grouped
    convolutions is too slow for ShuffleNet v1 here)."""
    keras.utils.set_random_seed(0)
    model = builder()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", run_eagerly=True
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 64, 64, 3)).astype("float32")
    y = rng.integers(0, 5, size=8)
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0).history["loss"]
    assert np.all(np.isfinite(history)) and history[-1] < history[0], history


def test_backbones_take_any_size_and_save(tmp_path, rng):
    """No-top models on unknown sizes; the custom layers serialise."""
    models = [
        kl.SqueezeNet("1_0", include_top=False, pooling="avg"),
        kl.ShuffleNetV1(8, 0.5, include_top=False, pooling="max"),
        kl.ShuffleNetV2(0.5, include_top=False),
    ]
    x = rng.normal(size=(1, 97, 131, 3)).astype("float32")
    for model, shape in zip(models, [(1, 512), (1, 768), (1, 4, 5, 1024)]):
        assert model(x).shape == shape
        model.save(tmp_path / f"{model.name}.keras")
        restored = keras.saving.load_model(tmp_path / f"{model.name}.keras")
        np.testing.assert_allclose(restored.predict(x, verbose=0), np.asarray(model(x)), atol=1e-5)


def test_builders_reject_unknown_variants():
    with pytest.raises(ValueError, match="version must be one of"):
        kl.SqueezeNet("1_2")
    with pytest.raises(ValueError, match="width must be one of"):
        kl.ShuffleNetV2(0.75)
    with pytest.raises(ValueError, match="scale must be one of"):
        kl.ShuffleNetV1(3, 0.25)


# ---------------------------------------------------------------- converter


@pytest.mark.parametrize(
    "arch,wrong_arch,message",
    [
        ("shufflenet_v1_g3", "shufflenet_v1_g8", "3 groups: use --arch shufflenet_v1_g3"),
        ("shufflenet_v2_x0_5", "shufflenet_v2_x2_0", "are shufflenet_v2_x0_5, not shufflenet_v2_x2_0"),
        ("squeezenet1_1", "squeezenet1_0", "a squeezenet1_1 checkpoint, not squeezenet1_0"),
        ("squeezenet1_1", "shufflenet_v2_x1_0", "match no shufflenet_v2_x1_0 naming"),
    ],
)
def test_wrong_arch_is_one_line_error(arch, wrong_arch, message, tmp_path_factory, tmp_path, capsys):
    _, checkpoint, _ = converted(arch, tmp_path_factory, capsys)
    status, out, err = run_cli(capsys, checkpoint, tmp_path / "x.h5", "--arch", wrong_arch)
    assert status == 2 and out == "" and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "x.h5").exists()


def test_v1_metadata_records_scale_groups_and_preprocessing(tmp_path_factory, capsys):
    _, _, out = converted("shufflenet_v1_g8", tmp_path_factory, capsys)
    info = kl.weights_info(out)
    assert info["builder"] == "ShuffleNetV1"
    assert info["builder_kwargs"] == {"groups": 8, "scale": 0.5, "classes": 1000}
    assert info["preprocessing"]["mode"] == "bgr"
    assert info["source"]["naming"] == "megvii_shufflenet_v1"
    np.testing.assert_array_equal(kl.preprocess_input(np.array([[1, 2, 3]]), "bgr"), [[3, 2, 1]])


def test_cli_help_lists_the_new_archs_and_namings(capsys):
    from convert.__main__ import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in (*VARIANTS, "torchvision_squeezenet", "torchvision_shufflenet_v2", "megvii_shufflenet_v1"):
        assert name in text
