"""MobileNet and MobileNetV2 against keras.applications: names, shapes, outputs."""

import re

import keras
import numpy as np
import pytest

import keras_lightnets as kl
from keras_lightnets.weights.loading import WeightsMismatchError
from tests.helpers import photo, randomize_keras_weights, save_legacy_h5

AUTO_NAME = re.compile(r"^(input_layer|global_average_pooling2d|global_max_pooling2d)(_\d+)?$")


def layer_names(model):
    return [AUTO_NAME.sub(r"\1", layer.name) for layer in model.layers]


def weight_shapes(model):
    return [
        (layer.name, [tuple(w.shape) for w in layer.weights]) for layer in model.layers if layer.weights
    ]


V1_CASES = [(0.25, 1, 224), (0.5, 2, 160), (0.75, 1, 192), (1.0, 1, 224)]
V2_CASES = [(0.35, 224), (0.75, 160), (1.0, 224), (1.3, 224), (1.4, 192)]


@pytest.mark.parametrize("alpha,depth_multiplier,size", V1_CASES)
@pytest.mark.parametrize("include_top", [True, False])
def test_mobilenet_names_and_shapes_match_keras(alpha, depth_multiplier, size, include_top):
    shape = (size, size, 3)
    ref = keras.applications.MobileNet(
        shape, alpha, depth_multiplier, include_top=include_top, weights=None
    )
    ours = kl.MobileNet(shape, alpha, depth_multiplier, include_top=include_top)
    assert layer_names(ours) == layer_names(ref)
    assert weight_shapes(ours) == weight_shapes(ref)
    assert ours.name == ref.name


@pytest.mark.parametrize("alpha,size", V2_CASES)
@pytest.mark.parametrize("include_top", [True, False])
def test_mobilenet_v2_names_and_shapes_match_keras(alpha, size, include_top):
    shape = (size, size, 3)
    ref = keras.applications.MobileNetV2(shape, alpha, include_top=include_top, weights=None)
    ours = kl.MobileNetV2(shape, alpha, include_top=include_top)
    assert layer_names(ours) == layer_names(ref)
    assert weight_shapes(ours) == weight_shapes(ref)
    assert ours.name == ref.name


def _images(size, rng, batch=2):
    images = [photo("chelsea", size), photo("coffee", size)][:batch]
    images = np.stack(images) + rng.normal(0, 8, (batch, size, size, 3)).astype("float32")
    return kl.preprocess_input(np.clip(images, 0, 255), "tf")


@pytest.mark.parametrize(
    "family,kwargs,input_shape",
    [
        ("MobileNet", {"alpha": 1.0}, (224, 224, 3)),
        ("MobileNet", {"alpha": 0.5, "include_top": False}, (161, 161, 3)),
        ("MobileNet", {"alpha": 0.25, "depth_multiplier": 2, "include_top": False, "pooling": "avg"}, (128, 97, 3)),
        ("MobileNetV2", {"alpha": 1.0}, (224, 224, 3)),
        ("MobileNetV2", {"alpha": 0.35, "include_top": False}, (161, 161, 3)),
        ("MobileNetV2", {"alpha": 1.4, "include_top": False, "pooling": "max"}, (96, 131, 3)),
    ],
)
def test_keras_applications_weight_file_gives_keras_outputs(family, kwargs, input_shape, tmp_path, rng):
    ref = getattr(keras.applications, family)(input_shape=input_shape, weights=None, **kwargs)
    randomize_keras_weights(ref, seed=1)
    path = tmp_path / "weights.h5"
    save_legacy_h5(ref, path)
    ours = getattr(kl, family)(input_shape=input_shape, weights=str(path), **kwargs)
    x = kl.preprocess_input(rng.uniform(0, 255, (2,) + input_shape), "tf")
    expected = np.asarray(ref(x, training=False))  # called, not `predict`: no graph to trace for 2 images
    got = np.asarray(ours(x, training=False))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # the weights really arrived: a fresh model gives different outputs
    fresh = getattr(kl, family)(input_shape=input_shape, **kwargs)
    assert np.abs(np.asarray(fresh(x, training=False)) - expected).max() > 1e-3


def test_wrong_width_names_first_mismatching_layer(tmp_path):
    save_legacy_h5(keras.applications.MobileNetV2(weights=None, alpha=1.0), tmp_path / "v2.h5")
    with pytest.raises(WeightsMismatchError) as err:
        kl.MobileNetV2(alpha=0.5, weights=str(tmp_path / "v2.h5"))
    message = str(err.value)
    assert "'Conv1'" in message
    assert "(3, 3, 3, 16)" in message and "(3, 3, 3, 32)" in message


def test_wrong_architecture_is_refused(tmp_path):
    save_legacy_h5(keras.applications.MobileNet(weights=None), tmp_path / "v1.h5")
    with pytest.raises(WeightsMismatchError, match=r"layer 'expanded_conv_project' expects \(1, 1, 32, 16\).*'conv_pw_1' has \(1, 1, 32, 64\)"):
        kl.MobileNetV2(weights=str(tmp_path / "v1.h5"))


def test_no_top_file_into_top_model_names_missing_layer(tmp_path):
    save_legacy_h5(keras.applications.MobileNetV2(weights=None, include_top=False), tmp_path / "nt.h5")
    with pytest.raises(WeightsMismatchError, match="'predictions' has no weights in the file"):
        kl.MobileNetV2(weights=str(tmp_path / "nt.h5"))


def test_missing_and_non_h5_weights(tmp_path):
    with pytest.raises(FileNotFoundError):
        kl.MobileNet(weights=str(tmp_path / "nope.h5"))
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(WeightsMismatchError, match="not a Keras weights file"):
        kl.MobileNet(weights=str(tmp_path / "text.h5"))


@pytest.mark.parametrize("family", ["MobileNet", "MobileNetV2"])
@pytest.mark.parametrize("style", ["tf", "torch"])
def test_any_input_size_without_top(family, style):
    model = getattr(kl, family)(include_top=False, style=style)
    for size in [(32, 32), (33, 47), (225, 161)]:
        out = model(np.zeros((1,) + size + (3,), "float32"))
        assert out.shape[0] == 1 and out.shape[-1] in (1024, 1280)
    with pytest.raises(ValueError, match="at least 32"):
        getattr(kl, family)(input_shape=(31, 64, 3), include_top=False)


def test_torch_style_pads_symmetrically_and_uses_pytorch_epsilon():
    model = kl.MobileNetV2(style="torch")
    pad = model.get_layer("block_1_pad")
    assert pad.padding == ((1, 1), (1, 1))
    assert model.get_layer("Conv1_pad").padding == ((1, 1), (1, 1))
    assert model.get_layer("bn_Conv1").epsilon == 1e-5
    tf_model = kl.MobileNetV2(style="tf")
    assert tf_model.get_layer("block_1_pad").padding == ((0, 1), (0, 1))
    assert tf_model.get_layer("bn_Conv1").epsilon == 1e-3
    with pytest.raises(ValueError, match="style"):
        kl.MobileNet(style="caffe")


@pytest.mark.parametrize("family", ["MobileNet", "MobileNetV2"])
def test_models_train(family):
    keras.utils.set_random_seed(0)
    model = getattr(kl, family)(input_shape=(32, 32, 3), alpha=0.35 if family == "MobileNetV2" else 0.25, classes=3)
    # eager: tracing the training graph takes longer than the four steps
    # (the graph path is trained by tests/training/test_finetune.py)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", run_eagerly=True)
    x = np.random.default_rng(0).uniform(-1, 1, (12, 32, 32, 3)).astype("float32")
    y = np.arange(12) % 3
    history = model.fit(x, y, epochs=4, batch_size=12, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0], losses
