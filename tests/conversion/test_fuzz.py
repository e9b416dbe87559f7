"""Fuzzing the checkpoint reader (seeded mutations of all four formats) and the
.h5 reader with its record (mutated bytes, datasets, links and attributes).

Every mutant must either read or raise the reader's own error (CheckpointError,
WeightsMismatchError) with a one-line message of at most 300 characters; any
other exception, a case slower than PER_CASE_SECONDS, a hang or a memory
blow-up fails the test. Each .h5 case must also leave its peak memory within
2 x the file's size + 300 MB and read no byte of the marker file its links and
external storage point at. A batch runs in one subprocess under an
address-space limit (RLIMIT_AS) and a timeout, so a blow-up fails the test
instead of the machine.

Run directly to fuzz longer:  python -m tests.test_fuzz [h5] SEED_DIR CASES SEED
"""

import json
import os
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASES = 2400
BATCH_SECONDS = 60
PER_CASE_SECONDS = 2.0
ADDRESS_SPACE_LIMIT = 3 << 30  # numpy and the interpreter map ~1 GB of address space

INTERESTING_INTS = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF,
                    2**63 - 1, 2**64 - 1, 2**32, 2**40]
PICKLE_OPCODES = b"()0.12JKMLNX\x8a\x8bq]ae}stuhjrR\x85\x86\x87bcQ\x80\x88\x89\x94\x95\x81\x8f\x90\x91"


# ------------------------------------------------------------------------ seed files


def write_seeds(folder):
    """One small, valid checkpoint per format (two for zip and npz), written by torch and numpy."""
    import argparse

    import torch

    torch.manual_seed(0)
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state_dict = {
        "conv.weight": torch.randn(2, 3, 1, 1),
        "bn.running_var": torch.rand(2) + 0.5,
        "bn.num_batches_tracked": torch.tensor(7),
        "half": torch.randn(3).half(),
        "bf16": torch.randn(2, 2).bfloat16()[1:],
        "view": base.t(),
        "neg": base[1]._neg_view(),
        "mask": torch.tensor([True, False]),
        "tied": base,
    }
    wrapped = {"state_dict": state_dict, "epoch": 3, "args": argparse.Namespace(lr=0.1)}
    paths = {}
    paths["zip"] = os.path.join(folder, "seed_zip.pth")
    torch.save(wrapped, paths["zip"])
    paths["legacy"] = os.path.join(folder, "seed_legacy.pth")
    torch.save(wrapped, paths["legacy"], _use_new_zipfile_serialization=False)
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "h": np.ones(3, np.float16),
              "i": np.arange(4, dtype=np.int64), "f": np.asfortranarray(np.eye(2, dtype=np.float32))}
    paths["npz"] = os.path.join(folder, "seed.npz")
    np.savez(paths["npz"], **arrays)
    paths["npz_deflated"] = os.path.join(folder, "seed_deflated.npz")
    np.savez_compressed(paths["npz_deflated"], **arrays)
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, array in arrays.items():
        data = np.ascontiguousarray(array).tobytes()
        dtype = {"float32": "F32", "float16": "F16", "int64": "I64"}[array.dtype.name]
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header).encode()
    paths["safetensors"] = os.path.join(folder, "seed.safetensors")
    with open(paths["safetensors"], "wb") as file:
        file.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))
    return paths


# ------------------------------------------------------------------------- mutations


def _flip_bits(rng, data):
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
    return "bit flips"


def _truncate(rng, data):
    cut = rng.randrange(len(data))
    del data[cut:]
    return f"truncated at {cut}"


def _overwrite_int(rng, data):
    size = rng.choice((1, 2, 4, 8))
    if len(data) < size:
        return "none"
    position = rng.randrange(len(data) - size + 1)
    value = rng.choice(INTERESTING_INTS) & ((1 << (8 * size)) - 1)
    data[position:position + size] = value.to_bytes(size, "little")
    return f"int {value} at {position}"


def _zip_field(rng, data):
    """Edit one field of a local header, central directory entry or end record."""
    layouts = {b"PK\x03\x04": [(6, 2), (8, 2), (18, 4), (22, 4), (26, 2), (28, 2)],
               b"PK\x01\x02": [(8, 2), (10, 2), (20, 4), (24, 4), (28, 2), (30, 2), (42, 4)],
               b"PK\x05\x06": [(8, 2), (10, 2), (12, 4), (16, 4)]}
    signature = rng.choice(list(layouts))
    found = []
    at = data.find(signature)
    while at >= 0 and len(found) < 64:
        found.append(at)
        at = data.find(signature, at + 4)
    if not found:
        return _flip_bits(rng, data)
    at = rng.choice(found)
    offset, size = rng.choice(layouts[signature])
    if at + offset + size > len(data):
        return "none"
    value = rng.choice(INTERESTING_INTS + [rng.randrange(1 << (8 * size))]) & ((1 << (8 * size)) - 1)
    data[at + offset:at + offset + size] = value.to_bytes(size, "little")
    return f"zip field {signature!r}+{offset} = {value}"


def _pickle_opcode(rng, data):
    """Replace, insert or delete one byte where pickle opcodes live (or anywhere)."""
    start = max(0, data.find(b"\x80\x02"))
    end = min(len(data), start + 4000)
    position = rng.randrange(start, max(start + 1, end))
    if position >= len(data):
        return "none"
    action = rng.choice(("replace", "insert", "delete"))
    if action == "replace":
        data[position] = rng.choice(PICKLE_OPCODES)
    elif action == "insert":
        data[position:position] = bytes([rng.choice(PICKLE_OPCODES)])
    else:
        del data[position]
    return f"opcode {action} at {position}"


def _header_text(rng, data):
    """Edit the JSON of a safetensors header or the dict of a .npy header."""
    replacements = [b"99999999999999999999999", b"-1", b"[[[[[[[[", b"\"\\ud800\"", b"0",
                    b"'<f4'", b"'|O'", b"(0, 18446744073709551616)", b"- - - 1", b"\x1b[2J",
                    b"1e999", b"{}", b"null", b"true", b"(1,", b"'''"]
    anchors = [at for at in range(len(data)) if data[at:at + 1] in (b":", b",", b"(", b"[")][:400]
    if not anchors:
        return _flip_bits(rng, data)
    at = rng.choice(anchors) + 1
    length = rng.randrange(0, 12)
    data[at:at + length] = rng.choice(replacements)
    return f"header edit at {at}"


def _splice(rng, data):
    start = rng.randrange(len(data))
    length = rng.randrange(1, 64)
    at = rng.randrange(len(data))
    data[at:at] = data[start:start + length] * rng.choice((1, 2, 16))
    return f"splice at {at}"


MUTATIONS = [_flip_bits, _truncate, _overwrite_int, _zip_field, _pickle_opcode, _header_text, _splice]
FORMAT_MUTATIONS = {
    "zip": MUTATIONS,
    "legacy": [_flip_bits, _truncate, _overwrite_int, _pickle_opcode, _pickle_opcode, _splice],
    "npz": MUTATIONS,
    "npz_deflated": [_flip_bits, _truncate, _zip_field, _header_text, _splice],
    "safetensors": [_flip_bits, _truncate, _overwrite_int, _header_text, _header_text, _splice],
}


def mutate(rng, seed_bytes, fmt):
    data = bytearray(seed_bytes)
    steps = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        if not data:
            break
        steps.append(rng.choice(FORMAT_MUTATIONS[fmt])(rng, data))
    return bytes(data), "; ".join(steps)


# --------------------------------------------------------------------------- the batch


def run_one(read, path, errors, outcomes):
    """Runs `read(path)`, counting the outcome ("read" or the first of `errors`);
    returns what is wrong with it, or None."""
    try:
        read(path)
        outcomes["read"] += 1
    except errors as exc:
        outcomes[errors[0].__name__] += 1
        message = str(exc)
        if len(message) > 300 or "\n" in message or not message.isprintable():
            return f"bad message ({len(message)} chars): {message[:200]!r}"
    except Exception as exc:  # noqa: BLE001 - anything else is what the fuzzer hunts
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    return None


def run_batch(seed_dir, cases, seed):
    """Fuzz in this process; returns a summary dict. Meant to run in a limited subprocess."""
    from keras_lightnets.conversion.reader import CheckpointError, read_checkpoint

    seeds = {}
    for name in sorted(os.listdir(seed_dir)):
        fmt = {"seed_zip.pth": "zip", "seed_legacy.pth": "legacy", "seed.npz": "npz",
               "seed_deflated.npz": "npz_deflated", "seed.safetensors": "safetensors"}[name]
        with open(os.path.join(seed_dir, name), "rb") as file:
            seeds[fmt] = file.read()
    rng = random.Random(seed)
    outcomes = {"read": 0, "CheckpointError": 0}
    failures, slowest = [], (0.0, "")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "mutant.bin")
        for case in range(cases):
            fmt = sorted(seeds)[case % len(seeds)]
            data, how = mutate(rng, seeds[fmt], fmt)
            with open(path, "wb") as file:
                file.write(data)
            case_started = time.perf_counter()
            failure = run_one(read_checkpoint, path, (CheckpointError,), outcomes)
            elapsed = time.perf_counter() - case_started
            if elapsed > slowest[0]:
                slowest = (elapsed, f"case {case} ({fmt}: {how})")
            if elapsed > PER_CASE_SECONDS:
                failure = failure or f"took {elapsed:.1f} s"
            if failure:
                failures.append(f"case {case} ({fmt}: {how}): {failure}")
    return {"cases": cases, "outcomes": outcomes, "failures": failures[:20],
            "failure_count": len(failures), "seconds": time.perf_counter() - started,
            "slowest": slowest}


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


def test_fuzz_reader(tmp_path):
    seed_dir = tmp_path / "seeds"
    seed_dir.mkdir()
    write_seeds(seed_dir)
    started = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-m", "tests.conversion.test_fuzz", str(seed_dir), str(CASES), "13"],
        cwd=ROOT, capture_output=True, text=True, timeout=BATCH_SECONDS + 30,
        preexec_fn=_limit_memory,
    )
    elapsed = time.perf_counter() - started
    assert process.returncode == 0, process.stderr[-3000:]
    summary = json.loads(process.stdout.strip().splitlines()[-1])
    print(f"\n{summary['cases']} cases in {summary['seconds']:.1f} s "
          f"({summary['cases'] / summary['seconds']:.0f}/s); outcomes {summary['outcomes']}; "
          f"slowest {summary['slowest'][0]:.3f} s")
    assert summary["failure_count"] == 0, "\n".join(summary["failures"])
    assert sum(summary["outcomes"].values()) == CASES >= 2000
    assert summary["outcomes"]["read"] > 0 and summary["outcomes"]["CheckpointError"] > CASES // 2
    assert elapsed <= BATCH_SECONDS


def test_fuzz_harness_catches_other_exceptions(tmp_path, monkeypatch):
    """The batch reports an exception other than CheckpointError: the fuzz test can fail."""
    from keras_lightnets.conversion import reader

    seed_dir = tmp_path / "seeds"
    seed_dir.mkdir()
    write_seeds(seed_dir)

    def broken(path):
        raise OverflowError("as from as_strided")

    monkeypatch.setattr(reader, "read_checkpoint", broken)
    summary = run_batch(seed_dir, 5, 0)
    assert summary["failure_count"] == 5 and "OverflowError" in summary["failures"][0]


# ----------------------------------------------------------------------- .h5 files

H5_CASES = 600
H5_SLACK_MB = 300
H5_LAYERS = {"conv": [("kernel", (3, 3, 3, 4), "<f4")],
             "bn": [(name, (4,), "<f4") for name in ("gamma", "beta", "moving_mean", "moving_variance")],
             "dense": [("kernel", (4, 3), "<f2"), ("bias", (3,), "<f8")]}
H5_RECORD = {"format": 1, "arch": "mobilenet_v2", "builder": "MobileNetV2",
             "builder_kwargs": {"alpha": 0.35, "classes": 3, "input_shape": [32, 32, 3], "style": "torch"},
             "preprocessing": {"mode": "torch", "size": 32, "resize": 36, "resample": "bilinear"},
             "source": {"naming": "torchvision", "checkpoint": "m.pth", "sha256": "0" * 64},
             "class_names": ["a", "b", "c"]}
HOSTILE_VALUES = [None, [], {}, "", "x" * 5000, -1, 0, 2**70, 1e308, float("nan"), True, "../../etc/passwd",
                  json.loads("[" * 20 + "]" * 20), {"weights": "x"}, [60000, 60000, 3], "lanczos"]
HOSTILE_TEXTS = ["[]", "null", '"x"', "5", "[" * 50_000 + "]" * 50_000, "{", "\udcff", "{}" * 1000, '{"a": 1e999}']


def write_h5_seed(path):
    """A small legacy-layout weights file with a record, written with h5py only."""
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([name.encode() for name in H5_LAYERS])
        f.attrs["keras_lightnets"] = json.dumps(H5_RECORD)
        for layer, weights in H5_LAYERS.items():
            group = f.create_group(layer)
            group.attrs["weight_names"] = np.array([f"{layer}/{name}:0".encode() for name, _, _ in weights])
            for name, shape, dtype in weights:
                group.create_dataset(f"{layer}/{name}:0", data=rng.normal(size=shape).astype(dtype))


def _h5_weight(rng, f):
    layer = rng.choice(list(H5_LAYERS))
    name, shape, _ = rng.choice(H5_LAYERS[layer])
    return f[layer][layer], f"{name}:0", shape


def _h5_dataset(rng, f, marker):
    group, name, shape = _h5_weight(rng, f)
    del group[name]
    kind = rng.choice(["external", "external_relative", "virtual", "external_link", "soft_link", "soft_link_loop",
                       "unallocated", "chunked_unallocated", "dtype", "shape", "filters", "scalar", "empty"])
    if kind.startswith("external_") or kind == "external":
        target = marker.raw if kind == "external" else os.path.relpath(marker.raw, os.path.dirname(f.filename))
        group.create_dataset(name, shape=shape, dtype="<f4", external=[(target, rng.choice([0, 8]), 1 << 20)])
    elif kind == "virtual":
        layout = h5py_module().VirtualLayout(shape=shape, dtype="<f4")
        layout[...] = h5py_module().VirtualSource(marker.h5, "data", shape=shape)
        group.create_virtual_dataset(name, layout)
    elif kind == "external_link":
        group[name] = h5py_module().ExternalLink(rng.choice([marker.h5, marker.raw]), "/data")
    elif kind == "soft_link":
        group[name] = h5py_module().SoftLink(rng.choice(["/conv/conv/kernel:0", "/elsewhere/data", "/nothing"]))
    elif kind == "soft_link_loop":
        group[name] = h5py_module().SoftLink(f"{group.name}/{name}")
    elif kind in ("unallocated", "chunked_unallocated"):
        big = rng.choice([shape, (40000, 40000), (2**31, 2**31), (0,) + shape])
        group.create_dataset(name, shape=big, dtype="<f4", chunks=(64,) * len(big) if kind != "unallocated" and 0 not in big else None)
    elif kind == "dtype":
        dtype = rng.choice(["<i4", "<c8", "?", "<u8", "S4", [("a", "<f4"), ("b", "<f4")], ">f4", "<f2", "<f8"])
        group.create_dataset(name, data=np.ones(shape).astype(np.dtype(dtype)))
    elif kind == "shape":
        group.create_dataset(name, data=np.ones(tuple(rng.randrange(1, 5) for _ in range(rng.randrange(0, 5))), "<f4"))
    elif kind == "filters":
        options = rng.choice([{"compression": "gzip"}, {"scaleoffset": 2}, {"fletcher32": True}, {"shuffle": True},
                              {"compression": "lzf"}])
        group.create_dataset(name, data=np.ones(shape, "<f4"), chunks=True, **options)
    elif kind == "scalar":
        group.create_dataset(name, data=np.float32(1))
    else:
        group.create_dataset(name, shape=(0,), dtype="<f4")
    return f"dataset {group.name}/{name}: {kind}"


def _h5_names(rng, f, marker):
    group = rng.choice([f, f["conv"], f["bn"], f["dense"]])
    attribute = "layer_names" if group == f else "weight_names"
    names = list(group.attrs.get(attribute, []))
    value = rng.choice([np.array(names + names[:1]), np.array(names[1:]), np.arange(3.0), np.array([b"missing"] + names),
                        np.array([b"\xff\xfe"]), np.array([b"x" * 5000]), np.array([b"/dense", b"."]), "conv"])
    group.attrs[attribute] = value
    return f"{attribute} of {group.name}: {str(value)[:40]}"


def _h5_links(rng, f, marker):
    kind = rng.choice(["cycle", "external_root", "soft_root", "group_is_dataset", "drop_group"])
    if kind == "cycle":
        f["conv"]["again"] = f["conv"]
    elif kind == "external_root":
        f["notes"] = h5py_module().ExternalLink(marker.h5, "/")
    elif kind == "soft_root":
        f["notes"] = h5py_module().SoftLink("/notes")
    elif kind == "group_is_dataset":
        del f["bn"]
        f.create_dataset("bn", data=np.ones(3, "<f4"))
    else:
        del f["dense"]
    return f"links: {kind}"


def _h5_record(rng, f, marker):
    record = json.loads(json.dumps(H5_RECORD))
    if rng.random() < 0.2:
        text = rng.choice(HOSTILE_TEXTS)
    else:
        for _ in range(rng.randrange(1, 4)):
            target = rng.choice([record, record["builder_kwargs"], record["preprocessing"], record["source"]])
            key = rng.choice(list(target) + ["weights", "input_tensor", "exec", "resample", "size"])
            if rng.random() < 0.3:
                target.pop(key, None)
            else:
                target[key] = rng.choice(HOSTILE_VALUES)
        text = json.dumps(record)
    f.attrs["keras_lightnets"] = rng.choice([text, text.encode("utf8", "surrogateescape"), np.array([1.0, 2.0])])
    return "record edit"


def h5py_module():
    import h5py

    return h5py


H5_STRUCTURAL = [_h5_dataset, _h5_dataset, _h5_names, _h5_links, _h5_record, _h5_record]
H5_BYTES = [_flip_bits, _truncate, _overwrite_int, _splice]


def mutate_h5(rng, seed_path, path, marker):
    """A mutant of the seed at `path`: structural edits with h5py, or byte edits."""
    import shutil

    if rng.random() < 0.3:
        with open(seed_path, "rb") as file:
            data = bytearray(file.read())
        steps = [rng.choice(H5_BYTES)(rng, data) for _ in range(rng.choice((1, 1, 2)))]
        with open(path, "wb") as file:
            file.write(bytes(data))
        return "; ".join(steps)
    shutil.copyfile(seed_path, path)
    with h5py_module().File(path, "r+") as f:
        return "; ".join(rng.choice(H5_STRUCTURAL)(rng, f, marker) for _ in range(rng.choice((1, 1, 2))))


def read_h5_like_a_command(path):
    """What every command does with a weights file: the record, then the weights
    whose names and shapes fit the expected model, read."""
    from keras_lightnets.weights.h5 import open_weights

    with open_weights(path) as weights:
        weights.record()
        layers = weights.layers
        expected = [(layer, [shape for _, shape, _ in rows]) for layer, rows in H5_LAYERS.items()]
        if layers is not None and [(n, [i.shape for i in infos]) for n, infos in layers] == expected:
            for name, infos in layers:
                arrays = weights.arrays(name)
                assert all(a.dtype.kind == "f" and a.shape == i.shape for a, i in zip(arrays, infos))


def _vm_kb(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


def run_h5_batch(seed_dir, cases, seed):
    """Fuzz the .h5 reader in this process; returns a summary dict."""
    from keras_lightnets.weights.h5 import WeightsMismatchError
    from tests.hostile_files import Marker

    marker = Marker(seed_dir, shape=(64,))
    seed_path = os.path.join(seed_dir, "seed.h5")
    write_h5_seed(seed_path)
    rng = random.Random(seed)
    outcomes = {"read": 0, "WeightsMismatchError": 0}
    failures, slowest, most_memory = [], (0.0, ""), (0.0, "")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=seed_dir) as folder:
        path = os.path.join(folder, "mutant.h5")
        for case in range(cases):
            try:
                how = mutate_h5(rng, seed_path, path, marker)
            except Exception as exc:  # noqa: BLE001 - h5py refused to write this mutant
                how = f"(not written: {type(exc).__name__})"
                write_h5_seed(path)
            marker.reset()
            with open("/proc/self/clear_refs", "w") as clear:
                clear.write("5")
            before = _vm_kb("VmRSS:")
            case_started = time.perf_counter()
            failure = run_one(read_h5_like_a_command, path, (WeightsMismatchError, FileNotFoundError), outcomes)
            elapsed = time.perf_counter() - case_started
            extra_mb = (_vm_kb("VmHWM:") - before) / 1024
            if elapsed > slowest[0]:
                slowest = (elapsed, f"case {case} ({how})")
            if extra_mb > most_memory[0]:
                most_memory = (extra_mb, f"case {case} ({how})")
            if elapsed > PER_CASE_SECONDS:
                failure = failure or f"took {elapsed:.1f} s"
            if extra_mb > 2 * os.path.getsize(path) / 2**20 + H5_SLACK_MB:
                failure = failure or f"took {extra_mb:.0f} MB"
            if not marker.untouched():
                failure = failure or "read the marker file"
            if failure:
                failures.append(f"case {case} ({how}): {failure}")
    return {"cases": cases, "outcomes": outcomes, "failures": failures[:20], "failure_count": len(failures),
            "seconds": time.perf_counter() - started, "slowest": slowest, "most_memory": most_memory}


def test_fuzz_h5_reader(tmp_path):
    started = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-m", "tests.conversion.test_fuzz", "h5", str(tmp_path), str(H5_CASES), "7"],
        cwd=ROOT, capture_output=True, text=True, timeout=BATCH_SECONDS + 30, preexec_fn=_limit_memory,
    )
    elapsed = time.perf_counter() - started
    assert process.returncode == 0, process.stderr[-3000:]
    summary = json.loads(process.stdout.strip().splitlines()[-1])
    print(f"\n{summary['cases']} .h5 cases in {summary['seconds']:.1f} s; outcomes {summary['outcomes']}; "
          f"slowest {summary['slowest'][0]:.3f} s; most memory {summary['most_memory'][0]:.1f} MB")
    assert summary["failure_count"] == 0, "\n".join(summary["failures"])
    assert sum(summary["outcomes"].values()) == H5_CASES
    assert summary["outcomes"]["read"] > 0 and summary["outcomes"]["WeightsMismatchError"] > H5_CASES // 2
    assert elapsed <= BATCH_SECONDS


def test_h5_fuzz_harness_sees_a_read_marker(tmp_path, monkeypatch):
    """A reader that follows external storage is caught: the batch can fail."""
    import h5py

    from keras_lightnets.weights import h5

    def careless(path):
        try:
            with h5py.File(path, "r") as f:
                f.visititems(lambda name, node: node[()] if isinstance(node, h5py.Dataset) else None)
        except Exception:  # noqa: BLE001, S110 - only what it reads matters here
            pass

    monkeypatch.setattr(sys.modules[__name__], "read_h5_like_a_command", careless)
    summary = run_h5_batch(str(tmp_path), 120, 7)
    assert any("read the marker file" in failure for failure in summary["failures"]), summary["failures"]
    assert h5.open_weights  # the real reader is untouched


if __name__ == "__main__":
    if sys.argv[1] == "h5":
        print(json.dumps(run_h5_batch(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        seed_dir, cases, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
        print(json.dumps(run_batch(seed_dir, cases, seed)))
