"""Export to SavedModel and TFLite, checked against Keras."""

import os
import subprocess
import sys

import numpy as np
import pytest

import keras_lightnets as kl
from keras_lightnets.catalog import pretrained_file, weights_info
from keras_lightnets.runtime import calibration, tflite
from keras_lightnets.runtime import export as exporter
from keras_lightnets.runtime.folding import fold_batchnorm
from keras_lightnets.runtime.tflite import load_interpreter
from tests.helpers import REPO

NATURAL_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "camera", "hubble_deep_field", "retina", "immunohistochemistry", "horse")


@pytest.fixture(scope="module")
def lite0():
    path = pretrained_file("efficientnet_lite0")
    return kl.from_h5(path, classifier_activation=None), weights_info(path)["preprocessing"]


@pytest.fixture(scope="module")
def real_photos(tmp_path_factory):
    """scikit-image's sample photos, each also mirrored: 20 images."""
    import skimage.data
    from PIL import Image, ImageOps

    folder = tmp_path_factory.mktemp("photos")
    for name in NATURAL_PHOTOS:
        pixels = getattr(skimage.data, name)()
        if pixels.dtype != np.uint8:
            pixels = (pixels * 255).astype("uint8")
        img = Image.fromarray(pixels).convert("RGB")
        img.save(folder / f"{name}.png")
        ImageOps.mirror(img).save(folder / f"{name}_mirrored.png")
    return folder


@pytest.mark.parametrize("input_dtype", ["float32", "uint8"])
def test_tflite_fp32_reproduces_keras(lite0, input_dtype, tmp_path):
    model, preprocessing = lite0
    figures = exporter.export(model, str(tmp_path / "m.tflite"), "tflite",
                              input_dtype=input_dtype, preprocessing=preprocessing, diff_layers=True)
    assert figures["max_abs_diff"] <= 1e-4 and figures["top1_agreement"] == 1.0
    # tensor by tensor too: every block's output (BN folded, ReLU6 fused) and the pooled features
    header, verdict = figures["layer_diff"]
    compared = int(header.split()[0])
    assert "Keras layers ↔ TFLite tensors (fp32) on 2 inputs" in header and compared >= 16 * 2
    assert verdict.startswith(f"no divergence in {compared} pairs"), verdict
    interpreter = load_interpreter((tmp_path / "m.tflite").read_bytes())
    (source,) = interpreter.get_input_details()
    assert source["dtype"] == np.dtype(input_dtype) and list(source["shape"]) == [1, 224, 224, 3]


def test_savedmodel_reproduces_keras(lite0, tmp_path):
    model, preprocessing = lite0
    figures = exporter.export(model, str(tmp_path / "sm"), "savedmodel", preprocessing=preprocessing)
    assert figures["max_abs_diff"] <= 1e-4
    assert (tmp_path / "sm" / "saved_model.pb").exists()


def test_failed_check_deletes_output(lite0, tmp_path, monkeypatch):
    model, preprocessing = lite0
    monkeypatch.setattr(exporter, "FP32_ATOL", 0.0)  # TFLite's kernels differ by ~1e-5
    with pytest.raises(exporter.ExportCheckError, match="does not reproduce"):
        exporter.export(model, str(tmp_path / "m.tflite"), "tflite", preprocessing=preprocessing)
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.slow
def test_int8_agrees_with_fp32_on_real_photos(lite0, real_photos, tmp_path):
    model, preprocessing = lite0
    photos = calibration.folder_photos(str(real_photos))
    assert len(photos) == 20
    pixels = calibration.photo_pixels(photos, preprocessing, 40, seed=0)
    others = calibration.photo_pixels(photos, preprocessing, 20, seed=1, originals=False)
    figures = exporter.export(model, str(tmp_path / "q.tflite"), "tflite", quantize="int8", calibration=pixels,
                              input_dtype="uint8", preprocessing=preprocessing, evaluation=others)
    fp32_bytes = len(exporter.tflite_bytes(fold_batchnorm(model)))
    print(f"int8: top-1 agreement {figures['top1_agreement']:.1%}, size {figures['bytes'] / fp32_bytes:.2f}x fp32")
    # float: the preprocessing (uint8 pixels in) and the first convolutions (`tflite.FLOAT_HEAD`)
    assert figures["float_ops"] == ["SUB", "MUL", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D"][:2 + tflite.FLOAT_HEAD]
    assert figures["top1_agreement"] >= 0.8
    assert figures["bytes"] < 0.4 * fp32_bytes


def test_lightnets_export_writes_a_tflite_file_that_reproduces_keras(tmp_path, capsys):
    """`lightnets export --weights W.h5 --format tflite OUT` with the default
    options: an app-ready file (MediaPipe metadata with the labels; the
    weights' per-channel mean/std inside the graph behind a uint8 input of
    RGB pixels) that computes, from the raw pixels of photos, what the Keras
    model built from W.h5 computes from the same pixels preprocessed."""
    from keras_lightnets.cli.main import main as lightnets
    from keras_lightnets.preprocessing import preprocess_input
    from keras_lightnets.runtime.metadata import read_image_metadata
    from keras_lightnets.runtime.tflite import Runner
    from tests import finetune_data as fd

    weights, out = tmp_path / "w.h5", tmp_path / "model.tflite"
    fd.classifier_file(str(weights), classes=5, size=48, calibrated=True)
    assert lightnets(["export", "--weights", str(weights), "--format", "tflite", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out} (") and "input           uint8, 48x48" in printed
    content = out.read_bytes()
    runner = Runner(content)
    assert runner.input_shape == (None, 48, 48, 3) and runner.input_details["dtype"] == np.uint8
    metadata = read_image_metadata(content)
    assert metadata["task"] == "classifier" and len(metadata["outputs"][0]["labels"]) == 5
    pixels = fd.photo_crops(48)
    preprocessing = weights_info(weights)["preprocessing"]
    assert preprocessing["mode"] == "torch"  # per-channel: MediaPipe's metadata cannot say it, the graph does
    expected = kl.from_h5(weights).predict(preprocess_input(pixels.astype("float32"), preprocessing), verbose=0)
    assert np.abs(expected[:, None] - expected[None]).max() > 0.1  # the photos give different outputs
    np.testing.assert_allclose(runner(pixels), expected, atol=1e-4 * max(1.0, np.abs(expected).max()), rtol=0)


def test_cli_refuses_existing_output_and_bad_requests(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "keras_lightnets.export", *map(str, args)],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=600)

    (tmp_path / "exists.tflite").write_bytes(b"keep")
    result = run("--model", "efficientnet_lite0", "--format", "tflite", tmp_path / "exists.tflite")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "exists" in result.stderr
    assert (tmp_path / "exists.tflite").read_bytes() == b"keep"
    result = run("--model", "efficientnet_lite0", "--format", "tflite", "--quantize", "int8",
                 "--calibration", tmp_path / "missing", tmp_path / "q.tflite")
    assert result.returncode == 2 and "--calibration" in result.stderr and not (tmp_path / "q.tflite").exists()
    result = run("--model", "mobilenet_v9", "--format", "tflite", tmp_path / "x.tflite")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    result = run("--model", "efficientnet_lite0", "--format", "savedmodel", "--diff-layers", tmp_path / "sm")
    assert result.returncode == 2 and "--diff-layers compares TFLite tensors" in result.stderr


def test_deeplab_exports_to_tflite_with_its_resizes(tmp_path):
    model = kl.DeepLabV3Plus((129, 129, 3), classes=5, backbone="mobilenetv2", head="jfzhang95")
    figures = exporter.export(model, str(tmp_path / "seg.tflite"), "tflite",
                              preprocessing={"mode": "torch"}, input_dtype="uint8")
    assert figures["max_abs_diff"] <= 1e-4
    interpreter = load_interpreter((tmp_path / "seg.tflite").read_bytes())
    assert list(interpreter.get_output_details()[0]["shape"]) == [1, 129, 129, 5]
