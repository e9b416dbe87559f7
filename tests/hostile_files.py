"""Builders of hostile weights files, records, archives and folders (issue 23).

Each builder makes its input from a valid one inside the test (no binary
fixtures). Inputs that try to make HDF5 read another file point at `Marker`
files: a unique byte string, their access time set far in the past, so that a
test can show that no byte of them was read (the marker appears in no output,
the access time did not move).
"""

import bz2
import json
import os
import secrets
import shutil
import struct
import zipfile
import zlib

import h5py
import numpy as np

from bench.crafted_checkpoints import op_dict, op_str, op_tensor, pickle_of

RECORD_ATTR = "keras_lightnets"
LONG_AGO = 946684800  # 2000-01-01: reading a file moves its access time (relatime) past this


class Marker:
    """Files whose bytes no command may read: `raw` (bytes) and `h5` (an HDF5 file
    with a float32 dataset `/data` of `shape` holding the marker bytes)."""

    def __init__(self, folder, shape=(64,)):
        self.token = b"KLMARK" + secrets.token_hex(10).encode()
        count = int(np.prod(shape))
        raw = (self.token * (4 * count // len(self.token) + 1))[: 4 * count]
        self.raw = os.path.join(folder, "marker.bin")
        with open(self.raw, "wb") as f:
            f.write(raw)
        self.h5 = os.path.join(folder, "marker.h5")
        with h5py.File(self.h5, "w") as f:
            f.create_dataset("data", data=np.frombuffer(raw, "<f4").reshape(shape))
        self.reset()

    @property
    def paths(self):
        return (self.raw, self.h5)

    def reset(self):
        for path in self.paths:
            os.utime(path, (LONG_AGO, os.stat(path).st_mtime))

    def untouched(self):
        """Whether neither marker file was read since `reset`."""
        return all(os.stat(path).st_atime == LONG_AGO for path in self.paths)

    def found_in(self, *folders, texts=()):
        """Paths (or "output") of the files under `folders` and texts holding the marker."""
        found = [f"text {i}" for i, text in enumerate(texts) if self.token.decode() in text]
        for folder in folders:
            for root, _, names in os.walk(folder):
                for name in names:
                    path = os.path.join(root, name)
                    if path in self.paths or not os.path.isfile(path):
                        continue
                    with open(path, "rb") as f:
                        if self.token in f.read():
                            found.append(path)
        return found


def first_weight(path):
    """`(layer group, weight name, shape)` of the first weight of a legacy file."""
    with h5py.File(path, "r") as f:
        for layer in f.attrs["layer_names"]:
            names = f[layer.decode()].attrs["weight_names"]
            if len(names):
                name = names[0].decode()
                return layer.decode(), name, f[layer.decode()][name].shape
    raise ValueError(f"{path} has no weights")


def _replace_first_weight(base, out, make):
    """Copies `base` to `out` with its first weight replaced by `make(group, name, shape)`."""
    shutil.copyfile(base, out)
    layer, name, shape = first_weight(base)
    with h5py.File(out, "r+") as f:
        group = f[layer]
        del group[name]
        make(group, name, shape)
    return out


# ------------------------------------------------------------------ weights files
# name -> (builder(base, out, marker), fragment of the one-line refusal)


def _external(relative):
    def build(base, out, marker):
        def make(group, name, shape):
            target = os.path.relpath(marker.raw, os.path.dirname(out)) if relative else marker.raw
            group.create_dataset(name, shape=shape, dtype="<f4", external=[(target, 0, h5py.h5f.UNLIMITED)])

        return _replace_first_weight(base, out, make)

    return build


def _external_link(base, out, marker):
    return _replace_first_weight(base, out, lambda group, name, shape: group.__setitem__(
        name, h5py.ExternalLink(marker.h5, "/data")))


def _external_link_unused(base, out, marker):
    shutil.copyfile(base, out)
    with h5py.File(out, "r+") as f:
        f["notes"] = h5py.ExternalLink(marker.h5, "/data")
    return out


def _soft_link_out(base, out, marker):
    def make(group, name, shape):
        group.file["elsewhere"] = h5py.ExternalLink(marker.h5, "/")
        group[name] = h5py.SoftLink("/elsewhere/data")

    return _replace_first_weight(base, out, make)


def _virtual(base, out, marker):
    def make(group, name, shape):
        layout = h5py.VirtualLayout(shape=shape, dtype="<f4")
        layout[...] = h5py.VirtualSource(marker.h5, "data", shape=shape)
        group.create_virtual_dataset(name, layout)

    return _replace_first_weight(base, out, make)


def _unallocated(chunks):
    def build(base, out, marker):
        return _replace_first_weight(base, out, lambda group, name, shape: group.create_dataset(
            name, shape=(40000, 40000), dtype="<f4", chunks=chunks))

    return build


def _unallocated_fitting(base, out, marker):
    """The right shape, no data: HDF5 would give its fill value, silently."""
    return _replace_first_weight(base, out, lambda group, name, shape: group.create_dataset(
        name, shape=shape, dtype="<f4", fillvalue=7.0))


def _dtype(dtype):
    def build(base, out, marker):
        return _replace_first_weight(base, out, lambda group, name, shape: group.create_dataset(
            name, data=np.ones(shape, dtype)))

    return build


def _lossy_filter(base, out, marker):
    return _replace_first_weight(base, out, lambda group, name, shape: group.create_dataset(
        name, data=np.ones(shape, "<f4"), scaleoffset=2))


def _truncated(base, out, marker):
    with open(base, "rb") as f:
        data = f.read()
    with open(out, "wb") as f:
        f.write(data[: len(data) // 2])
    return out


def _not_hdf5(base, out, marker):
    with open(out, "w") as f:
        f.write("these are not weights\n")
    return out


def _layer_listed_twice(base, out, marker):
    shutil.copyfile(base, out)
    with h5py.File(out, "r+") as f:
        names = list(f.attrs["layer_names"])
        f.attrs["layer_names"] = np.array(names + names[:1])
    return out


WEIGHTS_FILES = {
    "external_storage": (_external(relative=False), "keeps its data in another file"),
    "external_storage_relative": (_external(relative=True), "keeps its data in another file"),
    "external_link": (_external_link, "is a link to another file"),
    "external_link_unused": (_external_link_unused, "is a link to another file"),
    "soft_link_out_of_the_file": (_soft_link_out, "link"),
    "virtual_dataset": (_virtual, "is a virtual dataset"),
    "unallocated_40000x40000": (_unallocated(None), "declares 6400000000 bytes but the file stores 0"),
    "unallocated_chunked": (_unallocated((1000, 1000)), "declares 6400000000 bytes but the file stores 0"),
    "unallocated_of_the_right_shape": (_unallocated_fitting, "bytes but the file stores 0"),
    "compound_dtype": (_dtype([("a", "<f4"), ("b", "<f4")]), "compound"),
    "complex_dtype": (_dtype("<c8"), "compound (e.g. complex)"),
    "int_dtype": (_dtype("<i4"), "holds int32 values"),
    "bool_dtype": (_dtype("?"), "not float16/32/64"),
    "lossy_filter": (_lossy_filter, "filter 6"),
    "truncated": (_truncated, "corrupt or truncated HDF5 file"),
    "not_hdf5": (_not_hdf5, "is not a Keras weights file"),
    "layer_listed_twice": (_layer_listed_twice, "lists a name twice"),
}


# ------------------------------------------------------------------------- records


def read_record(path):
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs[RECORD_ATTR])


def write_record_attribute(base, out, value):
    """Copies `base` with its record attribute set to `value` (anything h5py stores)."""
    shutil.copyfile(base, out)
    with h5py.File(out, "r+") as f:
        f.attrs[RECORD_ATTR] = value
    return out


def _edit(change):
    def build(base, out, marker):
        record = read_record(base)
        change(record)
        return write_record_attribute(base, out, json.dumps(record))

    return build


def _text(text):
    return lambda base, out, marker: write_record_attribute(base, out, text)


def _drop(key):
    return _edit(lambda record: record.pop(key))


def _set(*path_and_value):
    *path, key, value = path_and_value

    def change(record):
        for part in path:
            record = record[part]
        record[key] = value

    return _edit(change)


RECORDS = {
    "record_is_a_list": (_text("[]"), "the record is list, not a JSON object"),
    "record_is_a_string": (_text('"mobilenet_v2"'), "not a JSON object"),
    "record_is_null": (_text("null"), "the record is null"),
    "record_is_a_number": (_text("5"), "not a JSON object"),
    "record_100k_deep": (_text("[" * 100_000 + "]" * 100_000), "JSON nested 100000 deep"),
    "record_not_json": (_text("{'arch': 'mobilenet_v2'"), "not valid JSON"),
    "record_not_utf8": (lambda base, out, marker: write_record_attribute(base, out, np.bytes_(b"\xff\xfe{}")),
                        "not UTF-8"),
    "record_not_text": (lambda base, out, marker: write_record_attribute(base, out, np.arange(4.0)), "not a JSON string"),
    "record_without_arch": (_drop("arch"), "has no 'arch'"),
    "record_without_builder_kwargs": (_drop("builder_kwargs"), "has no 'builder_kwargs'"),
    "record_unknown_key": (_set("exec", "import os"), "unknown key \"exec\""),
    "record_unknown_arch": (_set("arch", "resnet9000"), "arch is \"resnet9000\""),
    "record_builder_of_another_arch": (_set("builder", "DeepLabV3Plus"), "does not build mobilenet_v2"),
    "record_builder_kwargs_weights": (_set("builder_kwargs", "weights", "/etc/passwd"), "sets 'weights'"),
    "record_builder_kwargs_input_tensor": (_set("builder_kwargs", "input_tensor", [1]), "sets 'input_tensor'"),
    "record_unknown_builder_argument": (_set("builder_kwargs", "trust_remote_code", True), "unknown key"),
    "record_input_shape_60000": (_set("builder_kwargs", "input_shape", [60000, 60000, 3]), "input_shape"),
    "record_classes_1e6": (_set("builder_kwargs", "classes", 10**6), "builder_kwargs.classes"),
    "record_alpha_nan": (_edit(lambda r: r["builder_kwargs"].update(alpha=float("nan"))), "builder_kwargs.alpha"),
    "record_preprocessing_size_50000": (_set("preprocessing", "size", 50000), "preprocessing.size"),
    "record_unknown_resample": (_set("preprocessing", "resample", "lanczos"), "preprocessing.resample"),
    "record_unknown_mode": (_set("preprocessing", "mode", "yolo"), "preprocessing.mode"),
    "record_preprocessing_is_a_list": (_set("preprocessing", []), "preprocessing is list"),
    "record_class_names_are_numbers": (_set("class_names", [1, 2, 3]), "class_names"),
}


# ------------------------------------------------------------------------ archives


def torch_zip_entries(root="archive"):
    """The members of a small PyTorch zip checkpoint (`{"w": arange(4.0)}`), as bytes, built without torch."""
    data_pkl = pickle_of(op_dict([(op_str("w"), op_tensor("0", 4, 0, (4,), (1,)))]))
    return [(f"{root}/data.pkl", data_pkl), (f"{root}/byteorder", b"little"),
            (f"{root}/data/0", np.arange(4, dtype="<f4").tobytes()), (f"{root}/version", b"3\n")]


def write_zip(out, entries, compression=zipfile.ZIP_STORED):
    """Writes `[(name, bytes)]` (names may repeat) with one compression method."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        with zipfile.ZipFile(out, "w", compression) as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return out


def write_raw_zip(out, members):
    """A zip written field by field from `[(name, method, compressed bytes, crc, claimed size)]`."""
    local, central = b"", b""
    for name, method, data, crc, claimed in members:
        offset, name = len(local), name.encode()
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data), claimed,
                             len(name), 0) + name + data
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 46, 46, 0, method, 0, 0, crc, len(data), claimed,
                               len(name), 0, 0, 0, 0, 0, offset) + name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(local), 0)
    with open(out, "wb") as f:
        f.write(local + central + end)
    return out


def bzip2_bomb(out, inflated=16 << 20):
    """A PyTorch zip checkpoint whose data.pkl is a bzip2 member of a few hundred bytes
    inflating to `inflated` bytes, while its headers claim the real pickle's size
    (Python's zipfile inflates bzip2 in one call: the claim does not bound it)."""
    compressor, chunk = bz2.BZ2Compressor(9), bytes(1 << 20)
    bomb = b"".join(compressor.compress(chunk) for _ in range(inflated >> 20)) + compressor.flush()
    members = []
    for name, data in torch_zip_entries():
        if name.endswith("data.pkl"):
            members.append((name, zipfile.ZIP_BZIP2, bomb, zlib.crc32(data), len(data)))
        else:
            members.append((name, zipfile.ZIP_STORED, data, zlib.crc32(data), len(data)))
    return write_raw_zip(out, members)


def lzma_corrupt(out):
    """A PyTorch-zip-looking checkpoint whose members are lzma, data.pkl's corrupt."""
    entries = torch_zip_entries()
    write_zip(out, entries, zipfile.ZIP_LZMA)
    with zipfile.ZipFile(out) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("data.pkl"))
    with open(out, "r+b") as f:
        f.seek(info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 9)
        f.write(b"\xff" * 8)
    return out


def duplicate_members(out):
    """The storage of `w` twice: PyTorch's loader reads the first, zipfile the last."""
    entries = torch_zip_entries()
    name, data = next((n, d) for n, d in entries if "/data/" in n)
    other = np.full(4, 666.0, "<f4").tobytes()
    position = [n for n, _ in entries].index(name)
    return write_zip(out, entries[:position + 1] + [(name, other)] + entries[position + 1:])


def member_named(out, bad_name):
    """A valid checkpoint plus one member named `bad_name`."""
    return write_zip(out, torch_zip_entries() + [(bad_name, b"x")])


# ------------------------------------------------------------------------- folders


def fifo(path):
    os.mkfifo(path)
    return path
