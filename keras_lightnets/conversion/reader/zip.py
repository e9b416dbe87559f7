"""PyTorch's zip checkpoints (``torch.save`` since 1.6), and the zip archive around .npz files.

Only stored and deflated members are read, each name once, none with ``..`` or
an absolute path; every member's sizes are checked against the file before it
is inflated.
"""

from __future__ import annotations

import contextlib
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator

from keras_lightnets.conversion.reader.assemble import (
    _MAX_EXPANSION,
    _MAX_EXPANSION_SLACK,
    _assemble,
)
from keras_lightnets.conversion.reader.tensors import (
    Checkpoint,
    CheckpointError,
    _brief,
    _read_exactly,
    _StorageTable,
)
from keras_lightnets.conversion.reader.unpickler import (
    _MAX_PICKLE_EXPANSION,
    _MAX_PICKLE_SLACK,
    _PickleBudget,
    _unpickle,
)
from keras_lightnets.files import safe_text

_ZIP_MAGIC = b"PK\x03\x04"
# Python's zipfile inflates deflate in bounded steps; bzip2 and lzma members in one
# call, without bound: only these two methods are read.
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
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


def check_members(archive: zipfile.ZipFile) -> None:
    """Refuses an archive with a member that is not stored or deflated, a name
    given twice (readers disagree on which one counts: PyTorch's loader takes the
    first, zipfile the last) or a name with ``..`` or an absolute path."""
    seen = set()
    for info in archive.infolist():
        name = info.filename
        if info.compress_type not in _METHODS:
            method = _METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
            raise CheckpointError(f"zip member {_brief(name)} is compressed with {method}; "
                                  "only stored and deflate members are read")
        if name in seen:
            raise CheckpointError(f"zip member {_brief(name)} appears twice; the archive is crafted or corrupt")
        seen.add(name)
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or re.match(r"[A-Za-z]:", name):
            raise CheckpointError(f"zip member name {_brief(name)} is absolute or contains '..'")


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


def read_pytorch_zip(archive: zipfile.ZipFile, root: str, file_size: int) -> Checkpoint:
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
