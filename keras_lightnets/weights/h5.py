"""The Keras weights file format: legacy .h5 layout plus the keras-lightnets record.

The layout is that of keras.applications' official files (`layer_names` on
the root or under `model_weights`, `weight_names` on each layer group), which
`model.load_weights` reads topologically or `by_name=True`. Files written
here also carry a JSON record (attribute `keras_lightnets`): the arch, the
builder and its arguments, the eval preprocessing and the source checkpoint,
so that `keras_lightnets.from_h5` can rebuild the right model.

Every .h5 the package reads goes through `open_weights` (`WeightsFile`): its
structure is checked before any data is read, and only the weights asked for
are read; the record is checked by `keras_lightnets.weights.record`.
"""

import dataclasses
import functools
import hashlib
import json
import math
import os
import stat

import h5py
import numpy as np

from keras_lightnets.errors import LightnetsError
from keras_lightnets.files import (
    NotRegularFileError,
    file_kind,
    open_regular,
    safe_text,
)
from keras_lightnets.weights.record import (
    MAX_RECORD_BYTES,
    RecordError,
    check_record,
    parse_json,
)

RECORD_ATTR = "keras_lightnets"


class WeightsMismatchError(LightnetsError, ValueError):
    """A weights file does not fit the model it is loaded into, or is no weights file."""


def sha256_of(path, chunk=1 << 22):
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open_regular(path) as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------- the one reader
# An .h5 is untrusted: HDF5 can keep a dataset's bytes in another file (external
# raw storage), link to another file (external links), assemble a dataset from
# other files (virtual datasets) or leave it unallocated (a tiny file claiming
# gigabytes). The structure is checked before any data is read.

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_FLOAT_SIZES = (2, 4, 8)
_FILTERS = {h5py.h5z.FILTER_DEFLATE: "deflate", h5py.h5z.FILTER_SHUFFLE: "shuffle",
            h5py.h5z.FILTER_FLETCHER32: "fletcher32"}  # lossless, built into HDF5
_MAX_DEFLATE_RATIO = 1100  # deflate cannot expand data more than ~1032 times
_MAX_EXPANSION, _MAX_EXPANSION_SLACK = 4, 64 << 20  # weights read: at most 4 x the file + 64 MB
_MAX_OBJECTS = 1_000_000
_MAX_NAMES = 100_000
_MAX_NAME_LENGTH = 1024
_MAX_RANK = 8
# Where relative external-file and virtual-dataset paths would resolve: nowhere.
_NOWHERE = os.path.join(os.devnull, "keras-lightnets-reads-no-other-file").encode()


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A weight's name, shape and dtype, known before its data is read."""

    name: str
    shape: tuple
    dtype: np.dtype


def _decode_name(value, where):
    if isinstance(value, (bytes, np.bytes_)):
        try:
            value = bytes(value).decode("utf8")
        except UnicodeDecodeError:
            raise WeightsMismatchError(f"{where}: a name that is not UTF-8") from None
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_NAME_LENGTH or "\0" in value:
        raise WeightsMismatchError(f"{where}: a name that is empty, too long or not text")
    return value


def _dtype_text(dtype):
    if dtype.names or dtype.kind == "c":
        return "compound (e.g. complex) values"
    return f"{safe_text(dtype, 40)} values"


class WeightsFile:
    """A Keras weights file (.h5), opened for reading after its structure is checked.

    Opening refuses, before any data is read: anything but a regular HDF5
    file; soft, external and user-defined links anywhere in the file; datasets
    with external raw storage or a virtual layout. For a legacy-layout file
    (`layer_names`: keras.applications' files, the converter's), every weight
    the layers list must be a float16/32/64 dataset, stored in the file,
    compressed (if at all) with lossless built-in filters, and all of them
    together at most 4 x the file's size + 64 MB; `layers` then gives their
    names, shapes and dtypes, and `arrays` reads a layer's data when asked.

    Raises:
        FileNotFoundError, WeightsMismatchError: one-line messages naming the file.
    """

    def __init__(self, path):
        self.path = check_weights_file(path)
        self.label = safe_text(self.path, 200)
        self._datasets = {}  # (layer group path, weight name) -> dataset id, once checked
        try:
            self._file = open_regular(self.path)
        except NotRegularFileError as err:  # a FIFO or device swapped in since the check
            raise WeightsMismatchError(str(err)) from None
        except OSError as err:
            raise WeightsMismatchError(f"{self.label}: cannot read ({safe_text(err.strerror or err, 80)})") from None
        try:
            self._size = os.fstat(self._file.fileno()).st_size
            if not self._has_signature():
                raise WeightsMismatchError(f"{self.label} is not a Keras weights file (HDF5)")
            try:
                self._h5 = h5py.File(self._file, "r")
            except (OSError, ValueError, RuntimeError, KeyError) as err:
                raise WeightsMismatchError(f"{self.label}: corrupt or truncated HDF5 file ({safe_text(err, 120)})") from None
            self._dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
            self._dapl.set_efile_prefix(_NOWHERE)
            self._dapl.set_virtual_prefix(_NOWHERE)
            self._guard(self._check_links_and_storage)
            self.group = self._guard(lambda: legacy_group(self._h5))
        except BaseException:
            self.close()
            raise

    def _has_signature(self):
        # The superblock is at 0, or after a user block of 512, 1024, 2048, ... bytes.
        offset = 0
        while offset + 8 <= self._size:
            self._file.seek(offset)
            if self._file.read(8) == _HDF5_SIGNATURE:
                return True
            offset = max(512, offset * 2)
        return False

    def _guard(self, read):
        """Runs `read`, turning what HDF5 raises on a corrupt file into one line."""
        try:
            return read()
        except (WeightsMismatchError, RecordError):
            raise
        except (OSError, ValueError, RuntimeError, KeyError, TypeError, IndexError) as err:
            raise WeightsMismatchError(f"{self.label}: corrupt HDF5 file ({safe_text(err, 120)})") from None

    def _refuse(self, where, what):
        return WeightsMismatchError(f"{self.label}: {safe_text(where, 80)} {what}")

    @functools.cached_property
    def layers(self):
        """`[(layer name, [DatasetInfo])]` of the layers with weights, checked
        (nothing read); None for a file without the legacy layout."""
        return self._guard(self._list_layers) if self.group is not None else None

    # ---------------------------------------------------------------- structure

    def _check_links_and_storage(self):
        """Walks every group through its links, without following any link but a
        hard one and without reading data."""
        visited, pending, count = set(), [(self._h5.id, "/")], 0
        while pending:
            group, where = pending.pop()
            for name in group:
                count += 1
                if count > _MAX_OBJECTS:
                    raise self._refuse(where, f"holds more than {_MAX_OBJECTS} links")
                path = where + name.decode("utf8", "backslashreplace")
                kind = group.links.get_info(name).type
                if kind != h5py.h5l.TYPE_HARD:
                    what = {h5py.h5l.TYPE_SOFT: "a soft link", h5py.h5l.TYPE_EXTERNAL: "a link to another file"}
                    raise self._refuse(path, f"is {what.get(kind, 'a user-defined link')}; "
                                             "a weights file holds only its own groups and datasets")
                info = h5py.h5o.get_info(group, name)
                if info.addr in visited:
                    continue
                visited.add(info.addr)
                if info.type == h5py.h5o.TYPE_GROUP:
                    pending.append((h5py.h5g.open(group, name), path + "/"))
                elif info.type == h5py.h5o.TYPE_DATASET:
                    self._check_storage(h5py.h5d.open(group, name, self._dapl), path)

    def _check_storage(self, dataset, where):
        plist = dataset.get_create_plist()
        if plist.get_layout() == h5py.h5d.VIRTUAL:
            raise self._refuse(where, "is a virtual dataset (made of other files); refused")
        if plist.get_external_count():
            raise self._refuse(where, "keeps its data in another file (external storage); refused")

    def _names(self, node, attribute, where):
        """The names listed in a string-array attribute, checked before they are read."""
        if attribute not in node.attrs:
            return []
        attr = h5py.h5a.open(node.id, attribute.encode())
        if attr.shape and attr.shape[0] == 0:  # Keras writes an empty float array for a layer without weights
            return []
        if len(attr.shape) > 1 or attr.dtype.kind not in "SOU" or attr.get_type().get_class() != h5py.h5t.STRING:
            raise self._refuse(where, f"has a '{attribute}' attribute that is not a list of names")
        if (attr.shape[0] if attr.shape else 1) > _MAX_NAMES or attr.get_storage_size() > _MAX_NAMES * _MAX_NAME_LENGTH:
            raise self._refuse(where, f"lists more than {_MAX_NAMES} names in '{attribute}'")
        values = np.atleast_1d(node.attrs[attribute])
        names = [_decode_name(v, f"{self.label}: {attribute}") for v in values]
        if len(set(names)) != len(names):
            raise self._refuse(where, f"lists a name twice in '{attribute}'")
        return names

    def _list_layers(self):
        layers, total = [], 0
        budget = _MAX_EXPANSION * self._size + _MAX_EXPANSION_SLACK
        for layer_name in self._names(self.group, "layer_names", "the file"):
            try:
                layer = self.group[layer_name]
            except KeyError:
                raise self._refuse(layer_name, "is listed in layer_names but absent") from None
            if not isinstance(layer, h5py.Group):
                raise self._refuse(layer_name, "is listed in layer_names but is not a group")
            weights = []
            for weight_name in self._names(layer, "weight_names", layer_name):
                info = self._weight(layer, weight_name)
                total += math.prod(info.shape) * info.dtype.itemsize
                if total > budget:
                    raise self._refuse(weight_name, f"takes the weights past {budget} bytes, more than a file "
                                                    f"of {self._size} bytes can hold")
                weights.append(info)
            if weights:
                layers.append((layer_name, weights))
        return layers

    def _weight(self, layer, weight_name):
        """The checked dataset `weight_name` of a layer group (nothing read)."""
        where = f"{layer.name.lstrip('/')}/{weight_name}"
        try:
            dataset = h5py.h5d.open(layer.id, weight_name.encode(), self._dapl)
        except (KeyError, OSError, ValueError, TypeError):
            raise self._refuse(where, "is listed in weight_names but is not a dataset") from None
        self._check_storage(dataset, where)
        dtype, shape = dataset.dtype, tuple(dataset.shape)
        if dataset.get_type().get_class() != h5py.h5t.FLOAT or dtype.kind != "f" or dtype.itemsize not in _FLOAT_SIZES:
            raise self._refuse(where, f"holds {_dtype_text(dtype)}, not float16/32/64; refused")
        if len(shape) > _MAX_RANK:
            raise self._refuse(where, f"has {len(shape)} dimensions")
        plist = dataset.get_create_plist()
        filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        unknown = [code for code in filters if code not in _FILTERS]
        if unknown:
            raise self._refuse(where, f"is stored with HDF5 filter {unknown[0]}; only deflate, shuffle "
                                      "and fletcher32 are read")
        declared = math.prod(shape) * dtype.itemsize
        stored = dataset.get_storage_size()
        if h5py.h5z.FILTER_DEFLATE in filters:
            fits = declared == 0 or 0 < stored and declared <= _MAX_DEFLATE_RATIO * stored + 1024
        else:
            fits = stored == declared if plist.get_layout() != h5py.h5d.CHUNKED else stored >= declared
        if not fits:
            raise self._refuse(where, f"declares {declared} bytes but the file stores {stored} for it")
        self._datasets[layer.name, weight_name] = dataset
        return DatasetInfo(weight_name, shape, dtype)

    def check_all_datasets(self):
        """Applies the weights' checks to every dataset of the file (for layouts
        other than the legacy one, which Keras itself then reads)."""

        def visit(name, node):
            if isinstance(node, h5py.Dataset):
                self._weight(node.parent, node.name.rpartition("/")[2])

        self._guard(lambda: self._h5.visititems(visit))

    # ---------------------------------------------------------------- contents

    def arrays(self, layer_name):
        """The arrays of a layer listed in `layers`, read now, in the file's float dtype."""
        weights = dict(self.layers)[layer_name]
        group = self.group[layer_name].name
        arrays = []
        for info in weights:
            array = np.empty(info.shape, info.dtype.newbyteorder("="))
            if array.size:
                dataset = self._datasets[group, info.name]
                self._guard(lambda: dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, array))  # noqa: B023
            arrays.append(array)
        return arrays

    def record(self):
        """The keras-lightnets record (checked by `keras_lightnets.weights.record`), or None."""
        if RECORD_ATTR not in self._h5.attrs:
            return None

        def read():
            attr = h5py.h5a.open(self._h5.id, RECORD_ATTR.encode())
            if attr.shape not in ((), (1,)) or attr.get_type().get_class() != h5py.h5t.STRING:
                raise RecordError("not a JSON string")
            if attr.get_storage_size() > MAX_RECORD_BYTES:
                raise RecordError(f"more than {MAX_RECORD_BYTES} bytes")
            value = self._h5.attrs[RECORD_ATTR]
            return np.ravel(value)[0] if isinstance(value, np.ndarray) else value

        try:
            return check_record(parse_json(self._guard(read)))
        except RecordError as err:
            raise WeightsMismatchError(f"{self.label}: invalid keras-lightnets record: {err}") from None

    def close(self):
        h5file = getattr(self, "_h5", None)
        if h5file is not None:
            h5file.close()
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_weights(path):
    """A checked `WeightsFile` (a context manager); see its documentation."""
    return WeightsFile(path)


def legacy_group(h5file):
    """The group holding `layer_names` in a legacy Keras .h5, or None."""
    group = h5file.get("model_weights") if "model_weights" in h5file else h5file
    return group if isinstance(group, h5py.Group) and "layer_names" in group.attrs else None


def read_layer_weights(path):
    """`[(layer_name, [arrays])]` of a legacy .h5 file, or None for another layout."""
    with open_weights(path) as weights:
        if weights.layers is None:
            return None
        return [(name, weights.arrays(name)) for name, _ in weights.layers]


def check_weights_file(path):
    """`path` if it names a regular file; FileNotFoundError or WeightsMismatchError otherwise."""
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"weights file not found: {safe_text(path, 200)}") from None
    except OSError as err:
        raise WeightsMismatchError(f"{safe_text(path, 200)}: cannot read ({err.strerror or err})") from None
    if not stat.S_ISREG(mode):
        raise WeightsMismatchError(f"{safe_text(path, 200)} is {file_kind(mode)}, not a weights file")
    return path


def read_record(path):
    """The checked record a keras-lightnets weights file carries (a dict)."""
    with open_weights(path) as weights:
        record = weights.record()
        if record is None:
            raise WeightsMismatchError(
                f"{safe_text(path, 200)} was not written by the keras-lightnets converter; "
                "build the model yourself and pass weights=PATH"
            )
        if not weights.layers:  # the weights' structure is checked too, before anything is built
            raise WeightsMismatchError(f"{weights.label} holds no weights (no legacy Keras layer_names)")
    return record


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
    existing file is replaced only by a complete one. A record the reader
    would refuse is not written (RecordError); `record=None` writes none
    (a file like keras.applications' own).
    """
    import keras

    from keras_lightnets.files import check_output_path, write_atomically

    if record is not None:
        check_record(json.loads(json.dumps(record)))
    path = check_output_path(path, overwrite=overwrite)

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            f.attrs["layer_names"] = np.array([name.encode("utf8") for name, _ in layer_weights])
            f.attrs["backend"] = keras.backend.backend().encode("utf8")
            f.attrs["keras_version"] = keras.__version__.encode("utf8")
            if record is not None:
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
