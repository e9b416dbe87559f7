"""The converter, end to end: PyTorch reference → torch.save → CLI → Keras, compared."""

import json
import os
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
import torch

import keras_lightnets as kl
from convert.__main__ import main as convert_main
from keras_lightnets.cli.main import main as lightnets
from keras_lightnets.conversion.references import c1_bottleneck, marvis, tonylins
from keras_lightnets.conversion.references.torchvision.mobilenet_v2 import MobileNetV2
from tests.helpers import (
    REPO,
    assert_parity,
    assert_reported_parity,
    nchw,
    randomize_torch_model,
    reference_images,
    run_cli,
    torch_forward,
    without_tensorflow,
)

PARITY_ATOL = 1e-4


# how the conversion report names each naming's shipped PyTorch reference
SHIPPED_REFERENCES = {
    "torchvision": "torchvision MobileNetV2 (shipped reference)",
    "tonylins": "tonylins MobileNetV2 (shipped reference)",
    "c1_bottleneck": "c1_bottleneck MobileNetV2 (shipped reference)",
    "marvis": "marvis MobileNet (shipped reference)",
}
CASES = {
    "torchvision_1.0": (lambda: MobileNetV2(), "mobilenet_v2", "torchvision"),
    "torchvision_0.5_10cls": (
        lambda: MobileNetV2(num_classes=10, width_mult=0.5),
        "mobilenet_v2",
        "torchvision",
    ),
    "torchvision_1.4": (lambda: MobileNetV2(width_mult=1.4), "mobilenet_v2", "torchvision"),
    "tonylins": (lambda: tonylins.MobileNetV2(), "mobilenet_v2", "tonylins"),
    "c1_bottleneck": (lambda: c1_bottleneck.MobileNetV2(), "mobilenet_v2", "c1_bottleneck"),
    "marvis": (lambda: marvis.MobileNet(), "mobilenet_v1", "marvis"),
}


def make_reference(case, seed=0):
    factory, arch, naming = CASES[case]
    torch.manual_seed(seed)
    model = factory()
    images = reference_images()
    randomize_torch_model(model, nchw(images), seed=seed)
    return model, arch, naming, images


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_conversion_reproduces_pytorch(case, tmp_path, capsys):
    model, arch, naming, images = make_reference(case)
    checkpoint = tmp_path / "model.pth"
    torch.save(model.state_dict(), checkpoint)
    out = tmp_path / "model.h5"
    status, report, err = run_cli(capsys, checkpoint, out, "--arch", arch)
    assert status == 0, err
    assert f"naming          {naming}" in report
    assert "unused tensors  none" in report and "unset weights   none" in report
    assert_reported_parity(report, SHIPPED_REFERENCES[naming])
    recorded = kl.weights_info(out)["parity"]
    assert recorded["reference"] == SHIPPED_REFERENCES[naming] and recorded["top5_identical"] is True

    keras_model = kl.from_h5(out, classifier_activation=None)
    expected = torch_forward(model, images)
    assert_parity(np.asarray(keras_model(images)), expected)


@pytest.mark.parametrize(
    "wrap,legacy",
    [
        (lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, False),
        (lambda sd: {"model_state": sd, "best_score": np.float64(0.75)}, True),
        (lambda sd: {"net": {f"_orig_mod.{k}": v for k, v in sd.items()}}, False),
    ],
    ids=["state_dict+module", "legacy+model_state+numpy", "net+orig_mod"],
)
def test_wrapped_and_legacy_checkpoints(wrap, legacy, tmp_path, capsys):
    model, arch, _, images = make_reference("torchvision_0.5_10cls", seed=1)
    checkpoint = tmp_path / "wrapped.pth"
    torch.save(wrap(model.state_dict()), checkpoint, _use_new_zipfile_serialization=not legacy)
    out = tmp_path / "wrapped.h5"
    status, report, err = run_cli(capsys, checkpoint, out, "--arch", arch)
    assert status == 0, err
    assert ("pytorch-legacy" if legacy else "pytorch-zip") in report
    assert_parity(np.asarray(kl.from_h5(out, classifier_activation=None)(images)),
                  torch_forward(model, images))


def test_output_loads_with_keras_load_weights_by_order_and_by_name(tmp_path, capsys):
    model, arch, _, images = make_reference("torchvision_1.0", seed=2)
    torch.save(model.state_dict(), tmp_path / "m.pth")
    assert run_cli(capsys, tmp_path / "m.pth", tmp_path / "m.h5", "--arch", arch)[0] == 0
    expected = torch_forward(model, images)
    for by_name in (False, True):
        keras_model = kl.MobileNetV2(style="torch", classifier_activation=None)
        if by_name:
            keras_model.load_weights(str(tmp_path / "m.h5"), by_name=True)
        else:
            keras_model.load_weights(str(tmp_path / "m.h5"))
        assert_parity(np.asarray(keras_model(images)), expected)
    # and a no-top model takes the backbone by name
    backbone = kl.MobileNetV2(style="torch", include_top=False, pooling="avg")
    backbone.load_weights(str(tmp_path / "m.h5"), by_name=True)
    with h5py.File(tmp_path / "m.h5") as f:
        np.testing.assert_array_equal(
            backbone.get_layer("Conv1").kernel.numpy(), f["Conv1"]["Conv1/kernel:0"][()]
        )


def test_wrong_arch_fails_without_output(tmp_path, capsys):
    model, _, _, _ = make_reference("marvis")
    torch.save(model.state_dict(), tmp_path / "v1.pth")
    status, out, err = run_cli(capsys, tmp_path / "v1.pth", tmp_path / "x.h5", "--arch", "mobilenet_v2")
    assert status == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "match no mobilenet_v2 naming" in err
    assert sorted(os.listdir(tmp_path)) == ["v1.pth"]


def test_wrong_width_names_first_mismatch(tmp_path, capsys):
    model, _, _, _ = make_reference("tonylins")
    state = model.state_dict()
    # a checkpoint whose block 3 was trained at another width
    state["features.3.conv.0.weight"] = torch.zeros(150, 24, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    status, _, err = run_cli(capsys, tmp_path / "bad.pth", tmp_path / "x.h5", "--arch", "mobilenet_v2")
    assert status == 2
    assert "features.3.conv.0" in err and "block_2_expand" in err
    assert "(1, 1, 24, 144)" in err and "(1, 1, 24, 150)" in err
    assert not (tmp_path / "x.h5").exists()


def test_class_count_check_existing_output_and_force(tmp_path, capsys):
    model, arch, _, _ = make_reference("torchvision_0.5_10cls")
    torch.save(model.state_dict(), tmp_path / "m.pth")
    status, _, err = run_cli(capsys, tmp_path / "m.pth", tmp_path / "m.h5", "--arch", arch, "--num-classes", "1000")
    assert status == 2 and "10 classes" in err
    (tmp_path / "m.h5").write_bytes(b"keep me")
    status, _, err = run_cli(capsys, tmp_path / "m.pth", tmp_path / "m.h5", "--arch", arch)
    assert status == 2 and "--force" in err
    assert (tmp_path / "m.h5").read_bytes() == b"keep me"
    status, _, _ = run_cli(capsys, tmp_path / "m.pth", tmp_path / "m.h5", "--arch", arch, "--force")
    assert status == 0 and h5py.is_hdf5(tmp_path / "m.h5")


def test_unused_tensors_refused_unless_allow_partial(tmp_path, capsys):
    model, arch, _, _ = make_reference("tonylins")
    state = model.state_dict()
    state["aux_head.weight"] = torch.ones(3, 3)
    torch.save(state, tmp_path / "extra.pth")
    status, _, err = run_cli(capsys, tmp_path / "extra.pth", tmp_path / "x.h5", "--arch", arch)
    assert status == 2 and "aux_head.weight" in err
    assert not (tmp_path / "x.h5").exists()
    status, report, _ = run_cli(capsys, tmp_path / "extra.pth", tmp_path / "x.h5", "--arch", arch, "--allow-partial")
    assert status == 0 and "unused tensors  1 (aux_head.weight)" in report


@pytest.mark.parametrize(
    "content",
    [b"", b"PK\x03\x04 truncated", b"\x89HDF\r\n\x1a\n" + b"\x00" * 64, b"hello world"],
    ids=["empty", "broken-zip", "hdf5", "text"],
)
def test_bad_checkpoints_exit_2_without_output(content, tmp_path, capsys):
    (tmp_path / "bad.pth").write_bytes(content)
    status, out, err = run_cli(capsys, tmp_path / "bad.pth", tmp_path / "x.h5", "--arch", "mobilenet_v2")
    assert status == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["bad.pth"]


@pytest.mark.parametrize(
    "make_args",
    [
        lambda t: [t / "missing.pth", t / "x.h5"],
        lambda t: [(t / "notes.pth").write_text("hello") and t / "notes.pth", t / "x.h5"],
        lambda t: [t / "m.pth", t / "no" / "such" / "folder" / "x.h5"],
        lambda t: [t / "m.pth", (t / "old.h5").write_bytes(b"kept") and t / "old.h5"],
        lambda t: [t / "m.pth", t / "x.h5", "--output-stride", "8"],
    ],
    ids=["missing", "not-a-checkpoint", "no-output-folder", "output-exists", "option-for-another-arch"],
)
def test_bad_input_is_reported_before_tensorflow_is_imported(make_args, tmp_path):
    """`python -m convert` checks its arguments, the output path and the
    checkpoint before TensorFlow starts: one line, exit 2, in well under a second
    of work, and nothing written."""
    torch.save(tonylins.MobileNetV2(n_class=10).state_dict(), tmp_path / "m.pth")
    before = sorted(os.listdir(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "convert", *map(str, make_args(tmp_path)), "--arch", "mobilenet_v2"],
        capture_output=True, text=True, cwd=REPO, timeout=120, env={**os.environ, **without_tensorflow(tmp_path)},
    )
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    written = set(os.listdir(tmp_path)) - set(before) - {"no_tensorflow", "notes.pth", "old.h5"}
    assert written == set() and (not (tmp_path / "old.h5").exists() or (tmp_path / "old.h5").read_bytes() == b"kept")


def test_hostile_checkpoint_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"features.0.0.weight": torch.zeros(1), "x": Payload()}, tmp_path / "evil.pth")
    status, _, err = run_cli(capsys, tmp_path / "evil.pth", tmp_path / "x.h5", "--arch", "mobilenet_v2")
    assert status == 2 and "system" in err
    assert not marker.exists() and not (tmp_path / "x.h5").exists()


def test_interrupted_write_leaves_no_file(tmp_path, capsys, monkeypatch):
    model, arch, _, _ = make_reference("tonylins")
    torch.save(model.state_dict(), tmp_path / "m.pth")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(h5py.Group, "create_dataset", fail)
    status, _, err = run_cli(capsys, tmp_path / "m.pth", tmp_path / "m.h5", "--arch", arch)
    assert status == 2 and "disk full" in err
    assert sorted(os.listdir(tmp_path)) == ["m.pth"]


def test_from_h5_refuses_files_it_did_not_write(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"a"])
    with pytest.raises(ValueError, match="not written by the keras-lightnets converter"):
        kl.from_h5(path)


@pytest.mark.parametrize("initializers_ignored", [False, True], ids=["deferred", "fallback"])
def test_loading_creates_each_variable_from_the_file(initializers_ignored, tmp_path, monkeypatch):
    """`from_h5` (a builder given `weights`) creates each variable from the
    file's value, with no random draw to overwrite; a Keras that ignored
    those initialisers would leave other values, which is detected and
    mended by assigning the file's."""
    from keras_lightnets.weights import h5 as h5format
    from keras_lightnets.weights.h5 import read_layer_weights, save_model_weights

    kwargs = {"alpha": 0.35, "classes": 7, "input_shape": [64, 64, 3], "style": "torch"}
    model = kl.MobileNetV2(weights=None, **kwargs)
    rng = np.random.default_rng(0)
    for variable in model.weights:  # values no initialiser would draw
        variable.assign(rng.normal(size=variable.shape).astype("float32") + 3.0)
    path = tmp_path / "m.h5"
    save_model_weights(model, path, {"format": 1, "arch": "mobilenet_v2", "builder": "MobileNetV2",
                                     "builder_kwargs": kwargs, "preprocessing": {"mode": "torch"}, "source": {}})
    created = []
    original = h5format._ArrayValue.__call__
    if initializers_ignored:
        monkeypatch.setattr(h5format._ArrayValue, "__call__", lambda self, shape, dtype=None: np.zeros(shape, dtype))
    else:
        monkeypatch.setattr(h5format._ArrayValue, "__call__", lambda self, *a, **k: created.append(1) or original(self, *a, **k))
    loaded = kl.from_h5(path)
    expected = [array for _, arrays in read_layer_weights(str(path)) for array in arrays]
    assert len(loaded.weights) == len(expected) == len(model.weights)
    for variable, array in zip(loaded.weights, expected):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable.value), array)
    assert len(created) == (0 if initializers_ignored else len(expected))


def test_loading_on_another_models_tensor_sets_its_layers_too(tmp_path):
    """With `input_tensor` from another model, the loaded model holds that
    model's layers too: their variables exist already and are assigned."""
    from keras_lightnets.weights.h5 import save_model_weights

    def build(weights=None):
        image = keras.layers.Input((64, 64, 3))
        stem = keras.Model(image, keras.layers.Conv2D(3, 1, name="stem")(image))
        return kl.MobileNetV2(input_tensor=stem.output, alpha=0.35, classes=5, style="torch", weights=weights)

    model = build()
    rng = np.random.default_rng(1)
    for variable in model.weights:
        variable.assign(np.abs(rng.normal(size=variable.shape)).astype("float32") + 0.5)
    save_model_weights(model, tmp_path / "m.h5", None)
    loaded = build(str(tmp_path / "m.h5"))
    assert [v.path.split("/")[0] for v in loaded.weights][:1] == ["stem"]
    for expected, variable in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable.value), keras.ops.convert_to_numpy(expected.value))


def test_cli_help_lists_archs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        convert_main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for arch in ("mobilenet_v1", "mobilenet_v2", "efficientnet_lite0", "efficientnet_lite4"):
        assert arch in text
    assert keras.backend.backend() == "tensorflow"


def test_forced_source(tmp_path, capsys):
    model, arch, _, images = make_reference("tonylins")
    torch.save(model.state_dict(), tmp_path / "m.pth")
    status, _, err = run_cli(capsys, tmp_path / "m.pth", tmp_path / "x.h5", "--arch", arch, "--source", "torchvision")
    assert status == 2 and "no tensor 'features.17.conv.2.weight'" in err and "torchvision" in err
    status, _, err = run_cli(capsys, tmp_path / "m.pth", tmp_path / "x.h5", "--arch", arch, "--source", "efficientnet_lite_pytorch")
    assert status == 2 and "does not apply to mobilenet_v2" in err
    status, report, _ = run_cli(capsys, tmp_path / "m.pth", tmp_path / "x.h5", "--arch", arch, "--source", "tonylins")
    assert status == 0 and "naming          tonylins" in report


def test_lightnets_info_describes_weights_checkpoints_and_tflite_files(tmp_path, capsys):
    """`lightnets info FILE`: a weights file's record and a checkpoint's
    tensors and naming without TensorFlow; a TFLite file's input and output."""
    from keras_lightnets.runtime.tflite import tflite_bytes
    from tests import finetune_data as fd

    model = MobileNetV2(num_classes=10, width_mult=0.5)
    state = model.state_dict()
    torch.save(state, tmp_path / "model.pth")
    weights = tmp_path / "w.h5"
    fd.classifier_file(str(weights), classes=5, size=48)
    (tmp_path / "model.tflite").write_bytes(tflite_bytes(kl.from_h5(weights)))

    def info(path):
        result = subprocess.run([sys.executable, "-c", "import sys; from keras_lightnets.cli.main import main; sys.exit(main())",
                                 "info", str(path)], capture_output=True, text=True, cwd=REPO, timeout=120,
                                env={**os.environ, **without_tensorflow(tmp_path)})
        assert result.returncode == 0 and result.stderr == "", result.stderr
        return dict(line.split(None, 1) if " " in line else (line, "") for line in result.stdout.splitlines())

    facts = info(tmp_path / "w.h5")
    assert facts["kind"] == "keras-lightnets weights" and facts["arch"] == "mobilenet_v2"
    assert json.loads(facts["builder_kwargs"]) == kl.weights_info(weights)["builder_kwargs"]
    facts = info(tmp_path / "model.pth")
    counted = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert int(facts["tensors"]) == len(counted) and int(facts["parameters"]) == sum(v.numel() for v in counted.values())
    assert "mobilenet_v2 (torchvision)" in facts["recognised"]
    assert lightnets(["info", str(tmp_path / "model.tflite")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("inputs") and "[-1, 48, 48, 3]" in line for line in lines), lines
    assert any(line.startswith("outputs") and "[-1, 5]" in line for line in lines), lines


def test_console_script_is_installed():
    import shutil
    import subprocess

    script = shutil.which("lightnets")
    assert script, "pip install -e . should install the lightnets command"
    result = subprocess.run([script, "convert", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--arch" in result.stdout
    assert result.stderr == ""  # --help starts no TensorFlow (which writes its notices to stderr)
