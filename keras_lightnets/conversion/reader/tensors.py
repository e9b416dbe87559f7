"""What every checkpoint format shares: the error, the result, element types,
lazy tensor references checked against their storages, and bounded reads."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from keras_lightnets.errors import LightnetsError


class CheckpointError(LightnetsError, ValueError):
    """One-line, user-facing message (at most 300 characters from ``read_checkpoint``)."""


# ------------------------------------------------------------------------------ limits
# Work and memory are bounded relative to the file: any input of at most 10 MB is
# answered within seconds and ~300 MB (bench/reader_limits.py measures it).

# A tensor dimension, stride or offset beyond this is impossible in a real file.
_MAX_EXTENT = 2**48

def _brief(value, depth: int = 2) -> str:
    """A short repr of an untrusted value: bounded work whatever its size or sharing."""
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if value.bit_length() <= 64 else f"<{value.bit_length()}-bit integer>"
    if isinstance(value, str):
        return repr(value[:60]) + ("..." if len(value) > 60 else "")
    if isinstance(value, (bytes, bytearray)):
        return repr(bytes(value[:40])) + ("..." if len(value) > 40 else "")
    if isinstance(value, dict):
        if depth <= 0:
            return "{...}" if value else "{}"
        parts = [f"{_brief(k, 0)}: {_brief(v, depth - 1)}" for k, v in list(value.items())[:4]]
        return "{" + ", ".join(parts + ["..."] * (len(value) > 4)) + "}"
    if isinstance(value, (tuple, list)):
        opening, closing = "()" if isinstance(value, tuple) else "[]"
        if depth <= 0:
            return f"{opening}...{closing}" if value else f"{opening}{closing}"
        parts = [_brief(item, depth - 1) for item in value[:6]] + ["..."] * (len(value) > 6)
        comma = "," if isinstance(value, tuple) and len(value) == 1 else ""
        return f"{opening}{', '.join(parts)}{comma}{closing}"
    return f"<{type(value).__name__.lstrip('_')}>"


@dataclasses.dataclass
class Checkpoint:
    """A state_dict read from a file, with what was learnt on the way.

    ``tensors`` maps names to arrays (floating types as float32, integers and bools
    as they were); ``format`` is "pytorch-zip", "pytorch-legacy", "safetensors" or
    "npz"; ``wrapper`` is the key the state_dict was found under ("model.state_dict"
    when nested) and ``prefix`` the key prefix stripped ("module.", "_orig_mod." or
    both); ``alias_groups`` lists names that are views of the very same data (they
    share one array); ``extra`` holds the wrapper's other entries as plain Python
    (safetensors: its ``__metadata__``); ``nbytes`` is the size of the file.
    """

    tensors: dict[str, np.ndarray]
    format: str
    wrapper: str | None
    prefix: str | None
    alias_groups: list[tuple[str, ...]]
    extra: dict
    nbytes: int


# --------------------------------------------------------------------------- dtypes


class _Inert:
    """Base of the objects the unpickler hands out: pickle may not modify them."""

    __slots__ = ()

    def __setstate__(self, state):
        raise CheckpointError(
            f"refused to set state on {type(self).__name__.lstrip('_')}: corrupt or crafted pickle"
        )


class _DType(_Inert):
    """A tensor element type: its torch name, size and little-endian numpy code."""

    __slots__ = ("name", "itemsize", "code")

    def __init__(self, name: str, itemsize: int, code: str):
        self.name, self.itemsize, self.code = name, itemsize, code

    def __repr__(self):
        return f"torch.{self.name}"


_DTYPES = {
    dtype.name: dtype
    for dtype in (
        _DType("float32", 4, "<f4"),
        _DType("float64", 8, "<f8"),
        _DType("float16", 2, "<f2"),
        _DType("bfloat16", 2, "<u2"),  # numpy has no bfloat16: read the raw bits
        _DType("int64", 8, "<i8"),
        _DType("int32", 4, "<i4"),
        _DType("int16", 2, "<i2"),
        _DType("int8", 1, "|i1"),
        _DType("uint8", 1, "|u1"),
        _DType("bool", 1, "|u1"),
    )
}
_STORAGE_CLASSES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}

def _output_dtype(dtype: _DType) -> np.dtype:
    if dtype.name.startswith(("float", "bfloat")):
        return np.dtype(np.float32)
    return np.dtype(dtype.name)


# ------------------------------------------------------------- lazy tensor references


class _StorageView(_Inert):
    """A persistent id resolved: ``numel`` elements from ``offset`` of storage ``key``.

    ``total`` is the element count of the whole storage; views (``offset`` > 0 or
    ``numel`` < ``total``) only occur in files written by torch < 1.0.
    """

    __slots__ = ("key", "dtype", "offset", "numel", "total")

    def __init__(self, key, dtype: _DType, numel: int, offset: int = 0, total: int | None = None):
        self.key, self.dtype, self.numel, self.offset = key, dtype, numel, offset
        self.total = numel if total is None else total


class _TensorRef(_Inert):
    """A tensor as described by the pickle; its data is read later."""

    __slots__ = ("storage", "offset", "shape", "stride", "negate")

    def __init__(self, storage, offset, shape, stride, negate=False):
        if not isinstance(storage, _StorageView):
            raise CheckpointError(f"tensor built on {type(storage).__name__}, not on a storage")
        shape, stride = _int_tuple(shape, "size"), _int_tuple(stride, "stride")
        if len(shape) != len(stride) or len(shape) > 64:
            raise CheckpointError(f"tensor has size {_brief(shape)} but stride {_brief(stride)}")
        if type(offset) is not int:
            raise CheckpointError(f"tensor storage offset is {_brief(offset)}, expected an integer")
        # Sizes past _MAX_EXTENT make numpy overflow even for zero-element tensors.
        nominal = 1
        for value in shape:
            nominal *= max(value, 1)
            if nominal > _MAX_EXTENT:
                break
        if nominal > _MAX_EXTENT or max(map(abs, (*shape, *stride, offset))) > _MAX_EXTENT:
            raise CheckpointError(
                f"tensor size {_brief(shape)}, stride {_brief(stride)} or offset {_brief(offset)} "
                "is impossibly large: the file is corrupt"
            )
        if negate and storage.dtype.name == "bool":
            raise CheckpointError("a bool tensor is marked as negated: the file is corrupt")
        self.storage, self.shape, self.stride = storage, shape, stride
        self.offset = offset
        self.negate = negate

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def view_key(self) -> tuple:
        """Tensors with equal keys are the very same view of the same data."""
        storage = self.storage
        return (storage.key, storage.dtype.name, storage.offset + self.offset,
                self.shape, self.effective_stride(), self.negate)

    def effective_stride(self) -> tuple[int, ...]:
        """The strides, with 0 for dimensions of size 0 or 1, where they are never used."""
        return tuple(s if n > 1 else 0 for n, s in zip(self.shape, self.stride))

    def check_extent(self, name: str) -> None:
        storage = self.storage
        if self.offset < 0 or any(s < 0 for s in self.shape) or any(s < 0 for s in self.stride):
            raise CheckpointError(
                f"tensor {_brief(name)} has a negative offset, size or stride "
                f"(offset {self.offset}, size {self.shape}, stride {self.stride})"
            )
        if self.numel == 0:
            return
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
        if last >= storage.numel:
            raise CheckpointError(
                f"tensor {_brief(name)} lies outside its storage (offset {self.offset}, size "
                f"{self.shape}, stride {self.stride}, storage of {storage.numel} elements)"
            )

    def covers_storage(self) -> bool:
        """Whether this is the C-contiguous tensor holding exactly its whole storage."""
        if self.storage.offset or self.offset or self.numel != self.storage.total:
            return False
        expected = 1
        for size, stride in zip(reversed(self.shape), reversed(self.stride)):
            if size != 1 and stride != expected:
                return False
            expected *= size
        return True


def _int_tuple(values, what: str) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or not all(
        type(v) is int for v in values  # bool is an int subclass and is not a size
    ):
        raise CheckpointError(f"tensor {what} is {_brief(values)}, expected integers")
    return tuple(values)


class _StorageTable:
    """The storages seen in persistent ids: ``key -> (dtype, numel)``, kept consistent."""

    def __init__(self):
        self.storages: dict[object, tuple[_DType, int]] = {}

    def __call__(self, pid) -> _StorageView:
        if not isinstance(pid, tuple) or not pid:
            raise CheckpointError(f"unexpected persistent id {type(pid).__name__}")
        if pid[0] == "module":
            raise CheckpointError(
                "holds a pickled nn.Module, not a state_dict; "
                "in PyTorch, save model.state_dict() instead"
            )
        if pid[0] != "storage" or len(pid) not in (5, 6):
            raise CheckpointError(f"unexpected persistent id {_brief(pid[0])} of length {len(pid)}")
        _, dtype, key, location, numel = pid[:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(dtype, _DType):
            raise CheckpointError(f"storage of unsupported type {_brief(dtype)}")
        well_formed = isinstance(key, str) and isinstance(location, str) and type(numel) is int
        if not well_formed or not 0 <= numel <= _MAX_EXTENT:
            raise CheckpointError(f"malformed storage id {_brief(pid[1:5])}")
        known = self.storages.setdefault(key, (dtype, numel))
        if known != (dtype, numel):
            raise CheckpointError(f"storage {_brief(key)} is declared twice with different types or sizes")
        if view is None:
            return _StorageView(key, dtype, numel)
        # Pre-1.0 files may reference a slice of a storage: (view key, offset, size).
        if not (isinstance(view, tuple) and len(view) == 3 and type(view[1]) is int
                and type(view[2]) is int and 0 <= view[1] and 0 <= view[2]
                and view[1] + view[2] <= numel):
            raise CheckpointError(
                f"storage view {_brief(view)} does not fit storage {_brief(key)} of {numel} elements"
            )
        return _StorageView(key, dtype, view[2], offset=view[1], total=numel)


# --------------------------------------------------------------------------- reading

_CHUNK = 8 << 20


def _read_exactly(stream, nbytes: int, what: str) -> bytearray:
    """Read ``nbytes`` from ``stream`` into a new bytearray, in chunks, without an extra full copy."""
    buffer = bytearray(nbytes)
    view = memoryview(buffer)
    position = 0
    while position < nbytes:
        chunk = stream.read(min(_CHUNK, nbytes - position))
        if not chunk:
            raise CheckpointError(f"truncated: {what} ends after {position} of {nbytes} bytes")
        view[position:position + len(chunk)] = chunk
        position += len(chunk)
    return buffer


def _contiguous_strides(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))

