"""Issue 13: every class of malformed checkpoint gets the reader's one-line error, quickly.

Each crafted case of `tests/hostile_pickles.CRAFTED` is read in a fresh process
with a timeout (a hash bomb hangs inside C code, where no Python signal reaches),
and must raise CheckpointError: one printable line of at most 300 characters,
holding the expected fragment. The neighbours below check that what real
files contain still reads.
"""

import json
import os
import pathlib
import signal
import struct
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from keras_lightnets.conversion.reader import (
    CheckpointError,
    read_checkpoint,
    tensors,
    unpickler,
)
from keras_lightnets.files import safe_text
from tests import hostile_pickles as hp
from tests.helpers import slow_converter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASE_SECONDS = 5

EXPECTED = {
    "zero_element_huge_dims_zip": "is impossibly large",
    "zero_element_huge_dims_npz": "malformed .npy header",
    "zero_element_huge_dims_npz_in_bounds_digits": "is impossibly large",
    "zero_element_huge_dims_safetensors": "impossibly large size",
    "huge_stride_half": "is impossibly large",
    "huge_stride_bfloat16": "is impossibly large",
    "huge_stride_negated": "is impossibly large",
    "bool_negated": "bool tensor is marked as negated",
    "safetensors_huge_integer": "corrupt safetensors header",
    "safetensors_deep_nesting": "nested too deeply",
    "zip64_offset": "claims more data than the file holds",
    "zip_bad_utf8_name": "corrupt zip archive",
    "zip_corrupt_deflate": "while decompressing data",
    "npy_header_token_error": "malformed .npy header",
    "npy_header_nested_minus": "malformed .npy header",
    "npy_header_long_plus": "malformed .npy header",
    "hash_bomb_dict_key": "too costly to hash",
    "hash_bomb_legacy_header": "too costly to hash",
    "hash_bomb_numpy_dtype": "refused to unpickle numpy dtype (((...)",
    "hash_collisions": "too costly to hash",
    "repr_bomb_size": "tensor size is [[[...]",
    "repr_bomb_describe": "no state_dict found",
    "long_global_name": "refused to unpickle 'ososos",
    "inflation_bomb_65k": "'archive/data.pkl' inflates to 64880644 bytes",
    "inflation_bomb_1m": "'archive/data.pkl' inflates to 999948292 bytes",
    "storage_inflation": "the storages inflate to 1073741824 bytes",
    "opcode_flood": "opcodes for a file of this size",
    "container_flood": "opcodes for a file of this size",
    "container_flood_within_budget": "storage list does not match",
    "build_sets_function_defaults": "refused to set state",
    "safetensors_long_shape": "malformed safetensors entry",
    "zip_many_entries": "without a single <root>/data.pkl",
}

CHILD = r"""
import json, os, sys, time
from keras_lightnets.conversion.reader import CheckpointError, read_checkpoint
folder = sys.argv[1]
for name in sys.argv[2:]:
    print(json.dumps({"start": name}), flush=True)
    started = time.perf_counter()
    try:
        read_checkpoint(os.path.join(folder, name + ".pth"))
        result = {"outcome": "read"}
    except CheckpointError as exc:
        result = {"outcome": "CheckpointError", "message": str(exc)}
    except Exception as exc:  # what the test must catch: recorded, and the next cases still run
        result = {"outcome": type(exc).__name__, "message": str(exc)[:300]}
    result.update(name=name, seconds=time.perf_counter() - started)
    print(json.dumps(result), flush=True)
"""


@pytest.fixture(scope="module")
def crafted_results(tmp_path_factory):
    """Reads every crafted case in one fresh process (a hash bomb hangs inside C code,
    where no Python signal reaches it); a case that hangs is reported as such."""
    folder = tmp_path_factory.mktemp("crafted")
    for name, (_, build) in hp.CRAFTED.items():
        build(folder / f"{name}.pth", 200_000)
    command = [sys.executable, "-c", CHILD, str(folder), *hp.CRAFTED]
    try:
        output = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                timeout=CASE_SECONDS * 6).stdout
        hung = None
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        hung = "timeout"
    results, current = {}, None
    for line in output.splitlines():
        record = json.loads(line)
        if "start" in record:
            current = record["start"]
        else:
            results[record["name"]] = record
            current = None
    if hung and current:
        results[current] = {"outcome": "hang"}
    return results


def assert_one_line(message):
    assert len(message) <= 300, message
    assert message.isprintable(), message  # no newlines, escape codes or lone surrogates


def test_every_crafted_case_has_an_expectation():
    assert set(EXPECTED) == set(hp.CRAFTED)


@pytest.mark.parametrize("name", list(hp.CRAFTED))
def test_crafted_case_is_refused_quickly(crafted_results, name):
    result = crafted_results.get(name, {"outcome": "not reached: an earlier case hung or crashed"})
    assert result["outcome"] == "CheckpointError", result
    message = result["message"]
    assert message.startswith(f"{name}.pth: "), message
    assert EXPECTED[name] in message, message
    assert_one_line(message)
    assert result["seconds"] < CASE_SECONDS


# ----------------------------------------------------------------- classes, in detail


def test_zero_element_tensor_with_plausible_dims_reads(tmp_path):
    body = hp.op_dict([(hp.op_str("w"), hp.op_tensor("0", 0, 0, (0, 512), (512, 1)))])
    path = tmp_path / "empty.pth"
    hp.write_crafted_zip(path, hp.pickle_of(body), {"0": b""})
    tensor = read_checkpoint(path).tensors["w"]
    assert tensor.shape == (0, 512) and tensor.dtype == np.float32


@pytest.mark.parametrize("storage, itemsize", [("HalfStorage", 2), ("BFloat16Storage", 2), ("FloatStorage", 4)])
def test_size_one_dimension_with_any_stride_reads(tmp_path, storage, itemsize):
    # Strides of size-1 dimensions are never used: torch allows any value there.
    data = np.arange(4, dtype=np.float16 if itemsize == 2 else np.float32)
    raw = data.tobytes() if storage != "BFloat16Storage" else (
        (data.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes())
    body = hp.op_dict([(hp.op_str("w"), hp.op_tensor("0", 4, 0, (1, 4), (2**40, 1), storage, hp.NEG_METADATA))])
    path = tmp_path / "strided.pth"
    hp.write_crafted_zip(path, hp.pickle_of(body), {"0": raw})
    np.testing.assert_array_equal(read_checkpoint(path).tensors["w"], -data.astype(np.float32).reshape(1, 4))


def test_negated_integer_tensor_reads(tmp_path):
    body = hp.op_dict([(hp.op_str("w"), hp.op_tensor("0", 3, 0, (3,), (1,), "LongStorage", hp.NEG_METADATA))])
    path = tmp_path / "neg.pth"
    hp.write_crafted_zip(path, hp.pickle_of(body), {"0": np.arange(3, dtype=np.int64).tobytes()})
    np.testing.assert_array_equal(read_checkpoint(path).tensors["w"], [0, -1, -2])


def test_safetensors_integer_of_20_digits_is_a_size_error(tmp_path):
    path = tmp_path / "big.safetensors"
    hp.write_safetensors_raw(path, '{"w": {"dtype": "F32", "shape": [%d], "data_offsets": [0, 4]}}' % 10**19)
    with pytest.raises(CheckpointError, match="impossibly large"):
        read_checkpoint(path)


@pytest.mark.parametrize("version, length_format, encoding", [
    (b"\x02\x00", "<I", "latin1"), (b"\x03\x00", "<I", "utf8"),
])
def test_npy_header_versions_2_and_3_read(tmp_path, version, length_format, encoding):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3L), }".encode(encoding)
    path = tmp_path / "v.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w.npy", b"\x93NUMPY" + version + struct.pack(length_format, len(header))
                         + header + np.arange(6, dtype=np.float32).tobytes())
    np.testing.assert_array_equal(read_checkpoint(path).tensors["w"], np.arange(6).reshape(2, 3))


def test_npy_header_big_endian_and_objects_are_named(tmp_path):
    for descr in ("'>f4'", "'|O'", "[('a', '<f4')]"):
        path = tmp_path / "odd.npz"
        hp.write_npz_raw(path, {"w.npy": ("{'descr': %s, 'fortran_order': False, 'shape': (1,), }" % descr,
                                          bytes(4))})
        with pytest.raises(CheckpointError, match="'w.npy'") as info:
            read_checkpoint(path)
        assert_one_line(str(info.value))


def test_deflated_data_pkl_within_limits_reads(tmp_path):
    body = hp.op_dict([(hp.op_str("w"), hp.op_tensor("0", 3, 0, (3,), (1,)))])
    path = tmp_path / "deflated.pth"
    hp.write_crafted_zip(path, hp.pickle_of(body), {"0": np.ones(3, np.float32).tobytes()},
                         compress_pickle=True)
    np.testing.assert_array_equal(read_checkpoint(path).tensors["w"], np.ones(3))


def test_python2_ordered_dict_reads(tmp_path):
    # Python 2 pickled OrderedDict as OrderedDict([[key, value], ...]).
    pairs = b"](" + b"".join(b"]" + b"(" + hp.op_str(k) + hp.op_tensor("0", 2, i, (1,), (1,)) + b"e"
                              for i, k in enumerate(("a", "b"))) + b"e"
    body = hp.op_global("collections", "OrderedDict") + b"(" + pairs + b"tR"
    path = tmp_path / "py2.pth"
    hp.write_crafted_zip(path, hp.pickle_of(body), {"0": np.arange(2, dtype=np.float32).tobytes()})
    tensors = read_checkpoint(path).tensors
    assert list(tensors) == ["a", "b"] and tensors["b"][0] == 1


def test_ordered_dict_from_non_string_pairs_is_refused(tmp_path):
    pairs = b"](" + b"]" + b"(" + hp.tuple_dag(10) + b"Ne" + b"e"
    path = tmp_path / "odd.pth"
    hp.write_crafted_zip(path, hp.pickle_of(hp.op_global("collections", "OrderedDict") + b"(" + pairs + b"tR"))
    with pytest.raises(CheckpointError, match="malformed OrderedDict"):
        read_checkpoint(path)


def test_a_few_small_tuple_keys_read(tmp_path):
    extra = b"}(" + b"".join(hp.op_tuple([hp.op_int(i), hp.op_int(i + 1)]) + b"N" for i in range(20)) + b"u"
    body = hp.op_dict([(hp.op_str("w"), hp.op_tensor("0", 1, 0, (1,), (1,))), (hp.op_str("extra"), extra)])
    path = tmp_path / "keys.pth"
    hp.write_crafted_zip(path, hp.pickle_of(body), {"0": bytes(4)})
    assert read_checkpoint(path).tensors["w"].shape == (1,)


def test_tuple_key_of_more_than_64_parts_is_refused(tmp_path):
    path = tmp_path / "key.pth"
    hp.write_crafted_zip(path, hp.pickle_of(b"}" + hp.tuple_dag(7) + b"Ns"))  # 127 parts
    with pytest.raises(CheckpointError, match="too costly to hash"):
        read_checkpoint(path)
    hp.write_crafted_zip(path, hp.pickle_of(b"}" + hp.tuple_dag(5) + b"Ns" + hp.op_str("w") + b"Ns"))
    with pytest.raises(CheckpointError, match="no state_dict"):  # 31 parts: fine
        read_checkpoint(path)


def test_build_cannot_change_an_allowed_function():
    defaults = unpickler._rebuild_tensor_v2.__defaults__
    crafted = hp.op_global("torch._utils", "_rebuild_tensor_v2") + b"N}" + hp.op_str("__defaults__") \
        + hp.op_tuple([b"\x88", b"N", b"N"]) + b"s\x86b."
    with pytest.raises(CheckpointError, match="refused to set state"):
        unpickler._unpickle(b"\x80\x02" + crafted, 0, unpickler._PickleBudget(100))
    assert unpickler._rebuild_tensor_v2.__defaults__ == defaults


def test_opcode_budget_grows_with_the_file(tmp_path):
    # 600,000 opcodes: refused in a file of 0.6 MB, read in one of 2.6 MB.
    body = b"](" + b"N" * 600_000 + b"e"
    path = tmp_path / "ops.pth"
    hp.write_legacy_raw(path, hp.pickle_of(body))
    with pytest.raises(CheckpointError, match="opcodes"):
        read_checkpoint(path)
    hp.write_legacy_raw(path, hp.pickle_of(b"]" + hp.op_str("x" * 2_000_000) + b"0" + b"(" + b"N" * 600_000 + b"e"))
    with pytest.raises(CheckpointError, match="no state_dict found: the checkpoint is a list"):
        read_checkpoint(path)


def test_memo_and_stack_checks_of_the_scanner():
    budget = unpickler._PickleBudget(0)
    for crafted, fragment in [
        (b"\x80\x02h\x05.", "memo index 5 was never set"),
        (b"\x80\x02Nr\x00\x00\x00\x10.", "memo index 268435456"),
        (b"\x80\x02s.", "stack underflow"),
        (b"\x80\x02e.", "no mark"),
        (b"\x80\x02\xff.", "unknown opcode 0xff"),
        (b"\x80\x02N", "no STOP opcode"),
        (b"\x80\x02X\xff\xff\xff\x00ab.", "runs past the end"),
    ]:
        with pytest.raises(CheckpointError, match=fragment):
            unpickler._unpickle(crafted, 0, budget)


# ------------------------------------------------------------------------- messages


def test_brief_bounds_what_it_shows():
    dag = [None, None]
    for _ in range(60):
        dag = [dag, dag]
    started = time.perf_counter()
    assert tensors._brief(dag) == "[[[...], [...]], [[...], [...]]]"
    assert tensors._brief(2**100000) == "<100001-bit integer>"
    assert tensors._brief("x" * 10**6).endswith("'...") and len(tensors._brief("x" * 10**6)) < 80
    assert tensors._brief((1,)) == "(1,)" and tensors._brief(list(range(10))) == "[0, 1, 2, 3, 4, 5, ...]"
    assert time.perf_counter() - started < 0.1


def test_error_messages_escape_control_characters(tmp_path):
    name = "w\x1b[2J\n\ud800" + "y" * 1000
    path = tmp_path / "evil\x1b]0;title\x07.pth"
    body = hp.op_dict([(hp.op_str(name), hp.op_tensor("0", 4, 0, (9,), (1,)))])
    hp.write_crafted_zip(path, hp.pickle_of(body), {"0": bytes(16)})
    with pytest.raises(CheckpointError, match="lies outside its storage") as info:
        read_checkpoint(path)
    message = str(info.value)
    assert_one_line(message)
    assert message.startswith("evil\\x1b]0;title\\x07.pth: tensor 'w\\x1b[2J\\n\\ud800yyy")


def test_safe_text():
    assert safe_text("a\x1b[31mb\nc\ud800\u202e") == "a\\x1b[31mb\\nc\\ud800\\u202e"
    assert safe_text("é漢字 ok") == "é漢字 ok"
    long = safe_text("\x00" * 1000)
    assert len(long) == 300 and long.endswith("...")
    assert len(safe_text("x" * 10**7)) == 300
    assert safe_text(ValueError("a\nb"), None) == "a\\nb"


# ------------------------------------------------------------------ the command line


def _small_checkpoint(path, extra_key=None):
    """A torchvision MobileNetV2 (width 0.5, 10 classes) state_dict, optionally with one extra key."""
    import torch

    from keras_lightnets.conversion.references.torchvision.mobilenet_v2 import (
        MobileNetV2,
    )

    torch.manual_seed(0)
    state = MobileNetV2(num_classes=10, width_mult=0.5).state_dict()
    if extra_key is not None:
        state[extra_key] = torch.ones(2)
    torch.save(state, path)
    return path


def _cli(capsys, *args):
    from convert.__main__ import main

    try:
        status = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse's errors
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_report_escapes_surrogates_and_terminal_codes(tmp_path, capsys):
    key = "aux\x1b[31m.\ud800.weight"
    checkpoint = _small_checkpoint(tmp_path / "m.pth", extra_key=key)
    status, report, err = _cli(capsys, checkpoint, tmp_path / "m.h5", "--arch", "mobilenet_v2",
                               "--allow-partial", "--no-check")
    assert status == 0, err
    assert "aux\\x1b[31m.\\ud800.weight" in report
    assert "\x1b" not in report and "\ud800" not in report
    report.encode("utf-8")  # printable by any UTF-8 terminal: no lone surrogate left


def test_cli_unknown_arch_is_one_line(tmp_path, capsys):
    status, out, err = _cli(capsys, tmp_path / "m.pth", tmp_path / "m.h5", "--arch", "mobilenet_v9\x1b[2J")
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and "invalid choice" in err and "\x1b" not in err, err
    assert len(err) <= 301


def test_cli_refuses_a_folder_as_output(tmp_path, capsys):
    checkpoint = _small_checkpoint(tmp_path / "m.pth")
    status, _, err = _cli(capsys, checkpoint, f"{tmp_path / 'out'}/", "--arch", "mobilenet_v2", "--no-check")
    assert status == 2 and err.count("\n") == 1 and "folder" in err, err
    assert sorted(os.listdir(tmp_path)) == ["m.pth"]


def test_sigterm_during_a_write_removes_the_temp_file(tmp_path):
    from keras_lightnets.files import write_atomically

    def write(temp):
        with open(temp, "wb") as file:
            file.write(b"partial")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM did not interrupt the write")

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(tmp_path / "out.h5", write)
    assert os.listdir(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is before


def test_stale_temp_files_of_dead_writers_only_are_removed(tmp_path):
    from keras_lightnets.files import remove_stale_temp_files, temp_path_for

    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_temp = tmp_path / f".m.h5.{finished.pid}.abcdefgh.tmp"
        live_temp = tmp_path / f".m.h5.{alive.pid}.abcdefgh.tmp"
        own_temp = pathlib.Path(temp_path_for(tmp_path / "m.h5"))
        others = [tmp_path / ".m.h5.tmp", tmp_path / f".notes.{finished.pid}.txt", tmp_path / "m.h5"]
        for path in [dead_temp, live_temp, own_temp, *others]:
            path.write_bytes(b"x")
        assert remove_stale_temp_files(tmp_path) == [str(dead_temp)]
        assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in [live_temp, own_temp, *others])
        assert f".{os.getpid()}." in own_temp.name and own_temp.name.endswith(".tmp")
    finally:
        alive.kill()
        alive.wait()
    assert remove_stale_temp_files(tmp_path) == [str(live_temp)]


def test_cli_concurrent_writes_sigterm_and_stale_temp_files(tmp_path):
    """Two conversions into one folder both succeed and remove a dead writer's temp file;
    a third, sent SIGTERM while writing, leaves neither its output nor its temp file."""
    checkpoint = _small_checkpoint(tmp_path / "m.pth")
    shared, killed = tmp_path / "shared", tmp_path / "killed"
    shared.mkdir()
    killed.mkdir()
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    stale = shared / f".a.h5.{finished.pid}.0123abcd.tmp"
    stale.write_bytes(b"left by a killed run")
    convert = [sys.executable, "-m", "convert", str(checkpoint)]
    options = ["--arch", "mobilenet_v2", "--no-check"]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    runs = [subprocess.Popen(convert + [str(shared / name)] + options, cwd=ROOT, env=environment,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in ("a.h5", "b.h5")]
    slow = subprocess.Popen([sys.executable, "-c", slow_converter(0.02), str(checkpoint), str(killed / "k.h5"), *options],
                            cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(name.endswith(".tmp") for name in os.listdir(killed)):
            assert slow.poll() is None, slow.communicate()
            assert time.monotonic() < deadline, "the slow conversion never started writing"
            time.sleep(0.05)
        slow.send_signal(signal.SIGTERM)
        _, slow_err = slow.communicate(timeout=60)
        results = [run.communicate(timeout=180) for run in runs]
    finally:
        for process in (*runs, slow):
            if process.poll() is None:
                process.kill()
    assert slow.returncode != 0 and os.listdir(killed) == [], (slow.returncode, slow_err)
    # TensorFlow may log its own lines at import; ours is the last one, and no traceback.
    assert "Traceback" not in slow_err and slow_err.splitlines()[-1].startswith("error: "), slow_err
    for run, (out, err) in zip(runs, results):
        assert run.returncode == 0, err
    assert sorted(os.listdir(shared)) == ["a.h5", "b.h5"]  # the stale temp file is gone too


# ------------------------------------------------------------------------- the demo


def test_pillow_warnings_become_one_line(tmp_path, capfd):
    from PIL import Image

    from keras_lightnets.preprocessing.image import read_image

    # EXIF whose ImageDescription claims 5,000 bytes past the end: Pillow warns.
    tiff = b"II*\x00" + struct.pack("<IH", 8, 2) + struct.pack("<HHII", 0x0112, 3, 1, 6)
    tiff += struct.pack("<HHII", 0x010E, 2, 5000, 4000) + struct.pack("<I", 0)
    path = tmp_path / "corrupt\x1b[2Jexif.jpg"
    Image.new("RGB", (8, 4), (200, 10, 10)).save(path, exif=b"Exif\x00\x00" + tiff)
    image = read_image(path)
    assert image.size == (4, 8)  # orientation 6 still applied
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: ") and "\x1b" not in err, err
