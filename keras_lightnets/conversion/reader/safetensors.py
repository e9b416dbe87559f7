"""``.safetensors``: an 8-byte header length, a JSON header (size capped), raw data."""

from __future__ import annotations

import json
import math
import struct

from keras_lightnets.conversion.reader.assemble import _assemble, _plain_extra
from keras_lightnets.conversion.reader.tensors import (
    _DTYPES,
    _MAX_EXTENT,
    Checkpoint,
    CheckpointError,
    _brief,
    _contiguous_strides,
    _int_tuple,
    _read_exactly,
    _StorageView,
    _TensorRef,
)
from keras_lightnets.files import safe_text

_SAFETENSORS_DTYPES = {
    "F32": "float32", "F64": "float64", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}

_MAX_SAFETENSORS_HEADER = 100 << 20


def read_safetensors(file, file_size: int) -> Checkpoint:
    """A .safetensors file from the open file ``file``."""
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
