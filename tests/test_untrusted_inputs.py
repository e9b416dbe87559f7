"""Weights files, records, archives, folders, --out files and caches made by an
attacker (issue 23), through the users' entry points.

Every hostile input must give one line naming the file and what is wrong, exit
status 2, nothing written or changed, no byte of another file read (the marker
files are in no output and their access time did not move), within 5 s and
2 x the file's size + 300 MB. The many cases run in one subprocess that calls
the commands' `main` (and `keras_lightnets.from_h5`) in-process and measures
each case's time and peak memory, with TensorFlow made unimportable: every
refusal comes before TensorFlow starts. Each command also runs once as a user
runs it (its own process). Cases that need a model (fitting shapes, folders
with a FIFO, caches) run in the test process.

The harness is tests/untrusted_harness.py.
"""

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from tests import finetune_data as fd
from tests import hostile_files as hf
from tests.helpers import REPO, without_tensorflow

CASE_SECONDS = 5.0
CASE_SLACK_MB = 300
PHOTO = os.path.join(REPO, "examples", "cat.jpg")
CLASSES = 3

# The commands as users run them: (argv prefix, how the hostile file is passed).
COMMANDS = {
    "demo": [sys.executable, os.path.join(REPO, "demo.py")],
    "predict": [sys.executable, "-m", "keras_lightnets.predict"],
    "export": [sys.executable, "-m", "keras_lightnets.export"],
    "finetune": [sys.executable, "-m", "keras_lightnets.finetune"],
    "convert": [sys.executable, "-m", "convert"],
}


def weights_args(command, weights, work):
    """The arguments that give `weights` to `command` (everything else valid)."""
    return {
        "demo": [PHOTO, "--weights", weights],
        "predict": [work["photos"], "--weights", weights, "--out", os.path.join(work["out"], "results.jsonl")],
        "export": ["--weights", weights, "--format", "tflite", os.path.join(work["out"], "model.tflite")],
        "finetune": ["--weights", weights, "--data", work["data"], "--out", os.path.join(work["out"], "tuned.h5"),
                     "--epochs", "1", "--freeze-backbone"],
        "from_h5": [weights],
    }[command]


# ------------------------------------------------------------------- the inputs


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A valid weights file (MobileNetV2 a0.35 32x32, 3 classes), photos, data, markers."""
    root = tmp_path_factory.mktemp("untrusted")
    paths = {name: str(root / name) for name in ("inputs", "out", "photos", "data", "cache", "markers")}
    for path in paths.values():
        os.makedirs(path)
    paths["base"] = str(root / "inputs" / "base.h5")
    fd.classifier_file(paths["base"], classes=CLASSES, size=32)
    shutil.copy(PHOTO, os.path.join(paths["photos"], "cat.jpg"))
    fd.make_classification(paths["data"], 1, 0)
    paths["marker"] = hf.Marker(paths["markers"], shape=hf.first_weight(paths["base"])[2])
    return paths


def tree_digest(*folders):
    """`{path: sha256}` of every file under `folders` (what nothing may change)."""
    digests = {}
    for folder in folders:
        for root, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(root, name)
                if os.path.isfile(path):
                    with open(path, "rb") as f:
                        digests[path] = hashlib.sha256(f.read()).hexdigest()
    return digests


def hostile_cases(work):
    """`[case]`: every hostile weights file and record through `from_h5` and one
    command (in turn), those that point at another file through every command,
    and the archives, FIFOs, --out files and manifests of the other points."""
    inputs, cases = work["inputs"], []
    rotation = ["demo", "predict", "export", "finetune"]

    def add(name, entry, args, path, fragment, env=None):
        cases.append({"name": f"{name} [{entry}]", "entry": entry, "args": [str(a) for a in args],
                      "path": str(path), "fragment": fragment, "env": env or {}})

    builders = {**hf.WEIGHTS_FILES, **hf.RECORDS}
    for index, (name, (build, fragment)) in enumerate(builders.items()):
        path = build(work["base"], os.path.join(inputs, f"{name}.h5"), work["marker"])
        other_file = name.startswith(("external", "soft_link", "virtual"))
        for entry in ["from_h5"] + (rotation if other_file else [rotation[index % len(rotation)]]):
            add(name, entry, weights_args(entry, path, work), path, fragment)
    # point 2 and 7: zip members
    archives = {
        "bzip2_bomb": (hf.bzip2_bomb, "compressed with bzip2; only stored and deflate members are read"),
        "lzma_corrupt": (hf.lzma_corrupt, "compressed with lzma"),
        "duplicate_member": (hf.duplicate_members, "'archive/data/0' appears twice"),
        "member_dot_dot": (lambda out: hf.member_named(out, "archive/../../etc/passwd"), "contains '..'"),
        "member_absolute": (lambda out: hf.member_named(out, "/etc/passwd"), "is absolute"),
    }
    for name, (build, fragment) in archives.items():
        path = build(os.path.join(inputs, f"{name}.pth"))
        add(name, "convert", [path, os.path.join(work["out"], "converted.h5"), "--arch", "mobilenet_v2"],
            path, fragment)
    # point 6: FIFOs given directly
    fifo = hf.fifo(os.path.join(inputs, "photo.jpg"))
    add("fifo_photo", "demo", [fifo, "--weights", work["base"]], fifo, "is a FIFO, not a regular file")
    fifo_pth = hf.fifo(os.path.join(inputs, "checkpoint.pth"))
    add("fifo_checkpoint", "convert", [fifo_pth, os.path.join(work["out"], "c.h5"), "--arch", "mobilenet_v2"],
        fifo_pth, "is a FIFO")
    fifo_h5 = hf.fifo(os.path.join(inputs, "weights_fifo.h5"))
    for entry in ("demo", "from_h5"):
        add("fifo_weights", entry, weights_args(entry, fifo_h5, work), fifo_h5, "is a FIFO")
    add("fifo_calibration", "export", ["--weights", work["base"], "--format", "tflite", "--quantize", "int8",
                                       "--calibration", fifo_h5, os.path.join(work["out"], "q.tflite")],
        fifo_h5, "not a directory")
    # point 5: predict's --out
    for name, content, fragment in [
        ("out_is_weights", None, "line 1 is not a result line of this command"),
        ("out_400k_deep", b"[" * 400_000 + b"]" * 400_000 + b"\n", "line 1 is not a result line"),
        ("out_result_then_text", b'{"file": "a.jpg", "top": [[0, "x", 0.5]]}\nrm -rf\n', "line 2 is not"),
        ("out_torn_binary", b"\x00\x01binary without a newline", "line 1 is not"),
    ]:
        path = os.path.join(inputs, f"{name}.jsonl")
        if content is None:
            shutil.copyfile(work["base"], path)
        else:
            with open(path, "wb") as f:
                f.write(content)
        add(name, "predict", [work["photos"], "--weights", work["base"], "--out", path], path, fragment)
    add("out_is_a_fifo", "predict", [work["photos"], "--weights", work["base"], "--out", fifo], fifo, "is a FIFO")
    # point 9: the weights cache's manifest
    for name, text in [("list", "[]"), ("string", '"x"'), ("null", "null"), ("deep", "[" * 100_000 + "]" * 100_000),
                       ("wrong_types", '{"torchvision_mobilenet_v2": {"file": 3, "cache_version": "3", "sha256": []}}'),
                       ("not_utf8", "\udcff")]:
        cache = os.path.join(work["cache"], name)
        os.makedirs(cache)
        manifest = os.path.join(cache, "MANIFEST.json")
        with open(manifest, "wb") as f:
            f.write(text.encode("utf8", "surrogateescape"))
        add(f"manifest_{name}", "demo", [PHOTO], manifest, "not a keras-lightnets cache manifest",
            env={"KERAS_LIGHTNETS_CACHE": cache})
    return cases


def check_outcome(row, case, work, size):
    """The failures of one case (empty when it is handled as issue 23 asks)."""
    problems = []
    lines = row["stderr"].splitlines()
    if row["status"] != 2:
        problems.append(f"status {row['status']!r}")
    if len(lines) != 1 or not lines[0].startswith("error: "):
        problems.append(f"stderr is not one 'error:' line: {row['stderr'][-300:]!r}")
    elif os.path.basename(case["path"]) not in lines[0] or case["fragment"] not in lines[0]:
        problems.append(f"the line names neither the file nor {case['fragment']!r}: {lines[0]!r}")
    if row["stdout"]:
        problems.append(f"stdout {row['stdout'][:200]!r}")
    if row["seconds"] > CASE_SECONDS:
        problems.append(f"{row['seconds']:.1f} s")
    if row["extra_mb"] > 2 * size / 2**20 + CASE_SLACK_MB:
        problems.append(f"{row['extra_mb']:.0f} MB")
    if not row["untouched"]:
        problems.append("a marker file was read")
    return problems


def test_every_hostile_input_is_one_line_exit_2_within_bounds(work, tmp_path):
    cases = hostile_cases(work)
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps({"cases": cases, "marker": {"token": work["marker"].token.decode(),
                                                          "paths": list(work["marker"].paths)}}))
    before = tree_digest(work["inputs"], work["photos"], work["data"], work["cache"])
    env = {**os.environ, **without_tensorflow(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env["PYTHONPATH"] = os.pathsep.join([REPO, env["PYTHONPATH"]])
    process = subprocess.run([sys.executable, "-m", "tests.untrusted_harness", str(spec)], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    rows = json.loads(process.stdout.strip().splitlines()[-1])
    assert len(rows) == len(cases) >= 100
    failures = []
    for row, case in zip(rows, cases):
        size = os.path.getsize(case["path"]) if os.path.isfile(case["path"]) else 0
        problems = check_outcome(row, case, work, size)
        if problems:
            failures.append(f"{case['name']}: {'; '.join(problems)}")
    print("\n" + "\n".join(f"{r['name']:58s} {r['seconds']:6.3f} s {r['extra_mb']:7.1f} MB" for r in rows))
    assert not failures, "\n".join(failures)
    assert tree_digest(work["inputs"], work["photos"], work["data"], work["cache"]) == before
    assert os.listdir(work["out"]) == []  # nothing written
    texts = [r["stdout"] + r["stderr"] for r in rows]
    assert work["marker"].found_in(work["inputs"], work["out"], work["cache"], texts=texts) == []


def test_the_harness_sees_a_marker_read_and_a_second_line(work, tmp_path):
    """The checks above can fail: reading the marker moves its access time, and a
    traceback is more than one line."""
    marker = work["marker"]
    marker.reset()
    with h5py.File(marker.h5, "r") as f:
        f["data"][()]
    assert not marker.untouched()
    marker.reset()
    row = {"status": 2, "stderr": "error: x.h5: bad\nTraceback\n", "stdout": "", "seconds": 0.1, "extra_mb": 1,
           "untouched": True}
    assert check_outcome(row, {"path": "x.h5", "fragment": "bad"}, work, 0)
    assert not check_outcome({**row, "stderr": "error: x.h5: bad\n"}, {"path": "x.h5", "fragment": "bad"}, work, 0)


# ------------------------------------------------------------ each command, as users run it


# Spawns the command from a small process and reports its exit status and peak RSS:
# a child forked from the test process would count the test's own memory (Linux
# keeps the pre-exec high-water mark in ru_maxrss).
LAUNCHER = r"""
import json, os, sys
out, err, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
actions = [(os.POSIX_SPAWN_OPEN, 1, out, flags, 0o644), (os.POSIX_SPAWN_OPEN, 2, err, flags, 0o644)]
pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
_, status, usage = os.wait4(pid, 0)
print(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_maxrss]))
"""


def run_command(argv, env, cwd):
    """Runs a command to its end; returns `(status, stdout, stderr, seconds, peak RSS in MB)`."""
    out, err = os.path.join(cwd, ".stdout"), os.path.join(cwd, ".stderr")
    started = time.perf_counter()
    launcher = subprocess.run([sys.executable, "-c", LAUNCHER, out, err, *argv], env=env, cwd=cwd,
                              capture_output=True, text=True, timeout=120, check=True)
    seconds = time.perf_counter() - started
    status, peak_kb = json.loads(launcher.stdout)
    with open(out) as f_out, open(err) as f_err:
        return status, f_out.read(), f_err.read(), seconds, peak_kb / 1024


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_refuses_a_file_that_points_elsewhere(command, work, tmp_path):
    """Point 1 (and 2 for convert): external raw storage into the marker file
    (an archive with a bzip2 member for the converter), through the real command."""
    if command == "convert":
        hostile, fragment = hf.bzip2_bomb(str(tmp_path / "bomb.pth")), "compressed with bzip2"
        args = [hostile, str(tmp_path / "out.h5"), "--arch", "mobilenet_v2"]
    else:
        hostile = hf.WEIGHTS_FILES["external_storage"][0](work["base"], str(tmp_path / "weights.h5"), work["marker"])
        fragment = "keeps its data in another file"
        args = weights_args(command, hostile, {**work, "out": str(tmp_path)})
    env = {**os.environ, **without_tensorflow(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3",
           "KERAS_LIGHTNETS_CACHE": str(tmp_path / "cache")}
    env["PYTHONPATH"] = os.pathsep.join([REPO, env["PYTHONPATH"]])
    work["marker"].reset()
    before = tree_digest(work["inputs"], str(tmp_path))
    status, out, err, seconds, peak_mb = run_command(COMMANDS[command] + list(map(str, args)), env, str(tmp_path))
    print(f"\n{command}: {seconds:.2f} s, peak RSS {peak_mb:.0f} MB: {err.strip()}")
    assert status == 2 and out == "", err
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err
    assert os.path.basename(hostile) in err
    assert seconds <= CASE_SECONDS and peak_mb <= 2 * os.path.getsize(hostile) / 2**20 + CASE_SLACK_MB
    assert work["marker"].untouched()
    after = tree_digest(work["inputs"], str(tmp_path))
    assert {p: d for p, d in after.items() if not p.endswith((".stdout", ".stderr"))} == before
    assert work["marker"].found_in(str(tmp_path), texts=[out, err]) == []




# ------------------------------------------------------- cases that need a model or a cache


@contextlib.contextmanager
def within(seconds):
    """Fails the block (TimeoutError) instead of letting it hang."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_predict_skips_a_fifo_and_keeps_a_complete_last_line(work, tmp_path):
    """Points 5 and 6, and issue 29's resume: a FIFO named like a photo is
    skipped with one line (it would block a reader forever); a complete last
    result line without its newline counts as done and is kept."""
    from keras_lightnets.runtime import folder as predict

    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    shutil.copy(PHOTO, photos / "cat.jpg")
    shutil.copy(PHOTO, photos / "sub" / "again.jpg")
    hf.fifo(str(photos / "sub" / "pipe.jpg"))
    os.symlink("..", photos / "sub" / "loop")  # a link loop: not followed
    out = tmp_path / "results.jsonl"
    done = '{"file": "cat.jpg", "top": [[2, "2", 0.5]]}'
    out.write_text(done)  # no newline: an interrupted run cut it exactly there
    errors = io.StringIO()
    with within(120):
        predicted, skipped = predict.predict_folder(photos, work["base"], out, progress=False, errors=errors)
    assert predicted == 1 and [os.path.basename(path) for path, _ in skipped] == ["pipe.jpg"]
    assert errors.getvalue().splitlines() == [f"skipped: {photos / 'sub' / 'pipe.jpg'} is a FIFO, not a regular file"]
    lines = out.read_text().splitlines()
    assert lines[0] == done and [json.loads(line)["file"] for line in lines] == ["cat.jpg", "sub/again.jpg"]


def test_folder_walks_skip_fifos_and_never_follow_a_link_loop(tmp_path, capsys):
    """Point 6 for the data sets of finetune and the calibration photos of export."""
    from keras_lightnets.files import list_images
    from keras_lightnets.runtime.calibration import folder_photos
    from keras_lightnets.training.data import find_dataset

    data = tmp_path / "data"
    fd.make_classification(str(data), 2, 1)
    hf.fifo(str(data / "train" / "coffee" / "pipe.jpg"))
    os.symlink("../..", data / "train" / "coffee" / "up")
    os.symlink(".", data / "val" / "astronaut" / "self")
    with within(60):
        dataset = find_dataset(data)
        images = folder_photos(str(data / "train" / "coffee"))
    assert len(dataset.train.images) == 6 and len(dataset.val.images) == 3
    assert not any("pipe" in path for path in dataset.train.images) and len(images) == 2
    err = capsys.readouterr().err
    assert err.count("pipe.jpg is a FIFO, not a regular file") == 2  # one line per walk
    assert list_images(data / "val" / "astronaut") == [str(data / "val" / "astronaut" / "0.jpg")]


def test_a_swapped_compiled_entry_is_rebuilt_never_served(work, tmp_path, monkeypatch):
    """Point 10: the demo's compiled flatbuffer of another model, renamed with its
    own hash into this model's entry (with or without its side record), is
    deleted and compiled again; the answer is this model's."""
    from keras_lightnets.cli import demo
    from keras_lightnets.runtime import tflite

    monkeypatch.setenv("KERAS_LIGHTNETS_CACHE", str(tmp_path / "cache"))
    other = str(tmp_path / "other.h5")
    fd.write_weights_file(other, "MobileNetV2", {"style": "torch", "alpha": 0.35, "classes": CLASSES,
                                                 "input_shape": [32, 32, 3]},
                          {**fd.TORCH_PREPROCESSING, "size": 32}, "mobilenet_v2", seed=1)
    mine = demo.classify_compiled(PHOTO, work["base"], hf.read_record(work["base"]), CLASSES)
    theirs = demo.classify_compiled(PHOTO, other, hf.read_record(other), CLASSES)
    assert [c for c, _, _ in mine] != [c for c, _, _ in theirs] or mine[0][2] != pytest.approx(theirs[0][2])
    folder = tflite.compiled_folder()
    entries = sorted(os.listdir(folder))
    assert len(entries) == 4  # two flatbuffers, two side records
    digest = hashlib.sha256(open(work["base"], "rb").read()).hexdigest()
    own = [name for name in entries if digest in name]
    stolen = [name for name in entries if digest not in name]
    for with_side_record in (False, True):
        for name in own:
            os.unlink(os.path.join(folder, name))
        for name in stolen:  # the other model's entry, renamed into this one's place
            if name.endswith(".tflite") or with_side_record:
                prefix = name.split("-")[0] + "-" + name.split("-")[1]
                shutil.copy(os.path.join(folder, name), os.path.join(folder, name.replace(prefix, f"mobilenet_v2-{digest}")))
        assert tflite.load_compiled(work["base"], (32, 32), "mobilenet_v2", CLASSES) is None
        assert not [name for name in os.listdir(folder) if digest in name]  # deleted, not served
        assert demo.classify_compiled(PHOTO, work["base"], hf.read_record(work["base"]), CLASSES) == mine
        own = [name for name in os.listdir(folder) if digest in name]
        assert len(own) == 2


def test_weights_cache_entries_of_another_version_source_or_arch_are_never_served(tmp_path, monkeypatch):
    """Issue 29: the cache serves a converted file only if the manifest's entry
    was made by this cache version from the known checkpoint and the file's own
    record names the arch and that checkpoint."""
    from keras_lightnets.weights import cache, sources
    from keras_lightnets.weights.h5 import sha256_of, write_weights

    monkeypatch.setenv("KERAS_LIGHTNETS_CACHE", str(tmp_path))
    source = sources.SOURCES["efficientnet_lite0"]
    path = str(tmp_path / "efficientnet_lite0.h5")

    def served(version=cache.CACHE_VERSION, source_sha256=source.sha256, arch="efficientnet_lite0"):
        record = {"format": 1, "arch": arch, "builder": registry_builder(arch), "builder_kwargs": {"classes": 1000},
                  "preprocessing": {"mode": "lite", "size": 224}, "source": {"sha256": source.sha256}}
        write_weights(path, [("dense", [("dense/kernel:0", np.ones((2, 2), "float32"))])], record, overwrite=True)
        entry = {"file": "efficientnet_lite0.h5", "cache_version": version, "sha256": sha256_of(path),
                 "source": "test", "source_sha256": source_sha256, "license": source.license}
        (tmp_path / "MANIFEST.json").write_text(json.dumps({"efficientnet_lite0": entry}))
        return cache.cached_weights("efficientnet_lite0")

    assert served() == path
    assert served(version=cache.CACHE_VERSION - 1) is None
    assert served(source_sha256="0" * 64) is None
    assert served(arch="efficientnet_lite1") is None
    assert served() == path
    with open(path, "ab") as f:
        f.write(b"\0")  # changed after it was recorded
    assert cache.cached_weights("efficientnet_lite0") is None


def registry_builder(arch):
    from keras_lightnets.registry import SPECS

    return SPECS[arch].builder_name
