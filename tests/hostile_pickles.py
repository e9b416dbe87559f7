"""Builders of crafted and corrupt checkpoints for the reader's tests and benchmark.

Payloads create a marker file when a plain unpickler loads them, so a test can
show both that the payload is live and that the reader did not run it. The torch-free
crafted files of issue 13 are built by bench/crafted_checkpoints.py (the
benchmark times them; the tests import them from there).
"""

import collections
import io
import os
import pickle
import pickletools
import struct
import subprocess
import zipfile

from bench.crafted_checkpoints import (  # noqa: F401  (the tests use them as hp.NAME)
    CRAFTED,
    NEG_METADATA,
    op_dict,
    op_global,
    op_int,
    op_str,
    op_tensor,
    op_tuple,
    pickle_of,
    tuple_dag,
    write_crafted_zip,
    write_legacy_raw,
    write_npz_raw,
    write_safetensors_raw,
)

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# kind -> the global the reader must name when refusing it
PAYLOAD_GLOBALS = {
    "os.system": "posix.system",
    "exec": "builtins.exec",
    "eval": "builtins.eval",
    "subprocess.call": "subprocess.call",
}


class Payload:
    """Pickles as a call that creates ``marker`` when unpickled."""

    def __init__(self, kind, marker):
        self.kind, self.marker = kind, os.fspath(marker)

    def __reduce__(self):
        if self.kind == "os.system":
            return os.system, (f"touch '{self.marker}'",)
        if self.kind == "exec":
            return exec, (f"open({self.marker!r}, 'w').close()",)
        if self.kind == "eval":
            return eval, (f"open({self.marker!r}, 'w').close()",)
        if self.kind == "subprocess.call":
            return subprocess.call, (["touch", self.marker],)
        raise ValueError(self.kind)


def payload_then(value, kind, marker):
    """A protocol-2 pickle that runs the payload, discards its result, then returns ``value``."""
    payload = pickle.dumps(Payload(kind, marker), protocol=2)
    value_pickle = pickle.dumps(value, protocol=2)
    assert payload.endswith(b".") and value_pickle.startswith(b"\x80\x02")
    # PROTO 2, the payload's opcodes, POP, then the value's opcodes and STOP.
    # The value pickle uses no memo, so the payload's memo indices cannot clash.
    return b"\x80\x02" + payload[2:-1] + b"0" + value_pickle[2:]


# ------------------------------------------------------------- hand-made checkpoints


class FakeStorage:
    """A storage for the hand-made pickles: written as a persistent id and raw bytes."""

    def __init__(self, key, storage_type, data, numel=None, dtype_size=4):
        self.key, self.storage_type, self.data = key, storage_type, bytes(data)
        self.numel = len(self.data) // dtype_size if numel is None else numel


class FakeTensor:
    """Pickles exactly as torch does a tensor, but with any offset, size and stride."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def __reduce__(self):
        import torch  # only tests that have torch build these

        args = (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict())
        return torch._utils._rebuild_tensor_v2, args


class _StoragePickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None


def dumps_with_storages(obj):
    """Pickle ``obj`` the way torch.save does, with FakeStorages as persistent ids."""
    buffer = io.BytesIO()
    _StoragePickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def write_zip_checkpoint(path, data_pkl, storages=(), root="archive", byteorder=b"little", extra=None):
    """Write a zip checkpoint laid out like torch.save's from a data.pkl and its storages."""
    entries = {f"{root}/data.pkl": data_pkl, f"{root}/byteorder": byteorder}
    entries.update({f"{root}/data/{s.key}": s.data for s in storages})
    entries[f"{root}/version"] = b"3\n"
    entries.update(extra or {})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


def write_legacy_checkpoint(path, object_pickle, storages=(), header=None, keys_pickle=None):
    """Write a legacy (torch < 1.6) checkpoint; ``header`` replaces the three header pickles."""
    sys_info = {"protocol_version": LEGACY_PROTOCOL_VERSION, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    if header is None:
        values = (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, sys_info)
        header = [pickle.dumps(value, protocol=2) for value in values]
    storages = sorted(storages, key=lambda s: s.key)
    if keys_pickle is None:
        keys_pickle = pickle.dumps([s.key for s in storages], protocol=2)
    with open(path, "wb") as file:
        file.write(b"".join(header) + object_pickle + keys_pickle)
        for storage in storages:
            file.write(struct.pack("<q", storage.numel) + storage.data)


def replace_zip_entries(source, destination, replacements):
    """Copy a zip, replacing entries whose name ends with a key of ``replacements`` (None drops it)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(destination, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            suffix = next((s for s in replacements if info.filename.endswith(s)), None)
            if suffix is None:
                dst.writestr(info.filename, src.read(info))
            elif replacements[suffix] is not None:
                dst.writestr(info.filename, replacements[suffix])


def legacy_pieces(path):
    """Split a legacy checkpoint into its five pickles (as bytes) and the storage data after them."""
    with open(path, "rb") as file:
        pieces = []
        for _ in range(5):
            start = file.tell()
            for _ in pickletools.genops(file):  # stops right after the STOP opcode
                pass
            end = file.tell()
            file.seek(start)
            pieces.append(file.read(end - start))
        return pieces, file.read()
