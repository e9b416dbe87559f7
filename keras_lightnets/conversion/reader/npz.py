"""NumPy's .npz archives: a zip of .npy members, each header parsed here, not by numpy."""

from __future__ import annotations

import ast
import math
import re
import struct
import zipfile

from keras_lightnets.conversion.reader.assemble import _assemble
from keras_lightnets.conversion.reader.tensors import (
    _DTYPES,
    Checkpoint,
    CheckpointError,
    _brief,
    _contiguous_strides,
    _read_exactly,
    _StorageView,
    _TensorRef,
)
from keras_lightnets.conversion.reader.zip import _checked_entry, _zip_errors

# A .npy header (numpy itself refuses more than 10,000 bytes by default).
_MAX_NPY_HEADER = 10_000


def read_npz(archive: zipfile.ZipFile, names: list[str], file_size: int) -> Checkpoint:
    refs, members = {}, {}
    for name in names:
        info = _checked_entry(archive, name, file_size)
        with _zip_errors(f"array {_brief(name)}"), archive.open(info) as stream:
            shape, fortran_order, dtype_name, header_size = _npy_header(stream, name)
        ref_dtype = _DTYPES[dtype_name]
        numel = math.prod(shape)
        if info.file_size != header_size + numel * ref_dtype.itemsize:
            raise CheckpointError(f"array {_brief(name)} holds {info.file_size - header_size} bytes, "
                                  f"expected {numel} x {ref_dtype.itemsize}; the file is corrupt")
        if fortran_order:
            strides = _contiguous_strides(shape[::-1])[::-1]
        else:
            strides = _contiguous_strides(shape)
        key = name[: -len(".npy")]
        refs[key] = _TensorRef(_StorageView(name, ref_dtype, numel), 0, shape, strides)
        members[name] = (info, header_size)

    def read_storages(needed):
        for name in needed:
            info, header_size = members[name]
            what = f"array {_brief(name)}"
            with _zip_errors(what), archive.open(info) as stream:
                stream.read(header_size)
                data = _read_exactly(stream, info.file_size - header_size, what)
            yield name, data

    return _assemble(refs, read_storages, "npz", file_size)


# .npy descr -> dtype name; big-endian and structured dtypes are refused.
_NPY_DESCRS = {
    "<f4": "float32", "<f8": "float64", "<f2": "float16", "<i8": "int64", "<i4": "int32",
    "<i2": "int16", "|i1": "int8", "|u1": "uint8", "|b1": "bool",
}
# What a plain .npy header dict may hold: no operators, lists or calls, so that
# ast.literal_eval has bounded work (numpy's own parser recurses on "- - - 1").
_NPY_HEADER_TEXT = re.compile(r"\A[\w\s'\"{}():,.<>|=]*\Z")


def _npy_header(stream, name: str) -> tuple[tuple[int, ...], bool, str, int]:
    """``(shape, fortran_order, dtype name, header size)`` of a .npy member, parsed here.

    numpy's parser can raise tokenize errors or recurse without bound on a crafted
    header; this one accepts only the dict numpy writes for plain numeric arrays.
    """
    def malformed(reason):
        return CheckpointError(f"array {_brief(name)} has a malformed .npy header ({reason})")

    magic = stream.read(8)
    if len(magic) != 8 or not magic.startswith(b"\x93NUMPY"):
        raise malformed("no .npy magic")
    version = (magic[6], magic[7])
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise CheckpointError(f"array {_brief(name)} uses .npy format {version}, which is not supported")
    length_format = "<H" if version == (1, 0) else "<I"
    length_bytes = stream.read(struct.calcsize(length_format))
    if len(length_bytes) != struct.calcsize(length_format):
        raise malformed("truncated")
    (length,) = struct.unpack(length_format, length_bytes)
    if length > _MAX_NPY_HEADER:
        raise malformed(f"{length} bytes, more than {_MAX_NPY_HEADER}")
    raw = stream.read(length)
    if len(raw) != length:
        raise malformed("truncated")
    try:
        text = raw.decode("utf8" if version == (3, 0) else "latin1")
    except UnicodeDecodeError:
        raise malformed("not UTF-8") from None
    text = re.sub(r"(?<=\d)L\b", "", text)  # Python 2 long integers: (3L, 4L)
    if not _NPY_HEADER_TEXT.match(text) or re.search(r"\d{20}", text) or text.count("(") > 1:
        raise malformed("unexpected characters or values")
    try:
        header = ast.literal_eval(text.strip())
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        raise malformed("not a Python literal") from None
    if not (isinstance(header, dict) and set(header) == {"descr", "fortran_order", "shape"}
            and isinstance(header["shape"], tuple)
            and all(type(n) is int for n in header["shape"]) and len(header["shape"]) <= 64
            and isinstance(header["fortran_order"], bool)):
        raise malformed("not the dict numpy writes")
    dtype_name = _NPY_DESCRS.get(header["descr"]) if isinstance(header["descr"], str) else None
    if dtype_name is None:
        raise CheckpointError(f"array {_brief(name)} has dtype {_brief(header['descr'])}; "
                              "only little-endian numbers are supported")
    return header["shape"], header["fortran_order"], dtype_name, 8 + len(length_bytes) + length
