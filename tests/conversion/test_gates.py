"""The converter's protections, fed real failures: the parity gate and atomic overwrites.

- The parity gate gets a checkpoint with one perturbed weight and a reference
  holding the unperturbed weights (`tests.helpers:original_marvis_reference`); the perturbation is measured here with
  PyTorch alone, on the gate's own inputs, to be above the 1e-4 threshold but
  to keep the top-5. `PARITY_ATOL` is never touched.
- A second perturbation stays below the threshold but swaps ranks 5 and 6:
  the top-5 half of the gate.
- Overwrites: a `--force` conversion SIGKILLed while it writes, or refused by
  the gate, leaves the existing output byte for byte.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import types

import numpy as np
import pytest
import torch

import keras_lightnets as kl
from keras_lightnets.conversion.pipeline import parity_images
from keras_lightnets.conversion.references.marvis import MobileNet as MarvisMobileNet
from keras_lightnets.registry import get_spec
from tests.helpers import (
    ORIGINAL_CHECKPOINT_ENV,
    REPO,
    nchw,
    randomize_torch_model,
    reference_images,
    run_cli,
    slow_converter,
    top5,
    torch_forward,
)

GATE_ATOL = 1e-4  # the documented threshold (GUIDE §6), written here, not read from the code
REFERENCE = "tests.helpers:original_marvis_reference"
ARCH = ["--arch", "mobilenet_v1"]


def gate_inputs():
    """The NHWC images the converter's parity gate runs (224x224 for mobilenet_v1)."""
    images = parity_images(types.SimpleNamespace(input_shape=(None, 224, 224, 3)), get_spec("mobilenet_v1"))
    assert images.shape[1:] == (224, 224, 3) and images.std() > 0.5
    return images


def holding(state_dict):
    model = MarvisMobileNet(num_classes=50, width_mult=0.25)
    model.load_state_dict(state_dict)
    return model.eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """original.pth, perturbed.pth (one weight moved: logits > 1e-4 off, same top-5),
    tie_original.pth / tie_perturbed.pth (logits 6e-5 off, ranks 5 and 6 swapped)."""
    folder = tmp_path_factory.mktemp("gates")
    torch.manual_seed(7)
    model = MarvisMobileNet(num_classes=50, width_mult=0.25)
    randomize_torch_model(model, nchw(reference_images()), seed=7)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(original, folder / "original.pth")
    inputs = np.concatenate([gate_inputs(), reference_images()])

    perturbed = {k: v.clone() for k, v in original.items()}
    perturbed["model.7.3.weight"][5, 3, 0, 0] += 0.05  # one pointwise weight, mid-network
    torch.save(perturbed, folder / "perturbed.pth")
    before, after = torch_forward(holding(original), inputs), torch_forward(holding(perturbed), inputs)
    moved = float(np.abs(after - before).max())
    assert moved > 3 * GATE_ATOL, f"the perturbation moves the logits by {moved:.1e} only"
    assert moved < 0.1, f"the perturbation moves the logits by {moved:.1e}: not a subtle mismatch"
    np.testing.assert_array_equal(top5(after), top5(before))  # invisible to the top-5 half of the gate
    gate_moved = float(np.abs(after - before)[: len(gate_inputs())].max())  # what the gate will see
    assert gate_moved > 3 * GATE_ATOL

    # Ranks 5 and 6 of the gate's first image 2e-5 apart, then swapped by a 6e-5 bias change.
    logits = torch_forward(holding(original), gate_inputs())[0]
    fifth, sixth = np.argsort(-logits)[4:6]
    tie = {k: v.clone() for k, v in original.items()}
    tie["fc.bias"][sixth] += float(logits[fifth] - logits[sixth]) - 2e-5
    torch.save(tie, folder / "tie_original.pth")
    tie_perturbed = {k: v.clone() for k, v in tie.items()}
    tie_perturbed["fc.bias"][sixth] += 6e-5
    torch.save(tie_perturbed, folder / "tie_perturbed.pth")
    before = torch_forward(holding(tie), gate_inputs())
    after = torch_forward(holding(tie_perturbed), gate_inputs())
    assert np.abs(after - before).max() < 0.8 * GATE_ATOL
    assert (top5(after) != top5(before)).any()
    return folder, gate_moved


def reported_difference(text):
    match = re.search(r"max \|Δlogit\| ([0-9.]+e[-+][0-9]+)", text)
    assert match, text
    return float(match.group(1))


def test_gate_passes_the_weights_and_refuses_one_perturbed_weight(checkpoints, tmp_path, capsys, monkeypatch):
    """Same weights: written, the report shows the measured difference. Then a
    `--force` conversion of the perturbed checkpoint over that file: refused
    with the difference PyTorch shows, and the old file untouched."""
    folder, moved = checkpoints
    monkeypatch.setenv(ORIGINAL_CHECKPOINT_ENV, str(folder / "original.pth"))
    out = tmp_path / "model.h5"
    status, report, err = run_cli(capsys, folder / "original.pth", out, *ARCH, "--reference", REFERENCE)
    assert status == 0, err
    assert "vs tests.helpers:original_marvis_reference (MobileNet) on 2 inputs" in report
    assert "top-5 identical" in report
    assert 0 < reported_difference(report) <= GATE_ATOL / 2
    assert f"written         {out}" in report
    images = reference_images()
    keras_logits = np.asarray(kl.from_h5(out, classifier_activation=None)(images))
    expected = torch_forward(holding(torch.load(folder / "original.pth")), images)
    assert np.abs(keras_logits - expected).max() <= GATE_ATOL
    old = out.read_bytes()

    status, report, err = run_cli(
        capsys, folder / "perturbed.pth", out, *ARCH, "--force", "--reference", REFERENCE
    )
    assert status == 2, report
    assert "does not reproduce" in err and "nothing written" in err
    # the gate measured the perturbation PyTorch shows (Keras runs the perturbed weights faithfully)
    assert reported_difference(err) == pytest.approx(moved, rel=0.1)
    assert out.read_bytes() == old
    assert os.listdir(tmp_path) == ["model.h5"]


def test_gate_refuses_a_top5_change_below_the_threshold(checkpoints, tmp_path, capsys, monkeypatch):
    folder, _ = checkpoints
    monkeypatch.setenv(ORIGINAL_CHECKPOINT_ENV, str(folder / "tie_original.pth"))
    out = tmp_path / "tie.h5"
    status, report, err = run_cli(capsys, folder / "tie_perturbed.pth", out, *ARCH, "--reference", REFERENCE)
    assert status == 2, report
    assert "does not reproduce" in err
    assert reported_difference(err) < GATE_ATOL  # refused for the top-5, not the threshold
    assert os.listdir(tmp_path) == []


def test_force_killed_while_writing_keeps_the_old_file(checkpoints, tmp_path, capsys):
    folder, _ = checkpoints
    out = tmp_path / "model.h5"
    status, _, err = run_cli(capsys, folder / "original.pth", out, *ARCH, "--no-check")
    assert status == 0, err
    old, before = out.read_bytes(), os.stat(out)
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3"}
    log = tempfile.TemporaryFile()
    child = subprocess.Popen(
        [sys.executable, "-c", slow_converter(0.05), str(folder / "perturbed.pth"), str(out), *ARCH, "--force", "--no-check"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 300
        writing = False
        while time.monotonic() < deadline and child.poll() is None:
            names = os.listdir(tmp_path)
            now = os.stat(out) if out.exists() else None
            touched = now is None or (now.st_ino, now.st_size, now.st_mtime_ns) != (
                before.st_ino, before.st_size, before.st_mtime_ns)
            if any(n.startswith(".") and n.endswith(".tmp") for n in names) or touched:
                writing = True
                break
            time.sleep(0.005)
        if not writing:
            log.seek(0)
            pytest.fail(f"the conversion never started writing (exit {child.poll()}): {log.read()[-2000:]!r}")
        time.sleep(0.5)  # well inside the slowed write (~100 datasets x 0.05 s)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        log.close()
    assert child.returncode == -signal.SIGKILL, "the conversion finished before it was killed"
    assert out.read_bytes() == old
    kl.from_h5(out)  # still the valid old file


def test_completeness_refuses_unused_tensors_and_unset_layers():
    """A naming table that forgets a Keras layer would write it randomly
    initialised: refused unless --allow-partial, like unused tensors."""
    import keras

    from keras_lightnets.conversion.pipeline import ConversionError, completeness

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="b")(keras.layers.Dense(2, name="a")(inputs)))
    mapped = {"a": []}
    with pytest.raises(ConversionError, match=r"1 Keras layers unset \(first: 'b'\)"):
        completeness(model, {"a.weight"}, {"a.weight"}, mapped, [], allow_partial=False)
    assert completeness(model, {"a.weight"}, {"a.weight"}, mapped, [], allow_partial=True) == ([], ["b"])
    with pytest.raises(ConversionError, match=r"1 checkpoint tensors unused \(first: 'x.bias'\)"):
        completeness(model, {"a.weight", "x.bias"}, {"a.weight"}, {"a": [], "b": []}, [], allow_partial=False)
    # aliases of a used tensor (tied weights saved twice) count as used
    assert completeness(model, {"a.weight", "c.weight"}, {"a.weight"}, {"a": [], "b": []},
                        [{"a.weight", "c.weight"}], allow_partial=False) == ([], [])
