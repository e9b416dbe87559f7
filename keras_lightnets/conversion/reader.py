"""Safe, torch-free reading of PyTorch checkpoints into numpy arrays.

``read_checkpoint`` reads the formats a user is likely to hand the converter:
PyTorch's zip format (``torch.save`` since 1.6), its legacy format (torch < 1.6),
``.safetensors`` and ``.npz``. Pickles are read by a restricted unpickler that
only knows tensors, storages and plain data; anything else is refused with an
error naming the global, and nothing from the file is ever executed. Tensors
are described lazily while unpickling and only materialised afterwards, once
every offset, shape and stride has been checked against its storage.
"""

from __future__ import annotations

import _compat_pickle
import ast
import contextlib
import dataclasses
import io
import json
import math
import mmap
import os
import pickle
import pickletools
import re
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator

import numpy as np
from numpy.lib.stride_tricks import as_strided

from keras_lightnets.errors import LightnetsError
from keras_lightnets.files import MESSAGE_LIMIT, safe_text

__all__ = ["Checkpoint", "CheckpointError", "read_checkpoint"]


class CheckpointError(LightnetsError, ValueError):
    """One-line, user-facing message (at most 300 characters from ``read_checkpoint``)."""


# ------------------------------------------------------------------------------ limits
# Work and memory are bounded relative to the file: any input of at most 10 MB is
# answered within seconds and ~300 MB (bench/reader_limits.py measures it).

# A tensor dimension, stride or offset beyond this is impossible in a real file.
_MAX_EXTENT = 2**48
# Pickle opcodes read from one file: a base plus one per 16 bytes of file (a real
# checkpoint has a few dozen opcodes per tensor, and megabytes of data per tensor).
_MAX_OPCODES_BASE = 500_000
_BYTES_PER_OPCODE = 16
# A compressed data.pkl may inflate to at most this multiple of the file, plus a base.
_MAX_PICKLE_EXPANSION = 2
_MAX_PICKLE_SLACK = 1 << 20
# Dict keys and set members other than strings, bytes and small numbers (tuples, big
# integers) can be made to collide or to cost exponential time to hash: few and small.
_MAX_COMPLEX_KEYS = 1_000
_MAX_KEY_PARTS = 64
# A .npy header (numpy itself refuses more than 10,000 bytes by default).
_MAX_NPY_HEADER = 10_000


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
_SAFETENSORS_DTYPES = {
    "F32": "float32", "F64": "float64", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}
_NUMPY_DTYPES = {
    "float32": "float32", "float64": "float64", "float16": "float16",
    "int64": "int64", "int32": "int32", "int16": "int16", "int8": "int8",
    "uint8": "uint8", "bool": "bool",
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


# ------------------------------------------------------------ the restricted unpickler


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    negate = False
    if metadata:
        # PyTorch records lazy negation as {"neg": True}; "conj" only applies to complex.
        if not isinstance(metadata, dict) or any(key != "neg" for key in metadata):
            raise CheckpointError(f"unsupported tensor metadata {_brief(metadata)}")
        negate = bool(metadata.get("neg"))
    return _TensorRef(storage, storage_offset, size, stride, negate)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    if not isinstance(data, _TensorRef):
        raise CheckpointError(f"parameter built from {type(data).__name__}, not from a tensor")
    return data


class _StateDict(dict):
    """Stands in for OrderedDict; drops the ``_metadata`` attribute of state_dicts."""

    __slots__ = ()

    def __init__(self, items=()):
        # Python 2 pickled an OrderedDict as OrderedDict([[key, value], ...]).
        super().__init__()
        if not isinstance(items, (list, tuple)):
            raise CheckpointError("malformed OrderedDict")
        for item in items:
            if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)):
                raise CheckpointError("malformed OrderedDict: items must be (name, value) pairs")
            self[item[0]] = item[1]

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise CheckpointError("refused to set non-dict state on an OrderedDict")


class _Namespace(_Inert):
    """Stands in for argparse.Namespace: keeps its attributes as a dict."""

    __slots__ = ("attributes",)

    def __new__(cls):
        namespace = super().__new__(cls)
        namespace.attributes = {}
        return namespace

    def __setstate__(self, state):
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise CheckpointError("refused to set non-dict state on an argparse.Namespace")
        self.attributes = dict(state)


class _NumpyDType(_Inert):
    """A plain numeric numpy dtype, as pickled for numpy scalars."""

    __slots__ = ("code", "byteorder")
    CODES = frozenset("f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1".split())

    def __init__(self, code, align=False, copy=True):
        if type(code) is not str or code not in self.CODES:
            raise CheckpointError(
                f"refused to unpickle numpy dtype {_brief(code)}: only plain numbers are allowed"
            )
        self.code, self.byteorder = code, "<"

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", ">", "|", "=")):
            raise CheckpointError(f"malformed numpy dtype state {_brief(state)}")
        self.byteorder = ">" if state[1] == ">" else "<"


def _numpy_scalar(dtype, data):
    if not isinstance(dtype, _NumpyDType) or not isinstance(data, bytes):
        raise CheckpointError("malformed numpy scalar")
    numpy_dtype = np.dtype(dtype.byteorder + dtype.code)
    if len(data) != numpy_dtype.itemsize:
        raise CheckpointError("malformed numpy scalar")
    return np.frombuffer(data, numpy_dtype)[0].item()


def _latin1_encode(text, encoding):
    # Protocol-2 pickles store bytes (e.g. a numpy scalar's) as _codecs.encode(text, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError("refused to unpickle '_codecs.encode' other than latin1 bytes")
    return text.encode("latin1")


def _device(kind, index=None):
    if not isinstance(kind, str) or not (index is None or (type(index) is int and 0 <= index < 2**31)):
        raise CheckpointError("malformed torch.device")
    return kind if index is None else f"{kind}:{index}"


class _Function(_Inert):
    """An allowed function, wrapped: pickle's BUILD could otherwise set a function's
    attributes (``__defaults__``, ``__kwdefaults__``) for the rest of the process."""

    __slots__ = ("function",)

    def __init__(self, function):
        self.function = function

    def __call__(self, *args):
        return self.function(*args)


_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): _StateDict,
    ("torch._utils", "_rebuild_tensor"): _Function(_rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): _Function(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): _Function(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _Function(_rebuild_parameter),
    ("torch.storage", "UntypedStorage"): _DTYPES["uint8"],
    ("torch", "device"): _Function(_device),
    ("argparse", "Namespace"): _Namespace,
    ("numpy", "dtype"): _NumpyDType,
    ("numpy.core.multiarray", "scalar"): _Function(_numpy_scalar),
    ("numpy._core.multiarray", "scalar"): _Function(_numpy_scalar),
    ("_codecs", "encode"): _Function(_latin1_encode),
    **{("torch", cls): _DTYPES[name] for cls, name in _STORAGE_CLASSES.items()},
    **{("torch", name): dtype for name, dtype in _DTYPES.items()},
}


def _refusal(module: str, name: str) -> str:
    qualname = f"{module}.{name}"
    quantized = ("QInt", "QUInt", "qint", "quint", "per_channel", "per_tensor")
    if name == "_rebuild_qtensor" or name.startswith(quantized):
        return (f"holds a quantized tensor ({_brief(qualname)}), which is not supported; "
                "in PyTorch, dequantize the model and save its float state_dict")
    if "sparse" in name.lower():
        return (f"holds a sparse tensor ({_brief(qualname)}), which is not supported; "
                "in PyTorch, call .to_dense() on it and save the state_dict again")
    if module.startswith("torch.nn.") or module == "__main__":
        return (f"refused to unpickle {_brief(qualname)}: a pickled nn.Module, not a state_dict; "
                "in PyTorch, save model.state_dict() instead")
    return (f"refused to unpickle {_brief(qualname)}: checkpoints may only contain tensors "
            "and plain data (save model.state_dict())")


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves globals from an allow-list of inert stand-ins."""

    def __init__(self, file, storages: _StorageTable | None):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module, name):
        # Protocol-2 pickles written by Python 3 use Python 2 names ("__builtin__.exec").
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[module, name]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return _ALLOWED_GLOBALS[module, name]
        except KeyError:
            raise CheckpointError(_refusal(module, name)) from None

    def persistent_load(self, pid):
        if self._storages is None:
            raise CheckpointError("unexpected persistent id in a header pickle")
        return self._storages(pid)


class _PickleBudget:
    """What the pickles of one file may cost, shared by all of them."""

    def __init__(self, file_size: int):
        self.opcodes = _MAX_OPCODES_BASE + file_size // _BYTES_PER_OPCODE
        self.complex_keys = _MAX_COMPLEX_KEYS


# How the scanner treats each opcode: (special, argument kind, items popped below a
# mark, pops to a mark, items pushed). Argument kinds are pickletools' sizes: n >= 0
# bytes, or UP_TO_NEWLINE (-1), or a length prefix of 1, 4, 4 (unsigned), 8 bytes.
(_GENERIC, _PUT, _GET, _MEMOIZE, _TUPLE, _SETITEM, _SETITEMS, _DICT, _ADDITEMS,
 _FROZENSET, _STOP, _DUP, _BIG_INT, _TWO_LINES) = range(14)
_SPECIAL = {
    "PUT": _PUT, "BINPUT": _PUT, "LONG_BINPUT": _PUT, "GET": _GET, "BINGET": _GET,
    "LONG_BINGET": _GET, "MEMOIZE": _MEMOIZE, "TUPLE": _TUPLE, "TUPLE1": _TUPLE,
    "TUPLE2": _TUPLE, "TUPLE3": _TUPLE, "SETITEM": _SETITEM, "SETITEMS": _SETITEMS,
    "DICT": _DICT, "ADDITEMS": _ADDITEMS, "FROZENSET": _FROZENSET, "STOP": _STOP,
    "DUP": _DUP, "LONG": _BIG_INT, "LONG1": _BIG_INT, "LONG4": _BIG_INT,
    "GLOBAL": _TWO_LINES, "INST": _TWO_LINES,
}
_OPCODES: list[tuple | None] = [None] * 256
for _op in pickletools.opcodes:
    _before = _op.stack_before
    _mark = pickletools.markobject in _before
    _below = _before.index(pickletools.markobject) if _mark else len(_before)
    _OPCODES[ord(_op.code)] = (_SPECIAL.get(_op.name, _GENERIC), _op.arg.n if _op.arg else 0,
                               _below, _mark, len(_op.stack_after))
_OPCODES[ord("(")] = None  # MARK is handled before the table
_LENGTH_PREFIX = {pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
                  pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
                  pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
                  pickletools.TAKEN_FROM_ARGUMENT8U: (8, False)}


def _scan_pickle(data, start: int, budget: _PickleBudget) -> int:
    """Check the pickle at ``data[start:]`` without building it; return where it ends.

    Simulates the unpickler's stack, keeping for each object what hashing it
    costs (a tuple's elements, counted again for each use: shared subtuples make a
    tiny pickle exponential to hash). Refuses:
    - more opcodes than the file's budget (bounded time and memory for any file);
    - memo indices past the byte position: the C unpickler grows its memo to
      twice the largest index (and zeroes it), so 10 bytes could claim gigabytes;
    - dict keys and set members other than strings, bytes and small numbers beyond
      a few small ones: they can be made to collide or to be exponential to hash.
    """
    end = len(data)
    stack: list[int] = []
    marks: list[int] = []
    memo: dict[int, int] = {}
    position = start
    count, limit = 0, budget.opcodes
    opcodes = _OPCODES

    def refuse(reason):
        return CheckpointError(f"corrupt or crafted pickle: {reason} at byte {position - start}")

    def fence():
        return marks[-1] if marks else 0

    def check_keys(costs):
        for cost in costs:
            if cost > 1:
                budget.complex_keys -= 1
                if cost > _MAX_KEY_PARTS or budget.complex_keys < 0:
                    raise refuse("a dict key or set member too costly to hash (a crafted tuple "
                                 "or integer), or too many of them")

    def pop_to_mark():
        if not marks:
            raise refuse("no mark on the stack")
        mark = marks.pop()
        items = stack[mark:]
        del stack[mark:]
        return items

    def memo_index(value_start, arg):
        if arg >= 0:
            return int.from_bytes(data[value_start:position], "little")
        text = bytes(data[value_start:position - 1])
        return int(text) if text.isdigit() and len(text) < 20 else -1

    while True:
        if position >= end:
            raise CheckpointError("corrupt or truncated pickle: it has no STOP opcode")
        count += 1
        if count > limit:
            raise refuse(f"more than {limit} opcodes for a file of this size")
        code = data[position]
        position += 1
        if code == 0x28:  # MARK
            marks.append(len(stack))
            continue
        spec = opcodes[code]
        if spec is None:
            raise refuse(f"unknown opcode 0x{code:02x}")
        special, arg, below, uses_mark, pushed = spec

        value_start = position
        if arg >= 0:
            position += arg
        elif arg == pickletools.UP_TO_NEWLINE:
            for _ in range(2 if special == _TWO_LINES else 1):
                newline = data.find(b"\n", position, end)
                if newline < 0:
                    raise CheckpointError("corrupt or truncated pickle: an unterminated line")
                position = newline + 1
        else:
            size, signed = _LENGTH_PREFIX[arg]
            length = int.from_bytes(data[position:position + size], "little", signed=signed)
            if length < 0:
                raise refuse("a negative length")
            position += size + length
        if position > end:
            raise CheckpointError("corrupt or truncated pickle: an argument runs past the end")

        if special == _GENERIC:
            if uses_mark:
                pop_to_mark()
            if below:
                if len(stack) - below < fence():
                    raise refuse("stack underflow")
                del stack[len(stack) - below:]
            if pushed:
                stack.append(1)
        elif special == _PUT or special == _MEMOIZE:
            if len(stack) <= fence():
                raise refuse("memo of an empty stack")
            index = len(memo) if special == _MEMOIZE else memo_index(value_start, arg)
            if not 0 <= index <= position - start:
                raise refuse(f"memo index {index}")
            memo[index] = stack[-1]
        elif special == _GET:
            index = memo_index(value_start, arg)
            if index not in memo:
                raise refuse(f"memo index {index} was never set")
            stack.append(memo[index])
        elif special == _TUPLE:
            if uses_mark:
                items = pop_to_mark()
            else:
                if len(stack) - below < fence():
                    raise refuse("stack underflow")
                items = stack[len(stack) - below:]
                del stack[len(stack) - below:]
            stack.append(min(1 + sum(items), 2**62))
        elif special == _SETITEM:
            if len(stack) - 3 < fence():
                raise refuse("stack underflow")
            check_keys(stack[-2:-1])
            del stack[-2:]
        elif special == _BIG_INT:
            digits = position - value_start
            stack.append(1 if digits <= 9 else 2 + digits // 4)
        elif special == _STOP:
            budget.opcodes -= count
            return position
        elif special == _DUP:
            if len(stack) <= fence():
                raise refuse("stack underflow")
            stack.append(stack[-1])
        elif special == _TWO_LINES:  # GLOBAL, INST
            if uses_mark:
                pop_to_mark()
            stack.append(1)
        else:  # SETITEMS, DICT, ADDITEMS, FROZENSET
            items = pop_to_mark()
            check_keys(items if special in (_ADDITEMS, _FROZENSET) else items[::2])
            if special == _SETITEMS or special == _ADDITEMS:
                if len(stack) <= fence():
                    raise refuse("stack underflow")
            else:
                stack.append(1 + len(items) if special == _FROZENSET else 1)


# Errors a corrupt or crafted pickle can raise from inside the unpickler.
_PICKLE_ERRORS = (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError,
                  KeyError, IndexError, OverflowError, RecursionError, MemoryError)


def _unpickle(data, start: int, budget: _PickleBudget,
              storages: _StorageTable | None = None) -> tuple[object, int]:
    """Load the pickle at ``data[start:]`` with the restricted unpickler; return it and its end."""
    end = _scan_pickle(data, start, budget)
    try:
        return _RestrictedUnpickler(io.BytesIO(data[start:end]), storages).load(), end
    except CheckpointError:
        raise
    except _PICKLE_ERRORS as exc:
        # A KeyError's text is the repr of an untrusted key: not computed.
        detail = "" if isinstance(exc, KeyError) else f": {safe_text(exc, 100)}"
        raise CheckpointError(f"corrupt or truncated pickle ({type(exc).__name__}{detail})") from None


# ---------------------------------------------------------------- state_dict selection

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model_state", "model", "net")
_EMA_KEYS = ("ema", "state_dict_ema", "model_ema")
_PREFIXES = ("module.", "_orig_mod.")


def _is_ignorable(key, value) -> bool:
    # Modules may store arbitrary `_extra_state`; it holds no weights.
    return isinstance(key, str) and key.endswith("_extra_state") and not isinstance(value, _TensorRef)


def _is_state_dict(obj) -> bool:
    return (
        isinstance(obj, dict)
        and any(isinstance(v, _TensorRef) for v in obj.values())
        and all(
            isinstance(k, str) and (isinstance(v, _TensorRef) or _is_ignorable(k, v))
            for k, v in obj.items()
        )
    )


def _describe(obj) -> str:
    if isinstance(obj, _TensorRef):
        return "a single tensor"
    if isinstance(obj, dict):
        keys = [_brief(k) for k in list(obj)[:8]]
        more = ", ..." if len(obj) > 8 else ""
        return f"a dict with keys {', '.join(keys)}{more}" if keys else "an empty dict"
    return f"a {type(obj).__name__.lstrip('_')}"


def _find_state_dict(obj) -> tuple[dict, str | None, dict]:
    """Return ``(state_dict, wrapper key, other entries)`` from an unpickled checkpoint."""
    if _is_state_dict(obj):
        return obj, None, {}
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS + _EMA_KEYS:
            inner = obj.get(key)
            if _is_state_dict(inner):
                return inner, key, _without(obj, key)
            if isinstance(inner, dict):  # e.g. {"model": {"state_dict": ...}}
                for inner_key in _WRAPPER_KEYS + _EMA_KEYS:
                    if _is_state_dict(inner.get(inner_key)):
                        others = {**_without(inner, inner_key), **_without(obj, key)}
                        return inner[inner_key], f"{key}.{inner_key}", others
        tensors = {k: v for k, v in obj.items() if isinstance(v, _TensorRef)}
        if tensors and all(isinstance(k, str) for k in obj):
            # A state_dict with a few plain entries mixed in, e.g. {"fc.weight": w, "epoch": 3}.
            return tensors, None, {k: v for k, v in obj.items() if k not in tensors}
    raise CheckpointError(
        f"no state_dict found: the checkpoint is {_describe(obj)}; "
        "in PyTorch, save model.state_dict() (a dict of tensors)"
    )


def _without(mapping: dict, key) -> dict:
    return {k: v for k, v in mapping.items() if k != key}


def _clean_keys(state_dict: dict) -> tuple[dict, str | None]:
    """Drop ``num_batches_tracked`` and ``_extra_state``; strip wrapper prefixes shared by all keys."""
    tensors = {
        k: v for k, v in state_dict.items()
        if isinstance(v, _TensorRef) and k.rsplit(".", 1)[-1] != "num_batches_tracked"
    }
    stripped = ""
    while tensors:
        prefix = next((p for p in _PREFIXES if all(k.startswith(p) for k in tensors)), None)
        if prefix is None:
            break
        stripped += prefix
        tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors, stripped or None


_DROP = object()


class _PlainConverter:
    """Converts unpickled extra entries to plain Python, dropping tensors and odd objects.

    A budget bounds the walk: pickles can share and nest containers cheaply.
    """

    def __init__(self, budget: int = 100_000, max_depth: int = 32):
        self.budget, self.max_depth = budget, max_depth

    def __call__(self, value, depth: int = 0):
        self.budget -= 1
        if self.budget < 0 or depth > self.max_depth:
            return _DROP
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, _Namespace):
            value = value.attributes
        if isinstance(value, dict):
            plain_keys = (k for k in value if isinstance(k, (str, int, float)))
            items = ((k, self(value[k], depth + 1)) for k in plain_keys)
            return {k: v for k, v in items if v is not _DROP}
        if isinstance(value, (list, tuple)):
            items = (self(v, depth + 1) for v in value)
            return [v for v in items if v is not _DROP]
        return _DROP

    def contains_tensor(self, value, depth: int = 0) -> bool:
        self.budget -= 1
        if self.budget < 0 or depth > self.max_depth or isinstance(value, _TensorRef):
            return True
        if isinstance(value, _Namespace):
            value = value.attributes
        if isinstance(value, dict):
            value = value.values()
        elif not isinstance(value, (list, tuple)):
            return False
        return any(self.contains_tensor(v, depth + 1) for v in value)


def _plain_extra(entries: dict) -> dict:
    """The wrapper's entries that hold no tensors, as plain Python."""
    convert = _PlainConverter()
    extra = {}
    for key, value in entries.items():
        if isinstance(key, str) and not convert.contains_tensor(value):
            plain = convert(value)
            if plain is not _DROP:
                extra[key] = plain
    return extra


# ------------------------------------------------------------- tensor materialisation

_CHUNK = 8 << 20
# Stride tricks can make a tiny storage expand into a huge tensor, and a deflated
# storage can inflate 1000-fold: bound both the bytes read and the arrays made.
# (fp16 and bf16 double in size as float32; real files stay well within 4x.)
_MAX_EXPANSION = 4
_MAX_EXPANSION_SLACK = 64 << 20

# Reads storages: given {key: (dtype, numel)}, yields (key, bytes) for each, once.
_StorageReader = Callable[[dict], Iterator[tuple[object, bytearray]]]


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


def _to_array(buffer: bytearray, ref: _TensorRef) -> np.ndarray:
    dtype = ref.storage.dtype
    flat = np.frombuffer(buffer, dtype=dtype.code, count=ref.storage.total)
    output = _output_dtype(dtype)
    if ref.covers_storage() and flat.dtype == output and not ref.negate:
        return flat.reshape(ref.shape)  # shares the buffer read for this storage alone
    start = ref.storage.offset + ref.offset
    byte_strides = [s * dtype.itemsize for s in ref.effective_stride()]
    view = as_strided(flat[start:], ref.shape, byte_strides, writeable=False)
    # Each branch makes a C-contiguous copy that owns its memory.
    if dtype.name == "bfloat16":
        array = view.astype(np.uint32, order="C")
        array <<= 16
        array = array.view(np.float32)
    elif dtype.name == "bool":
        array = np.not_equal(view, 0, order="C")
    else:
        array = np.array(view, dtype=output, order="C")
    if ref.negate:
        np.negative(array, out=array)
    return array


def _materialise(refs: dict[str, _TensorRef], read_storages: _StorageReader,
                 nbytes_limit: int) -> tuple[dict[str, np.ndarray], list[tuple[str, ...]]]:
    """Check every tensor against its storage, then read the storages and build the arrays."""
    if sys.byteorder != "little":
        raise CheckpointError("reading checkpoints needs a little-endian machine")
    groups: dict[tuple, list[str]] = {}
    needed: dict[object, tuple[_DType, int]] = {}
    output_bytes = 0
    for name, ref in refs.items():
        ref.check_extent(name)
        view_key = ref.view_key()
        if view_key not in groups:
            groups[view_key] = []
            output_bytes += ref.numel * _output_dtype(ref.storage.dtype).itemsize
            if output_bytes > nbytes_limit:
                raise CheckpointError(
                    f"tensor {_brief(name)} of size {_brief(ref.shape)} would take the tensors past "
                    f"{nbytes_limit} bytes, far more than the file holds"
                )
            if ref.numel:
                needed.setdefault(ref.storage.key, (ref.storage.dtype, ref.storage.total))
        groups[view_key].append(name)

    arrays: dict[tuple, np.ndarray] = {}
    by_storage: dict[object, list[tuple[tuple, _TensorRef]]] = {}
    for view_key, names in groups.items():
        ref = refs[names[0]]
        if ref.numel == 0:
            arrays[view_key] = np.zeros(ref.shape, _output_dtype(ref.storage.dtype))
        else:
            by_storage.setdefault(ref.storage.key, []).append((view_key, ref))
    for key, buffer in read_storages(needed):
        for view_key, ref in by_storage.pop(key):
            arrays[view_key] = _to_array(buffer, ref)
        del buffer  # free a storage as soon as it is converted, unless an array shares it
    if by_storage:
        raise CheckpointError(f"storage {_brief(next(iter(by_storage)))} was not found")

    tensors = {name: arrays[ref.view_key()] for name, ref in refs.items()}
    aliases = [tuple(names) for names in groups.values() if len(names) > 1]
    return tensors, aliases


def _assemble(obj, read_storages: _StorageReader, fmt: str, nbytes: int) -> Checkpoint:
    """From an unpickled checkpoint to a Checkpoint: unwrap, clean keys, read the tensors."""
    state_dict, wrapper, others = _find_state_dict(obj)
    refs, prefix = _clean_keys(state_dict)
    limit = _MAX_EXPANSION * nbytes + _MAX_EXPANSION_SLACK
    tensors, aliases = _materialise(refs, read_storages, limit)
    return Checkpoint(tensors, fmt, wrapper, prefix, aliases, _plain_extra(others), nbytes)


# ----------------------------------------------------------------------------- formats

_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001
_MAX_SAFETENSORS_HEADER = 100 << 20
_MAX_DEFLATE_RATIO = 1100  # deflate cannot expand data more than ~1032 times


@contextlib.contextmanager
def _zip_errors(what: str) -> Iterator[None]:
    """Turn what zipfile and zlib raise on corrupt archives into CheckpointError."""
    try:
        yield
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, struct.error) as exc:
        raise CheckpointError(f"corrupt or truncated zip archive ({what}: {safe_text(exc, 80)})") from None
    # zipfile raises ValueError (bad offsets, names that are not UTF-8), OverflowError (zip64 sizes).
    except (ValueError, OverflowError) as exc:
        raise CheckpointError(f"corrupt zip archive ({what}: {type(exc).__name__})") from None
    except NotImplementedError as exc:  # compression methods zipfile lacks
        raise CheckpointError(f"unsupported zip archive ({safe_text(exc, 80)})") from None


def _checked_entry(archive: zipfile.ZipFile, name: str, file_size: int,
                   max_inflated: int | None = None) -> zipfile.ZipInfo:
    """The entry ``name``, after checking its sizes are possible for a file of ``file_size`` bytes."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CheckpointError(f"zip entry {_brief(name)} is missing") from None
    if info.flag_bits & 0x1:
        raise CheckpointError(f"zip entry {_brief(name)} is encrypted")
    stored = info.compress_type == zipfile.ZIP_STORED
    max_size = info.compress_size if stored else _MAX_DEFLATE_RATIO * info.compress_size + 1024
    if info.header_offset + info.compress_size > file_size or info.file_size > max_size:
        raise CheckpointError(f"zip entry {_brief(name)} claims more data than the file holds")
    if max_inflated is not None and info.file_size > max_inflated:
        raise CheckpointError(f"zip entry {_brief(name)} inflates to {info.file_size} bytes, "
                              f"more than {max_inflated} allowed for a file of this size")
    return info


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytearray:
    what = f"zip entry {_brief(info.filename)}"
    with _zip_errors(what), archive.open(info) as stream:
        return _read_exactly(stream, info.file_size, what)


def _read_pytorch_zip(archive: zipfile.ZipFile, root: str, file_size: int) -> Checkpoint:
    byteorder = f"{root}/byteorder"
    if byteorder in archive.NameToInfo:  # absent in files from torch < 1.10: little-endian
        info = _checked_entry(archive, byteorder, file_size, max_inflated=64)
        order = bytes(_read_entry(archive, info)).strip()
        if order != b"little":
            raise CheckpointError(f"written on a {_brief(order.decode('ascii', 'replace'))}-endian "
                                  "machine; only little-endian checkpoints are supported")
    storages = _StorageTable()
    max_pickle = _MAX_PICKLE_EXPANSION * file_size + _MAX_PICKLE_SLACK
    pickled = _read_entry(archive, _checked_entry(archive, f"{root}/data.pkl", file_size, max_pickle))
    obj, _ = _unpickle(pickled, 0, _PickleBudget(file_size), storages)
    del pickled

    def read_storages(needed):
        entries = []
        for key, (dtype, numel) in needed.items():
            info = _checked_entry(archive, f"{root}/data/{key}", file_size)
            if info.file_size != numel * dtype.itemsize:
                raise CheckpointError(
                    f"storage {_brief(key)} holds {info.file_size} bytes, "
                    f"expected {numel} x {dtype.itemsize}; the file is corrupt"
                )
            entries.append((info.header_offset, key, info))
        inflated = sum(info.file_size for _, _, info in entries)
        limit = _MAX_EXPANSION * file_size + _MAX_EXPANSION_SLACK
        if inflated > limit:  # deflated storages: up to 1000 times the bytes in the file
            raise CheckpointError(f"the storages inflate to {inflated} bytes, more than {limit} "
                                  "allowed for a file of this size")
        for _, key, info in sorted(entries, key=lambda entry: entry[0]):  # in file order
            yield key, _read_entry(archive, info)

    return _assemble(obj, read_storages, "pytorch-zip", file_size)


def _read_zip(path: str, file_size: int) -> Checkpoint:
    with _zip_errors("directory"):
        archive = zipfile.ZipFile(path)
    with archive:
        names = archive.namelist()
        roots = [n.split("/")[0] for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(roots) == 1:
            root = roots[0]
            code = f"{root}/code/"
            if f"{root}/constants.pkl" in names or any(n.startswith(code) for n in names):
                raise CheckpointError(
                    "TorchScript archive: not a state_dict; in PyTorch, save model.state_dict() "
                    "with torch.save and convert that"
                )
            return _read_pytorch_zip(archive, root, file_size)
        if names and all(n.endswith(".npy") for n in names):
            return _read_npz(archive, names, file_size)
        if "config.json" in names and "model.weights.h5" in names:
            raise CheckpointError("is a Keras .keras archive, not a PyTorch checkpoint")
        raise CheckpointError(
            "zip archive without a single <root>/data.pkl: not a PyTorch checkpoint"
        )


def _read_npz(archive: zipfile.ZipFile, names: list[str], file_size: int) -> Checkpoint:
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


def _contiguous_strides(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def _read_legacy(path: str, file_size: int) -> Checkpoint:
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        budget = _PickleBudget(file_size)
        # The header pickles get the same restricted unpickler: a payload can hide in any of them.
        magic, position = _unpickle(data, 0, budget)
        if type(magic) is not int or magic != _LEGACY_MAGIC_NUMBER:
            raise CheckpointError(
                "a pickle file without PyTorch's magic number: not a PyTorch checkpoint"
            )
        version, position = _unpickle(data, position, budget)
        if type(version) is not int or version != _LEGACY_PROTOCOL_VERSION:
            raise CheckpointError(f"unsupported legacy protocol version {_brief(version)}")
        sys_info, position = _unpickle(data, position, budget)
        if not isinstance(sys_info, dict):
            raise CheckpointError("corrupt legacy header (sys_info is not a dict)")
        if sys_info.get("little_endian") is not True:
            raise CheckpointError(
                "written on a big-endian machine; only little-endian checkpoints are supported"
            )
        storages = _StorageTable()
        obj, position = _unpickle(data, position, budget, storages)
        keys, position = _unpickle(data, position, budget)
        if (not isinstance(keys, list) or not all(isinstance(k, str) for k in keys)
                or len(set(keys)) != len(keys) or set(keys) != set(storages.storages)):
            raise CheckpointError(
                "corrupt legacy file: the storage list does not match the storages used"
            )
        file.seek(position)

        def read_storages(needed):
            for key in keys:  # storages follow one another in this order
                dtype, numel = storages.storages[key]
                header = file.read(8)
                if len(header) != 8:
                    raise CheckpointError(f"truncated: storage {_brief(key)} is missing")
                (count,) = struct.unpack("<q", header)
                remaining = file_size - file.tell()
                if count < 0 or count * dtype.itemsize > remaining:
                    raise CheckpointError(f"truncated or corrupt: storage {_brief(key)} claims "
                                          f"{count} x {dtype.itemsize} bytes but only {remaining} remain")
                if count != numel:
                    raise CheckpointError(f"storage {_brief(key)} holds {count} elements, expected {numel}")
                if key in needed:
                    yield key, _read_exactly(file, count * dtype.itemsize, f"storage {_brief(key)}")
                else:
                    file.seek(count * dtype.itemsize, os.SEEK_CUR)

        return _assemble(obj, read_storages, "pytorch-legacy", file_size)


def _read_safetensors(path: str, file_size: int) -> Checkpoint:
    with open(path, "rb") as file:
        (header_size,) = struct.unpack("<Q", file.read(8))
        if header_size > min(_MAX_SAFETENSORS_HEADER, file_size - 8):
            raise CheckpointError(
                f"safetensors header of {header_size} bytes is too large for the file"
            )
        try:
            header = json.loads(file.read(header_size))
        except ValueError as exc:  # bad JSON or UTF-8, integers of more than 4,300 digits
            raise CheckpointError(f"corrupt safetensors header ({safe_text(exc, 100)})") from None
        except RecursionError:
            raise CheckpointError("corrupt safetensors header (nested too deeply)") from None
        if not isinstance(header, dict):
            raise CheckpointError("corrupt safetensors header (not a JSON object)")
        data_start, data_size = 8 + header_size, file_size - 8 - header_size
        metadata = header.pop("__metadata__", None) or {}
        refs = {}
        for name, entry in header.items():
            refs[name] = _safetensors_ref(name, entry, data_size)

        def read_storages(needed):
            for key in sorted(needed, key=lambda key: key[1]):  # keys are (dtype, begin, end)
                begin, end = key[1:]
                file.seek(data_start + begin)
                yield key, _read_exactly(file, end - begin, f"tensor data at {begin}")

        checkpoint = _assemble(refs, read_storages, "safetensors", file_size)
    checkpoint.extra = _plain_extra(metadata) if isinstance(metadata, dict) else {}
    return checkpoint


def _safetensors_ref(name: str, entry, data_size: int) -> _TensorRef:
    try:
        dtype = _DTYPES[_SAFETENSORS_DTYPES[entry["dtype"]]]
        shape = _int_tuple(entry["shape"], "shape")
        offsets = _int_tuple(entry["data_offsets"], "data offsets")
    except (TypeError, KeyError):
        offsets = None
    if offsets is None or len(offsets) != 2 or len(shape) > 64:
        raise CheckpointError(f"malformed safetensors entry for {_brief(name)}: {_brief(entry)}")
    begin, end = offsets
    if max(map(abs, (*shape, begin, end))) > _MAX_EXTENT:
        raise CheckpointError(f"tensor {_brief(name)} has an impossibly large size or offset")
    numel = math.prod(shape)
    in_data = 0 <= begin <= end <= data_size
    if any(n < 0 for n in shape) or not in_data or end - begin != numel * dtype.itemsize:
        raise CheckpointError(
            f"tensor {_brief(name)} lies outside the data or does not match its shape "
            f"(offsets {begin}..{end} of {data_size} bytes, {dtype.name} {_brief(shape)})"
        )
    # The dtype's name first: its string hash is salted, so keys cannot be made to collide.
    storage = _StorageView((dtype.name, begin, end), dtype, numel)
    return _TensorRef(storage, 0, shape, _contiguous_strides(shape))


def _detect(head: bytes, file_size: int) -> Callable[[str, int], Checkpoint]:
    if head.startswith(_ZIP_MAGIC):
        return _read_zip
    if head.startswith(_HDF5_MAGIC):
        raise CheckpointError("is an HDF5/Keras file, not a PyTorch checkpoint")
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return _read_legacy
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= file_size - 8:
        return _read_safetensors
    if head[257:262] == b"ustar":
        raise CheckpointError("a tar checkpoint from PyTorch < 0.4 is not supported; "
                              "re-save it with a newer PyTorch")
    raise CheckpointError(f"not a PyTorch checkpoint: unknown format (starts with {_brief(head[:8])})")


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read the state_dict in ``path`` (torch zip or legacy, safetensors, npz); runs no code from it."""
    path = os.fspath(path)
    label = safe_text(os.path.basename(os.path.normpath(path)) or path, 80)
    try:
        if os.path.isdir(path):
            raise CheckpointError("is a directory, not a checkpoint file")
        file_size = os.path.getsize(path)
        if file_size == 0:
            raise CheckpointError("is empty")
        with open(path, "rb") as file:
            head = file.read(512)
        return _detect(head, file_size)(path, file_size)
    except CheckpointError as exc:
        message = " ".join(str(exc).split())
        separator = " " if message.startswith("is ") else ": "
        raise CheckpointError(safe_text(f"{label}{separator}{message}", MESSAGE_LIMIT)) from None
    except FileNotFoundError:
        raise CheckpointError(f"{label}: no such file") from None
    except OSError as exc:
        reason = safe_text(exc.strerror or exc, 100)
        raise CheckpointError(f"{label}: cannot read ({reason})") from None
