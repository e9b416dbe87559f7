"""Parity by default, a refused wrong reference, and where models part (`--diff-layers`).

- A PyTorch reference with one activation dropped (torchvision's
  MobileNetV2 with block 6's expand ReLU6 gone), given with `--reference`
  from a module written in the test's folder: the conversion is refused,
  nothing is written, and `--diff-layers` names that block's first layer.
- Without torch the report and the file's record say "not measured".
- A TFLite export of a model with one changed layer: the tensor-by-tensor
  comparison names that layer first.
"""

import os
import re
import sys

import numpy as np
import pytest
import torch

import keras_lightnets as kl
from keras_lightnets.conversion.references.torchvision.mobilenet_v2 import MobileNetV2
from tests.helpers import (
    nchw,
    randomize_keras_weights,
    randomize_torch_model,
    reference_images,
    run_cli,
)

WRONG_REFERENCE = '''
from torch import nn

from keras_lightnets.conversion.references.common import holding
from keras_lightnets.conversion.references.torchvision.mobilenet_v2 import MobileNetV2


def reference(spec, builder_kwargs, tensors):
    """torchvision's MobileNetV2 with the expand ReLU6 of features.6 dropped."""
    model = MobileNetV2(builder_kwargs["classes"], builder_kwargs["alpha"])
    model.features[6].conv[0][2] = nn.Identity()
    return holding(model, tensors)
'''


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """torchvision's MobileNetV2 (width 0.5, 10 classes), random weights and BN statistics."""
    folder = tmp_path_factory.mktemp("diff")
    torch.manual_seed(3)
    model = MobileNetV2(num_classes=10, width_mult=0.5)
    randomize_torch_model(model, nchw(reference_images()), seed=3)
    torch.save(model.state_dict(), folder / "mnv2.pth")
    return folder / "mnv2.pth"


@pytest.fixture
def wrong_reference(tmp_path, monkeypatch):
    (tmp_path / "dropped_activation.py").write_text(WRONG_REFERENCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "dropped_activation:reference"
    sys.modules.pop("dropped_activation", None)


def test_wrong_reference_is_refused_and_diff_layers_names_the_block(checkpoint, wrong_reference, tmp_path, capsys):
    out = tmp_path / "out" / "mnv2.h5"
    out.parent.mkdir()
    status, report, err = run_cli(capsys, checkpoint, out, "--arch", "mobilenet_v2", "--reference", wrong_reference)
    assert status == 2 and report == ""
    assert err.startswith("error: the Keras model does not reproduce dropped_activation:reference (MobileNetV2)")
    assert "--diff-layers" in err and err.count("\n") == 1
    assert os.listdir(out.parent) == []

    status, report, err = run_cli(
        capsys, checkpoint, out, "--arch", "mobilenet_v2", "--reference", wrong_reference, "--diff-layers"
    )
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert os.listdir(out.parent) == []
    # features.6 is Keras' block_5 (Keras counts the blocks after the first from 1)
    first = re.search(r"^layer diff +first divergence: (\S+) ↔ (\S+): max \|Δ\| (\S+), mean \|Δ\| (\S+)", report, re.M)
    assert first, report
    assert first.group(1, 2) == ("block_5_expand_relu", "features.6.conv.0")
    assert float(first.group(3)) > 0.1  # a ReLU6 missing, not float noise
    listed = re.findall(r"^layer diff +(?:first divergence|then): +(\S+) ↔", report, re.M)
    assert len(listed) == 5  # and the next few, all at or after block 5: the stem and blocks 0-4 agree
    assert all(re.match(r"block_([5-9]|1\d)_", name) for name in listed), listed


def test_diff_layers_on_request_reports_agreement_and_the_record_keeps_parity(checkpoint, tmp_path, capsys):
    out = tmp_path / "mnv2.h5"
    status, report, err = run_cli(capsys, checkpoint, out, "--arch", "mobilenet_v2", "--diff-layers")
    assert status == 0, err
    header = re.search(r"^layer diff +(\d+) Keras layers ↔ PyTorch modules", report, re.M)
    # the 105 rows of the layer map (52 convs, 52 BNs, the classifier) and the
    # 35 ReLU6 that end a Conv2dNormActivation
    assert header and int(header.group(1)) == 105 + 35, report
    assert "layer diff      no divergence in 140 pairs" in report
    difference = float(re.search(r"max \|Δlogit\| (\S+) vs torchvision MobileNetV2 \(shipped", report).group(1))
    record = kl.weights_info(out)["parity"]
    assert record["reference"] == "torchvision MobileNetV2 (shipped reference)"
    assert record["max_abs_diff"] == pytest.approx(difference, rel=0.01) and record["top5_identical"] is True
    assert 0 < record["max_prob_diff"] <= record["max_abs_diff"]


def test_without_torch_the_report_and_record_say_not_measured(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    out = tmp_path / "mnv2.h5"
    status, report, err = run_cli(capsys, checkpoint, out, "--arch", "mobilenet_v2")
    assert status == 0, err
    assert "parity          not measured: PyTorch is not installed (pip install torch to measure parity)\n" in report
    assert kl.weights_info(out)["parity"] == "not measured"
    status, report, _ = run_cli(capsys, checkpoint, tmp_path / "x.h5", "--arch", "mobilenet_v2", "--no-check")
    assert status == 0 and "parity          not measured (--no-check)" in report


def test_tflite_diff_names_the_changed_layer(tmp_path):
    """The export of a copy with one changed conv, compared with the original:
    the first divergence is that conv's block (its BN is folded into it, its
    ReLU6 fused), and everything before it agrees."""
    from keras_lightnets.runtime.folding import fold_batchnorm
    from keras_lightnets.runtime.tflite import tflite_bytes
    from keras_lightnets.runtime.tflite_diff import (
        folded_pairs,
        tflite_layer_diffs,
        tflite_report,
    )

    build = lambda: kl.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, classes=10, weights=None,  # noqa: E731
                                   classifier_activation=None)
    original, changed = build(), build()
    randomize_keras_weights(original, seed=1)
    changed.set_weights(original.get_weights())
    kernel = changed.get_layer("block_3_expand").kernel
    kernel.assign(kernel.numpy() * 1.5)
    inputs = np.random.default_rng(0).uniform(-1, 1, (3, 96, 96, 3)).astype("float32")

    exported = fold_batchnorm(original)
    same = tflite_layer_diffs(original, tflite_bytes(exported), inputs, folded=folded_pairs(exported))
    assert len(same) > 40 and not any(d.diverges for d in same)
    assert {d.keras_layer for d in same} >= {"Conv1_relu", "block_3_expand_relu", "block_3_project_BN", "out_relu"}

    exported = fold_batchnorm(changed)
    lines = tflite_report(original, tflite_bytes(exported), inputs, folded=folded_pairs(exported))
    assert lines[1].startswith("first divergence: block_3_expand_relu ↔ tensor "), lines
