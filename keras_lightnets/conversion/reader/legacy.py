"""PyTorch's legacy format (torch < 1.6): magic number, protocol version, sys_info,
the object (storages by persistent id), the storage keys, then each storage's
element count and bytes."""

from __future__ import annotations

import mmap
import os
import struct

from keras_lightnets.conversion.reader.assemble import _assemble
from keras_lightnets.conversion.reader.tensors import (
    Checkpoint,
    CheckpointError,
    _brief,
    _read_exactly,
    _StorageTable,
)
from keras_lightnets.conversion.reader.unpickler import _PickleBudget, _unpickle

_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001


def read_legacy(file, file_size: int) -> Checkpoint:
    """A checkpoint of torch < 1.6 from the open file ``file``: a sequence of pickles, then the storages."""
    with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
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
