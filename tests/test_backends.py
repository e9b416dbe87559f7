"""The builders use layers and keras.ops only: the torch backend builds them too."""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

import keras_lightnets as kl
from tests.helpers import REPO, randomize_keras_weights

SCRIPT = """
import sys, numpy as np
import keras, keras_lightnets as kl
assert keras.backend.backend() == "torch"
weights, inputs, out, name, style = sys.argv[1:6]
model = getattr(kl, name)(weights=weights, classifier_activation=None, style=style)
np.save(out, keras.ops.convert_to_numpy(model(np.load(inputs), training=False)))
"""


def run_under_torch(script, model, x, tmp_path, *args):
    """Runs `script WEIGHTS INPUTS OUTPUTS ARGS` with the torch backend on
    `model`'s weights and the inputs `x`; returns the array it saved."""
    with h5py.File(tmp_path / "w.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", script, tmp_path / "w.h5", tmp_path / "x.npy", tmp_path / "y.npy", *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return np.load(tmp_path / "y.npy")


@pytest.mark.parametrize("name,style", [("MobileNet", "tf"), ("MobileNetV2", "torch")])
def test_torch_backend_builds_and_matches_tensorflow(name, style, tmp_path):
    model = getattr(kl, name)(classifier_activation=None, style=style)
    randomize_keras_weights(model, seed=3)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype("float32")
    got = run_under_torch(SCRIPT, model, x, tmp_path, name, style)
    np.testing.assert_allclose(got, np.asarray(model(x)), atol=1e-4, rtol=0)


PREDICTOR_SCRIPT = """
import sys, numpy as np
import keras, keras_lightnets as kl
from keras_lightnets.inference import Predictor
assert keras.backend.backend() == "torch"
weights, inputs, out = sys.argv[1:4]
model = kl.MobileNetV2((64, 64, 3), alpha=0.35, weights=weights, classifier_activation=None, style="torch")
predictor = Predictor(model)
assert predictor.runtime == "tf" and predictor.flatbuffer is None, predictor.runtime
try:
    Predictor(model, runtime="tflite")
    raise SystemExit("runtime='tflite' accepted under torch")
except ValueError:
    pass
x = np.load(inputs)
np.save(out, np.concatenate([predictor(x[:1]), predictor(x)]))
"""


def test_predictor_on_the_torch_backend_runs_the_backend(tmp_path):
    """Under torch, `Predictor` runs the folded graph with the backend ("tf"
    runtime: no TFLite), at two batch sizes, as TensorFlow's Keras model computes."""
    model = kl.MobileNetV2((64, 64, 3), alpha=0.35, classifier_activation=None, style="torch")
    randomize_keras_weights(model, seed=4)
    x = np.random.default_rng(1).uniform(-1, 1, (3, 64, 64, 3)).astype("float32")
    expected = np.asarray(model(x, training=False))
    got = run_under_torch(PREDICTOR_SCRIPT, model, x, tmp_path)
    np.testing.assert_allclose(got, np.concatenate([expected[:1], expected]), atol=1e-4, rtol=0)
