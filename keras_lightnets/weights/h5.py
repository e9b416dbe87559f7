"""The Keras weights file format: legacy .h5 layout plus the keras-lightnets record.

The layout is that of keras.applications' official files (`layer_names` on
the root or under `model_weights`, `weight_names` on each layer group), which
`model.load_weights` reads topologically or `by_name=True`. Files written
here also carry a JSON record (attribute `keras_lightnets`): the arch, the
builder and its arguments, the eval preprocessing and the source checkpoint,
so that `keras_lightnets.from_h5` can rebuild the right model.
"""

import hashlib
import json
import os

import h5py
import numpy as np

from keras_lightnets.errors import LightnetsError

RECORD_ATTR = "keras_lightnets"
RECORD_FORMAT = 1


class WeightsMismatchError(LightnetsError, ValueError):
    """A weights file does not fit the model it is loaded into, or is no weights file."""


def sha256_of(path, chunk=1 << 22):
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _decode(names):
    return [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in names]


def legacy_group(h5file):
    """The group holding `layer_names` in a legacy Keras .h5, or None."""
    group = h5file["model_weights"] if "model_weights" in h5file else h5file
    return group if "layer_names" in group.attrs else None


def read_legacy_h5(group):
    """Returns `[(layer_name, [arrays])]` for the layers that hold weights."""
    saved = []
    for name in _decode(group.attrs["layer_names"]):
        layer_group = group[name]
        weight_names = _decode(layer_group.attrs.get("weight_names", []))
        if weight_names:
            saved.append((name, [np.asarray(layer_group[w]) for w in weight_names]))
    return saved


def read_layer_weights(path):
    """`[(layer_name, [arrays])]` of a legacy .h5 file, or None for another format."""
    with h5py.File(path, "r") as h5file:
        group = legacy_group(h5file)
        return read_legacy_h5(group) if group is not None else None


def check_weights_file(path):
    """Raises FileNotFoundError / WeightsMismatchError unless `path` is an HDF5 file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if not h5py.is_hdf5(path):
        raise WeightsMismatchError(f"{path} is not a Keras weights file (HDF5)")
    return path


def read_record(path):
    """The record a keras-lightnets weights file carries (a dict)."""
    path = check_weights_file(path)
    with h5py.File(path, "r") as f:
        raw = f.attrs.get(RECORD_ATTR)
    if raw is None:
        raise WeightsMismatchError(
            f"{path} was not written by the keras-lightnets converter; build the model yourself and pass weights=PATH"
        )
    try:
        return json.loads(raw)
    except ValueError:
        raise WeightsMismatchError(f"{path}: its keras-lightnets record is not valid JSON") from None


def layer_variables(layer):
    """A layer's variables in legacy .h5 order: trainable, then non-trainable."""
    return list(layer.trainable_weights) + list(layer.non_trainable_weights)


def model_layer_weights(model):
    """`[(layer_name, [(weight_name, array)])]` of a model, in legacy .h5 order."""
    result = []
    for layer in model.layers:
        variables = layer_variables(layer)
        if variables:
            result.append(
                (layer.name, [(f"{layer.name}/{v.name}:0", np.asarray(v.numpy())) for v in variables])
            )
    return result


def create_from_arrays(pairs):
    """Creates deferred variables (those of a model built inside
    `keras.StatelessScope(initialize_variables=False)`) with the given values.

    Random initial values, which loading would overwrite, are most of the
    time of building a model; here each variable is created once, from its
    array. The model's other deferred variables (e.g. dropout seeds) get
    their own initialisers. Variables that already exist (e.g. those of
    another model under `input_tensor`) are assigned. A Keras that ignored
    these initialisers would leave other values: that is checked, and the
    arrays are then assigned.

    Args:
        pairs: iterable of `(variable, array)`.
    """
    import keras

    from keras_lightnets import keras_internals as internals

    deferred, existing = [], []
    for variable, array in pairs:
        # a deferred variable keeps its initialiser until it is created
        (deferred if internals.is_deferred(variable) else existing).append((variable, array))
    for variable, array in deferred:
        internals.set_initializer(variable, _ArrayValue(array))
    with keras.StatelessScope():  # leaving the outermost scope creates the deferred variables
        pass
    if deferred and not np.array_equal(keras.ops.convert_to_numpy(deferred[0][0].value), deferred[0][1]):
        existing += deferred
    for variable, array in existing:
        variable.assign(array)


class _ArrayValue:
    """An initializer returning a given array, in the variable's dtype."""

    def __init__(self, array):
        self.array = array

    def __call__(self, shape, dtype=None):
        import numpy as np

        return np.asarray(self.array, dtype=dtype)


def write_weights(path, layer_weights, record, overwrite=False):
    """Writes `[(layer_name, [(weight_name, array)])]` and `record` to `path`.

    The file is written next to `path` under a temporary name and renamed
    into place, so an interrupted run never leaves a partial file and an
    existing file is replaced only by a complete one.
    """
    import keras

    from keras_lightnets.files import check_output_path, write_atomically

    path = check_output_path(path, overwrite=overwrite)

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            f.attrs["layer_names"] = np.array([name.encode("utf8") for name, _ in layer_weights])
            f.attrs["backend"] = keras.backend.backend().encode("utf8")
            f.attrs["keras_version"] = keras.__version__.encode("utf8")
            f.attrs[RECORD_ATTR] = json.dumps(record, sort_keys=True)
            for layer_name, weights in layer_weights:
                group = f.create_group(layer_name)
                group.attrs["weight_names"] = np.array([n.encode("utf8") for n, _ in weights])
                for weight_name, array in weights:
                    group.create_dataset(weight_name, data=array)

    # Named .{name}.{pid}.{random}.tmp; removed on errors, SIGINT and SIGTERM, and by the
    # next write into the folder once its writer is gone (SIGKILL).
    return write_atomically(path, write)


def save_model_weights(model, path, record, overwrite=False):
    """Writes a built model's weights with `record`, atomically."""
    return write_weights(path, model_layer_weights(model), record, overwrite=overwrite)
