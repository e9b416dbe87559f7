"""EfficientNet-Lite: architecture vs the PyTorch port, and the real ImageNet weights."""

import sys

import numpy as np
import pytest
import torch
from efficientnet_lite_pytorch import EfficientNet

import keras_lightnets as kl
from convert.__main__ import main as convert_main
from keras_lightnets.preprocessing.image import load_image
from keras_lightnets.weights.fetch import pretrained_checkpoint
from tests.helpers import (
    assert_parity,
    assert_reported_parity,
    nchw,
    randomize_torch_model,
    run_cli,
    torch_forward,
)

CATS = {"tabby", "tiger_cat", "Persian_cat", "Siamese_cat", "Egyptian_cat"}


def torch_lite(variant, **overrides):
    return EfficientNet.from_name(f"efficientnet-lite{variant}", **overrides).eval()


@pytest.mark.parametrize("variant", range(5))
def test_parameter_count_matches_pytorch(variant):
    state = torch_lite(variant).state_dict()
    expected = sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert kl.EfficientNetLite(variant).count_params() == expected  # BN statistics included


@pytest.mark.slow
@pytest.mark.parametrize("variant", [2, 4])
def test_random_weights_through_cli(variant, tmp_path, capsys):
    size = kl.EfficientNetLite(variant).input_shape[1]
    torch.manual_seed(variant)
    reference = torch_lite(variant, num_classes=50)
    rng = np.random.default_rng(variant)
    images = kl.preprocess_input(rng.uniform(0, 255, (2, size, size, 3)), "lite")
    randomize_torch_model(reference, nchw(images), seed=variant)
    torch.save(reference.state_dict(), tmp_path / "lite.pth")
    status = convert_main([str(tmp_path / "lite.pth"), str(tmp_path / "lite.h5"), "--arch", f"efficientnet_lite{variant}"])
    report = capsys.readouterr().out
    assert status == 0
    assert_reported_parity(report, "efficientnet_lite_pytorch 0.1.0 EfficientNet")  # the package itself
    model = kl.from_h5(tmp_path / "lite.h5", classifier_activation=None)
    assert_parity(np.asarray(model(images)), torch_forward(reference, images))


@pytest.fixture(scope="module")
def lite0_pair():
    checkpoint = pretrained_checkpoint("efficientnet_lite0")
    reference = torch_lite(0)
    state = torch.load(checkpoint, weights_only=True)
    reference.load_state_dict(state)
    return kl.EfficientNetLite0(weights="imagenet", classifier_activation=None), reference


def _photos(tmp_path):
    import skimage.data
    from PIL import Image

    paths = {}
    for name in ("chelsea", "coffee", "rocket", "astronaut"):
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(paths[name])
    return paths


def test_real_lite0_weights_match_pytorch_on_photos(lite0_pair, tmp_path):
    model, reference = lite0_pair
    photos = _photos(tmp_path)
    images = np.stack([load_image(p, 224, 224 / 256, "bicubic") for p in photos.values()])
    batch = kl.preprocess_input(images, "lite")
    keras_logits = np.asarray(model(batch))
    torch_logits = torch_forward(reference, batch)
    assert np.abs(keras_logits - torch_logits).max() <= 1e-4
    np.testing.assert_array_equal(
        np.argsort(-keras_logits, 1)[:, :5], np.argsort(-torch_logits, 1)[:, :5]
    )
    labels = [kl.decode_predictions(keras_logits, top=1)[i][0][1] for i in range(len(photos))]
    assert labels[0] in CATS
    assert labels[1] == "espresso"
    assert labels[2] == "missile"


def test_no_top_imagenet_weights_load_by_name(lite0_pair):
    model, _ = lite0_pair
    backbone = kl.EfficientNetLite0(weights="imagenet", include_top=False, pooling="avg")
    np.testing.assert_array_equal(
        backbone.get_layer("block6d_dwconv").kernel.numpy(), model.get_layer("block6d_dwconv").kernel.numpy()
    )


def test_imagenet_weights_for_models_without_them_is_a_clear_error():
    with pytest.raises(ValueError, match="no ImageNet weights for squeezenet1_0"):
        kl.SqueezeNet(weights="imagenet")


def test_failed_parity_check_writes_nothing(tmp_path, capsys, monkeypatch):
    import keras_lightnets.conversion.pipeline

    monkeypatch.setattr(keras_lightnets.conversion.pipeline, "PARITY_ATOL", 0.0)  # the real difference is ~1e-5
    status = convert_main([pretrained_checkpoint("efficientnet_lite0"), str(tmp_path / "x.h5"), "--arch", "efficientnet_lite0"])
    assert status == 2 and "does not reproduce" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("variant", [0, 2] + [pytest.param(v, marks=pytest.mark.slow) for v in (1, 3, 4)])
def test_shipped_reference_equals_the_package(variant):
    """The fallback reference (for machines without `efficientnet_lite_pytorch`)
    takes the package's state_dict as it is and computes what the package does."""
    from keras_lightnets.conversion.references.efficientnet_lite_pytorch import (
        VARIANTS,
        EfficientNetLite,
    )

    size = VARIANTS[variant][2]
    torch.manual_seed(variant)
    package = torch_lite(variant, num_classes=20)
    images = kl.preprocess_input(np.random.default_rng(variant).uniform(0, 255, (2, size, size, 3)), "lite")
    randomize_torch_model(package, nchw(images.astype("float32")), seed=variant)
    shipped = EfficientNetLite(variant, 20)
    assert list(shipped.state_dict()) == list(package.state_dict())
    shipped.load_state_dict(package.state_dict(), strict=True)
    expected = torch_forward(package, images.astype("float32"))
    assert expected.std() > 0.5
    np.testing.assert_allclose(torch_forward(shipped, images.astype("float32")), expected, rtol=0, atol=1e-5)


def test_conversion_without_the_package_measures_parity_against_the_shipped_reference(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # as if not installed
    checkpoint = pretrained_checkpoint("efficientnet_lite0")
    status, report, err = run_cli(capsys, checkpoint, tmp_path / "lite0.h5", "--arch", "efficientnet_lite0")
    assert status == 0, err
    assert_reported_parity(report, "efficientnet_lite_pytorch EfficientNetLite (shipped reference)")
