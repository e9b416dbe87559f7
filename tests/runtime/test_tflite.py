"""TFLite flatbuffers: the runner's batch sizes, and the cache of compiled weights files."""

import hashlib
import os

import keras
import numpy as np
import pytest
from keras import layers

from keras_lightnets.runtime import tflite
from keras_lightnets.runtime.folding import fold_batchnorm

SIZE = (16, 16)
ARCH = "mobilenet_v2"  # the arch a compiled entry is bound to (with the weights' sha256)


def small_model(size=SIZE, seed=0):
    inputs = keras.Input((*size, 3))
    x = layers.Conv2D(8, 3, strides=2, use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(layers.DepthwiseConv2D(3, padding="same")(x))
    model = keras.Model(inputs, layers.Dense(10)(x))
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.fixture(scope="module")
def model_and_flatbuffer():
    model = small_model()
    return model, tflite.tflite_bytes(fold_batchnorm(model))


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """A stand-in weights file (only its bytes matter here) and an empty cache."""
    monkeypatch.setenv("KERAS_LIGHTNETS_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "model.h5"
    path.write_bytes(b"weights, version 1")
    return path


def test_runner_resizes_the_batch_and_keeps_a_few_interpreters(model_and_flatbuffer):
    model, content = model_and_flatbuffer
    runner = tflite.Runner(content, threads=1, cache_size=2)
    assert runner.input_shape == (None, *SIZE, 3)
    rng = np.random.default_rng(1)
    for batch in (1, 3, 2, 3, 5, 1):
        x = rng.uniform(-1, 1, (batch, *SIZE, 3)).astype("float32")
        np.testing.assert_allclose(runner(x), np.asarray(model(x, training=False)), rtol=1e-5, atol=1e-6)
        assert len(runner._interpreters) <= 2
    with pytest.raises(ValueError):  # a static side is not resized
        runner(np.zeros((1, 17, 16, 3), "float32"))


def test_conversion_freezes_unfolded_variables():
    """Layers `fold_batchnorm` runs as they are keep their variables in the
    Keras model; the flatbuffer must hold their values, not uninitialised
    variables (a Normalization layer: mean and variance are variables)."""
    inputs = keras.Input((8, 8, 3))
    norm = layers.Normalization(mean=[10.0, 20.0, 30.0], variance=[4.0, 9.0, 16.0])
    model = keras.Model(inputs, layers.Conv2D(4, 3)(norm(inputs)))
    x = np.random.default_rng(2).uniform(0, 40, (2, 8, 8, 3)).astype("float32")
    got = tflite.Runner(tflite.tflite_bytes(model))(x)
    np.testing.assert_allclose(got, np.asarray(model(x)), rtol=1e-5, atol=1e-5)


def test_compiled_flatbuffer_round_trip(model_and_flatbuffer, weights):
    _, content = model_and_flatbuffer
    assert tflite.load_compiled(weights, SIZE, ARCH) is None
    path = tflite.save_compiled(weights, SIZE, content, ARCH)
    assert os.path.dirname(path) == tflite.compiled_folder()
    assert os.path.basename(path).startswith(f"{ARCH}-" + hashlib.sha256(b"weights, version 1").hexdigest() + "-16x16-")
    runner = tflite.load_compiled(weights, SIZE, ARCH)
    x = np.random.default_rng(3).uniform(-1, 1, (2, *SIZE, 3)).astype("float32")
    np.testing.assert_array_equal(runner(x), tflite.Runner(content)(x))
    assert tflite.load_compiled(weights, (32, 32), ARCH) is None  # another input size: its own file
    weights.write_bytes(b"weights, version 2")
    assert tflite.load_compiled(weights, SIZE, ARCH) is None  # a changed file never finds the old flatbuffer
    assert os.path.exists(path)


def other_weights(content, model):
    """`content` with the classifier's bias zeroed: a valid flatbuffer computing something else."""
    bias = np.asarray(model.layers[-1].bias).tobytes()
    assert content.count(bias) == 1
    return content.replace(bias, bytes(len(bias)))


@pytest.mark.parametrize(
    "damage",
    [
        lambda b, model: b[: len(b) // 2],
        lambda b, model: b"",
        lambda b, model: os.urandom(len(b)),
        other_weights,
    ],
    ids=["truncated", "empty", "random", "other-weights"],
)
def test_corrupt_compiled_flatbuffer_is_ignored_and_removed(model_and_flatbuffer, weights, damage):
    model, content = model_and_flatbuffer
    path = tflite.save_compiled(weights, SIZE, content, ARCH)
    with open(path, "rb") as f:
        damaged = damage(f.read(), model)
    with open(path, "wb") as f:
        f.write(damaged)
    assert tflite.load_compiled(weights, SIZE, ARCH) is None
    assert not os.path.exists(path)
    tflite.save_compiled(weights, SIZE, content, ARCH)
    assert tflite.load_compiled(weights, SIZE, ARCH) is not None


def test_an_entry_of_other_weights_renamed_into_place_is_refused(model_and_flatbuffer, weights, tmp_path):
    """The side record binds an entry to its weights, arch, size and version:
    another weights file's entry (flatbuffer and side record, each intact)
    renamed to this file's name is deleted, never served."""
    model, content = model_and_flatbuffer
    other = tmp_path / "other.h5"
    other.write_bytes(b"weights, version 2")
    path = tflite.save_compiled(other, SIZE, other_weights(content, model), ARCH)
    mine, theirs = (hashlib.sha256(w.read_bytes()).hexdigest() for w in (weights, other))
    moved = []
    for name in (path, path[: -len(".tflite")] + ".json"):
        target = os.path.join(os.path.dirname(name), os.path.basename(name).replace(theirs, mine))
        os.replace(name, target)
        moved.append(target)
    assert tflite.load_compiled(weights, SIZE, ARCH) is None
    assert not any(os.path.exists(name) for name in moved)


def test_a_flatbuffer_with_other_weights_still_runs(model_and_flatbuffer):
    """What the digest check guards against: TFLite itself takes the damaged file."""
    model, content = model_and_flatbuffer
    x = np.random.default_rng(4).uniform(-1, 1, (1, *SIZE, 3)).astype("float32")
    assert np.abs(tflite.Runner(other_weights(content, model))(x) - tflite.Runner(content)(x)).max() > 1e-3


def test_compiled_flatbuffer_of_another_input_is_refused(weights):
    """A file named for 16x16 whose flatbuffer takes 24x24 is not used."""
    other = tflite.tflite_bytes(fold_batchnorm(small_model((24, 24))))
    path = tflite.save_compiled(weights, SIZE, other, ARCH)
    assert tflite.load_compiled(weights, SIZE, ARCH) is None and not os.path.exists(path)


def test_interpreters_take_tensorflows_thread_budget(model_and_flatbuffer, monkeypatch):
    """`TF_NUM_INTRAOP_THREADS` limits the interpreters too; without it (or
    with a value that is not a positive count) they use every usable core."""
    _, content = model_and_flatbuffer
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    assert tflite.Runner(content).threads == 1 and tflite.Runner(content, threads=2).threads == 2
    for value in ("0", "two", ""):
        monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", value)
        assert tflite.Runner(content).threads == tflite.usable_cores()
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS")
    assert tflite.Runner(content).threads == len(os.sched_getaffinity(0))
