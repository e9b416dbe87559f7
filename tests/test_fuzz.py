"""Fuzzing the checkpoint reader: seeded mutations of all four formats.

Every mutant must either read or raise the reader's own CheckpointError with a
one-line message of at most 300 characters; any other exception, a case slower
than PER_CASE_SECONDS, a hang or a memory blow-up fails the test. The whole
batch runs in one subprocess under an address-space limit (RLIMIT_AS) and a
timeout, so a blow-up fails the test instead of the machine.

Run directly to fuzz longer:  python -m tests.test_fuzz SEED_DIR CASES SEED
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
            failure = None
            try:
                read_checkpoint(path)
                outcomes["read"] += 1
            except CheckpointError as exc:
                outcomes["CheckpointError"] += 1
                message = str(exc)
                if len(message) > 300 or "\n" in message or not message.isprintable():
                    failure = f"bad message ({len(message)} chars): {message[:200]!r}"
            except Exception as exc:  # noqa: BLE001 - anything else is what the fuzzer hunts
                failure = f"{type(exc).__name__}: {str(exc)[:200]}"
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
        [sys.executable, "-m", "tests.test_fuzz", str(seed_dir), str(CASES), "13"],
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


if __name__ == "__main__":
    seed_dir, cases, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(run_batch(seed_dir, cases, seed)))
