"""Safe, torch-free reading of PyTorch checkpoints into numpy arrays.

``read_checkpoint`` reads the formats a user is likely to hand the converter:
PyTorch's zip format (``torch.save`` since 1.6, `zip`), its legacy format
(torch < 1.6, `legacy`), ``.safetensors`` (`safetensors`) and ``.npz`` (`npz`).
Pickles are read by a restricted unpickler (`unpickler`) that only knows
tensors, storages and plain data; anything else is refused with an error
naming the global, and nothing from the file is ever executed. Tensors are
described lazily while unpickling and only materialised afterwards
(`assemble`), once every offset, shape and stride has been checked against
its storage (`tensors`).
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Callable

from keras_lightnets.conversion.reader.legacy import read_legacy
from keras_lightnets.conversion.reader.npz import read_npz
from keras_lightnets.conversion.reader.safetensors import read_safetensors
from keras_lightnets.conversion.reader.tensors import (
    Checkpoint,
    CheckpointError,
    _brief,
)
from keras_lightnets.conversion.reader.zip import (
    _ZIP_MAGIC,
    _zip_errors,
    check_members,
    read_pytorch_zip,
)
from keras_lightnets.files import (
    MESSAGE_LIMIT,
    NotRegularFileError,
    open_regular,
    safe_text,
)

__all__ = ["Checkpoint", "CheckpointError", "read_checkpoint"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _read_zip(file, file_size: int) -> Checkpoint:
    """A PyTorch zip checkpoint, or an .npz, from the open file ``file``."""
    with _zip_errors("directory"):
        archive = zipfile.ZipFile(file)
    with archive:
        check_members(archive)
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
            return read_pytorch_zip(archive, root, file_size)
        if names and all(n.endswith(".npy") for n in names):
            return read_npz(archive, names, file_size)
        if "config.json" in names and "model.weights.h5" in names:
            raise CheckpointError("is a Keras .keras archive, not a PyTorch checkpoint")
        raise CheckpointError(
            "zip archive without a single <root>/data.pkl: not a PyTorch checkpoint"
        )



def _detect(head: bytes, file_size: int) -> Callable[[object, int], Checkpoint]:
    if head.startswith(_ZIP_MAGIC):
        return _read_zip
    if head.startswith(_HDF5_MAGIC):
        raise CheckpointError("is an HDF5/Keras file, not a PyTorch checkpoint")
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return read_legacy
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= file_size - 8:
        return read_safetensors
    if head[257:262] == b"ustar":
        raise CheckpointError("a tar checkpoint from PyTorch < 0.4 is not supported; "
                              "re-save it with a newer PyTorch")
    raise CheckpointError(f"not a PyTorch checkpoint: unknown format (starts with {_brief(head[:8])})")


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read the state_dict in ``path`` (torch zip or legacy, safetensors, npz); runs no code from it.

    Only a regular file is opened (a FIFO or a device named like a checkpoint is
    refused, never waited on), and it is opened once: every format reads that
    one open file.
    """
    path = os.fspath(path)
    label = safe_text(os.path.basename(os.path.normpath(path)) or path, 80)
    try:
        if os.path.isdir(path):
            raise CheckpointError("is a directory, not a checkpoint file")
        with open_regular(path) as file:
            file_size = os.fstat(file.fileno()).st_size
            if file_size == 0:
                raise CheckpointError("is empty")
            head = file.read(512)
            file.seek(0)
            return _detect(head, file_size)(file, file_size)
    except CheckpointError as exc:
        message = " ".join(str(exc).split())
        separator = " " if message.startswith("is ") else ": "
        raise CheckpointError(safe_text(f"{label}{separator}{message}", MESSAGE_LIMIT)) from None
    except FileNotFoundError:
        raise CheckpointError(f"{label}: no such file") from None
    except NotRegularFileError as exc:
        kind = str(exc).rpartition(" is ")[2]
        raise CheckpointError(f"{label} is {kind}") from None
    except OSError as exc:
        reason = safe_text(exc.strerror or exc, 100)
        raise CheckpointError(f"{label}: cannot read ({reason})") from None
