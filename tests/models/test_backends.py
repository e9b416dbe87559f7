"""The builders use layers and keras.ops only: the torch backend builds them too."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

import keras_lightnets as kl
from tests.helpers import REPO, randomize_keras_weights

# One torch-backend process runs every case (it imports torch and Keras once).
SCRIPT = """
import json, sys, numpy as np
import keras, keras_lightnets as kl
from keras_lightnets.runtime.predictor import Predictor
assert keras.backend.backend() == "torch"
for case in json.loads(sys.argv[1]):
    x = np.load(case["inputs"])
    if case["name"] == "Predictor":
        model = kl.MobileNetV2((64, 64, 3), alpha=0.35, weights=case["weights"], classifier_activation=None,
                               style="torch")
        predictor = Predictor(model)
        assert predictor.runtime == "tf" and predictor.flatbuffer is None, predictor.runtime
        try:
            Predictor(model, runtime="tflite")
            raise SystemExit("runtime='tflite' accepted under torch")
        except ValueError:
            pass
        y = np.concatenate([predictor(x[:1]), predictor(x)])
    else:
        model = getattr(kl, case["name"])(weights=case["weights"], classifier_activation=None, style=case["style"])
        y = keras.ops.convert_to_numpy(model(x, training=False))
    np.save(case["out"], y)
"""


def tensorflow_cases():
    """`{case: (TensorFlow's model, inputs)}`, random weights."""
    cases = {}
    for seed, (name, style) in enumerate([("MobileNet", "tf"), ("MobileNetV2", "torch")], start=3):
        model = getattr(kl, name)(classifier_activation=None, style=style)
        randomize_keras_weights(model, seed=seed)
        cases[name, style] = model, np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype("float32")
    model = kl.MobileNetV2((64, 64, 3), alpha=0.35, classifier_activation=None, style="torch")
    randomize_keras_weights(model, seed=5)
    cases["Predictor", None] = model, np.random.default_rng(1).uniform(-1, 1, (3, 64, 64, 3)).astype("float32")
    return cases


@pytest.fixture(scope="module")
def under_torch(tmp_path_factory):
    """`{case: (TensorFlow's outputs, the torch backend's outputs)}` on the same weights and inputs."""
    folder = tmp_path_factory.mktemp("torch_backend")
    jobs, expected = [], {}
    for index, (case, (model, x)) in enumerate(tensorflow_cases().items()):
        files = {key: str(folder / f"{key}{index}.{ext}") for key, ext in (("weights", "h5"), ("inputs", "npy"), ("out", "npy"))}
        with h5py.File(files["weights"], "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)
        np.save(files["inputs"], x)
        jobs.append({"name": case[0], "style": case[1], **files})
        expected[case] = np.asarray(model(x, training=False))
    env = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(jobs)], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return {case: (expected[case], np.load(job["out"])) for case, job in zip(expected, jobs)}


@pytest.mark.parametrize("name,style", [("MobileNet", "tf"), ("MobileNetV2", "torch")])
def test_torch_backend_builds_and_matches_tensorflow(name, style, under_torch):
    expected, got = under_torch[name, style]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_predictor_on_the_torch_backend_runs_the_backend(under_torch):
    """Under torch, `Predictor` runs the folded graph with the backend ("tf"
    runtime: no TFLite), at two batch sizes, as TensorFlow's Keras model computes."""
    expected, got = under_torch["Predictor", None]
    np.testing.assert_allclose(got, np.concatenate([expected[:1], expected]), atol=1e-4, rtol=0)
