"""Writing Keras weights files, atomically, in the legacy .h5 layout.

The layout is that of keras.applications' official files (`layer_names` on
the root, `weight_names` on each layer group), which `model.load_weights`
reads topologically or `by_name=True`.
"""

import json
import os
import tempfile

import h5py
import keras
import numpy as np

from keras_lightnets.weights import METADATA_ATTR


def write_weights(path, layer_weights, metadata, overwrite=False):
    """Writes `[(layer_name, [(weight_name, array)])]` to `path`.

    The file is written next to `path` under a temporary name and renamed
    into place, so an interrupted run never leaves a partial file.
    `metadata` (JSON-serialisable) is stored as the `keras_lightnets`
    attribute, for `keras_lightnets.from_h5`.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists (use --force to replace it)")
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".", suffix=".h5.tmp")
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["layer_names"] = np.array([name.encode("utf8") for name, _ in layer_weights])
            f.attrs["backend"] = keras.backend.backend().encode("utf8")
            f.attrs["keras_version"] = keras.__version__.encode("utf8")
            f.attrs[METADATA_ATTR] = json.dumps(metadata, sort_keys=True)
            for layer_name, weights in layer_weights:
                group = f.create_group(layer_name)
                group.attrs["weight_names"] = np.array([n.encode("utf8") for n, _ in weights])
                for weight_name, array in weights:
                    group.create_dataset(weight_name, data=array)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
