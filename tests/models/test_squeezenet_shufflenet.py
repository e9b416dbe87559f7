"""SqueezeNet 1.0/1.1, ShuffleNet v1 and v2: blocks, builders and conversion,
against the PyTorch references written after torchvision's and megvii's code
(`keras_lightnets.conversion.references.torchvision.squeezenet`, `.shufflenet`
and `references.megvii`, which keep their sources' module structure, padding
and forward passes).
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
from keras_lightnets.conversion.references.megvii import (
    STAGE_OUT_CHANNELS as MEGVII_V1_CHANNELS,
)
from keras_lightnets.conversion.references.megvii import (
    ShuffleNetV1 as MegviiShuffleNetV1,
)
from keras_lightnets.conversion.references.megvii import ShuffleV1Block
from keras_lightnets.conversion.references.torchvision.shufflenet import (
    STAGES_OUT_CHANNELS as TORCHVISION_V2,
)
from keras_lightnets.conversion.references.torchvision.shufflenet import (
    ShuffleNetV2 as TorchvisionShuffleNetV2,
)
from keras_lightnets.conversion.references.torchvision.shufflenet import channel_shuffle
from keras_lightnets.conversion.references.torchvision.squeezenet import (
    SqueezeNet as TorchvisionSqueezeNet,
)
from keras_lightnets.layers import blocks
from keras_lightnets.layers.custom import ChannelShuffle, ChannelSplit, torch_max_pool
from keras_lightnets.models.shufflenet import shufflenet_v1_channels
from tests.helpers import (
    assert_parity,
    assert_reported_parity,
    nchw,
    randomize_torch_model,
    reference_images,
    run_cli,
    torch_forward,
)

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

# how the conversion report names the shipped PyTorch reference of each family
SHIPPED_REFERENCES = {
    "squeezenet": "torchvision SqueezeNet (shipped reference)",
    "shufflenet_v2": "torchvision ShuffleNetV2 (shipped reference)",
    "shufflenet_v1": "megvii ShuffleNetV1 (shipped reference)",
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
        randomize_torch_model(reference, nchw(images), seed=0)
        folder = tmp_path_factory.mktemp(arch)
        checkpoint, out = folder / f"{arch}.pth", folder / f"{arch}.h5"
        torch.save(reference.state_dict(), checkpoint)
        status, report, err = run_cli(capsys, checkpoint, out, "--arch", arch)
        assert status == 0, err
        assert "unused tensors  none" in report and "unset weights   none" in report, report
        family = next(family for family in SHIPPED_REFERENCES if arch.startswith(family))
        assert_reported_parity(report, SHIPPED_REFERENCES[family])
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
    got, expected = np.asarray(model(images)), torch_forward(reference, images)
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
    expected = channel_shuffle(torch.from_numpy(nchw(x)), groups).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(np.asarray(ChannelShuffle(groups)(x)), expected)
    # unknown spatial size in a Functional model
    inputs = keras.Input((None, None, channels))
    model = keras.Model(inputs, blocks.channel_shuffle(inputs, groups, name="shuffle"))
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)  # traced graph


@pytest.mark.parametrize("channels,groups", [(24, 2), (24, 3), (48, 8)])
def test_megvii_v1_shuffle_is_torchvision_shuffle_with_channels_over_groups(channels, groups, rng):
    x = rng.normal(size=(1, 3, 4, channels)).astype("float32")
    megvii_block = types.SimpleNamespace(group=groups)
    expected = ShuffleV1Block.channel_shuffle(megvii_block, torch.from_numpy(nchw(x)))
    expected = expected.numpy().transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(np.asarray(ChannelShuffle(channels // groups)(x)), expected)
    assert not np.array_equal(np.asarray(ChannelShuffle(groups)(x)), expected)


def test_channel_split_gives_torch_chunks(rng):
    x = rng.normal(size=(2, 3, 3, 10)).astype("float32")
    first, second = torch.from_numpy(nchw(x)).chunk(2, dim=1)
    ours = ChannelSplit()(x)
    np.testing.assert_array_equal(np.asarray(ours[0]), first.numpy().transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(np.asarray(ours[1]), second.numpy().transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match="halve 9 channels"):
        ChannelSplit()(x[..., :9])


@pytest.mark.parametrize(
    "pool_size,strides,padding,ceil_mode",
    [(3, 2, 0, True), (3, 2, 1, True), (3, 2, 1, False), (3, 2, 0, False), (2, 2, 0, True), (3, 1, 1, True)],
)
def test_torch_max_pool_matches_pytorch_at_every_size(pool_size, strides, padding, ceil_mode, rng):
    inputs = keras.Input((None, None, 2))
    model = keras.Model(
        inputs, torch_max_pool(inputs, pool_size, strides, padding, ceil_mode, name="pool")
    )
    for height, width in [(5, 5), (6, 7), (8, 9), (10, 13), (13, 12), (14, 14)]:
        x = rng.normal(-10, 1, size=(1, height, width, 2)).astype("float32")  # negative: padding must be -inf
        expected = F.max_pool2d(
            torch.from_numpy(nchw(x)), pool_size, strides, padding, ceil_mode=ceil_mode
        ).numpy().transpose(0, 2, 3, 1)
        np.testing.assert_array_equal(np.asarray(model(x)), expected, err_msg=f"{height}x{width}")


def test_torch_max_pool_refuses_windows_in_the_padding():
    with pytest.raises(ValueError, match="ceil_mode"):
        torch_max_pool(keras.Input((8, 8, 1)), 2, 2, padding=1, ceil_mode=True, name="pool")


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
        assert tuple(shufflenet_v1_channels(groups, float(size[:-1]))) == channels[1:]
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
        np.testing.assert_allclose(np.asarray(restored(x)), np.asarray(model(x)), atol=1e-5)


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
    assert info["source"]["naming"] == "megvii"
    np.testing.assert_array_equal(kl.preprocess_input(np.array([[1, 2, 3]]), "bgr"), [[3, 2, 1]])


def test_cli_help_lists_the_new_archs_and_namings(capsys):
    from convert.__main__ import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in (*VARIANTS, "torchvision", "torchvision", "megvii"):
        assert name in text
