"""The restricted unpickler: an allow-list of inert stand-ins, and a scan of
every pickle's opcodes (bounded work, memo and key costs) before it is loaded."""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import pickletools

import numpy as np

from keras_lightnets.conversion.reader.tensors import (
    _DTYPES,
    _STORAGE_CLASSES,
    CheckpointError,
    _brief,
    _Inert,
    _StorageTable,
    _TensorRef,
)
from keras_lightnets.files import safe_text

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

