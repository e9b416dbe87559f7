"""From an unpickled checkpoint to arrays: the state_dict found inside its
wrapper, key prefixes stripped, every tensor checked against its storage, then
the storages read and the arrays built within a memory bound."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import numpy as np
from numpy.lib.stride_tricks import as_strided

from keras_lightnets.conversion.reader.tensors import (
    Checkpoint,
    CheckpointError,
    _brief,
    _DType,
    _output_dtype,
    _TensorRef,
)
from keras_lightnets.conversion.reader.unpickler import _Namespace

# Stride tricks can make a tiny storage expand into a huge tensor, and a deflated
# storage can inflate 1000-fold: bound both the bytes read and the arrays made.
# (fp16 and bf16 double in size as float32; real files stay well within 4x.)
_MAX_EXPANSION = 4
_MAX_EXPANSION_SLACK = 64 << 20

# Reads storages: given {key: (dtype, numel)}, yields (key, bytes) for each, once.
_StorageReader = Callable[[dict], Iterator[tuple[object, bytearray]]]

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

