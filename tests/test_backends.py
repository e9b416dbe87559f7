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
name, weights, inputs, out = sys.argv[1:5]
model = getattr(kl, name)(weights=weights, classifier_activation=None, style=sys.argv[5])
np.save(out, keras.ops.convert_to_numpy(model(np.load(inputs), training=False)))
"""


@pytest.mark.parametrize("name,style", [("MobileNet", "tf"), ("MobileNetV2", "torch")])
def test_torch_backend_builds_and_matches_tensorflow(name, style, tmp_path):
    model = getattr(kl, name)(classifier_activation=None, style=style)
    randomize_keras_weights(model, seed=3)
    with h5py.File(tmp_path / "w.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, name, tmp_path / "w.h5", tmp_path / "x.npy", tmp_path / "y.npy", style],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), np.asarray(model(x)), atol=1e-4, rtol=0)
