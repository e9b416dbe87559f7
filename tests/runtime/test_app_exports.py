"""Exports for apps, through `lightnets export` as a user runs it: MediaPipe's own task API loads the
TFLite files (ImageClassifier, ImageSegmenter), ONNX Runtime runs the ONNX files, each against Keras."""

import os
import subprocess
import sys

import keras
import mediapipe as mp
import numpy as np
import pytest
from mediapipe.tasks.python import BaseOptions, vision
from PIL import Image

import keras_lightnets as kl
from keras_lightnets.catalog import pretrained_file
from keras_lightnets.cli.export import main as export_main
from keras_lightnets.cli.info import main as info_main
from keras_lightnets.preprocessing import preprocess_input
from keras_lightnets.runtime import export as exporter
from keras_lightnets.runtime import metadata as md
from keras_lightnets.runtime.onnx_export import OnnxRunner
from keras_lightnets.runtime.tflite import Runner, tflite_bytes
from tests.finetune_data import deeplab_file, imagenet_deeplab_file, randomise_bn
from tests.helpers import REPO, photo, small_classifier, without_tensorflow

COFFEE = os.path.join(REPO, "examples", "coffee.jpg")


def classify(path, image, max_results=5):
    """MediaPipe's `[(index, label, score)]` for a photo file or an RGB uint8 array."""
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                            max_results=max_results)
    if isinstance(image, str):
        image = mp.Image.create_from_file(image)
    else:
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
    with vision.ImageClassifier.create_from_options(options) as classifier:
        result = classifier.classify(image)
    return [(c.index, c.category_name, c.score) for c in result.classifications[0].categories]


def segment(path, pixels):
    """MediaPipe's `(category mask (H, W), confidence masks (H, W, classes), labels)`."""
    options = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                           output_category_mask=True, output_confidence_masks=True)
    with vision.ImageSegmenter.create_from_options(options) as segmenter:
        labels = list(segmenter.labels)
        result = segmenter.segment(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(pixels)))
        # numpy_view() is a view of MediaPipe's memory: copied while the task and result live
        category = np.array(result.category_mask.numpy_view(), copy=True).reshape(pixels.shape[:2])
        confidence = np.stack([np.array(m.numpy_view(), copy=True).reshape(pixels.shape[:2])
                               for m in result.confidence_masks], -1)
    return category, confidence, labels


def export(capsys, *args):
    """`lightnets export ARGS`: `(exit status, stdout, stderr)`."""
    try:
        status = export_main([str(a) for a in args])
    except SystemExit as exit:  # a usage error, from argparse
        status = exit.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def coffee_pixels(size=224):
    """examples/coffee.jpg resized to `size` x `size` (uint8): what the model sees, given to MediaPipe as it is."""
    return np.asarray(Image.open(COFFEE).convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def mobilenet_v2():
    """torchvision's MobileNetV2 (converted; `pretrained_file`) and its Keras model."""
    path = pretrained_file("mobilenet_v2")
    return path, kl.from_h5(path)


@pytest.fixture(scope="module")
def mobilenet_v2_tflite(mobilenet_v2, tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite") / "mobilenet_v2.tflite"
    status = export_main(["--weights", mobilenet_v2[0], "--format", "tflite", str(out)])
    assert status == 0
    return out


# ---------------------------------------------------------------- classifiers


def test_mobilenet_v2_tflite_names_espresso_in_mediapipe(mobilenet_v2, mobilenet_v2_tflite):
    """torchvision's per-channel ImageNet mean/std cannot be MediaPipe metadata: the file takes
    uint8 pixels with the normalisation inside, and MediaPipe runs it as Keras does."""
    weights, model = mobilenet_v2
    info = md.read_image_metadata(mobilenet_v2_tflite.read_bytes())
    (image,), (score,) = info["inputs"], info["outputs"]
    assert info["task"] == "classifier" and image["tensor"]["dtype"] == "uint8" and "mean" not in image
    assert image["tensor"]["shape"][1:] == (224, 224, 3) and len(score["labels"]) == 1000
    # the photo as a user gives it: MediaPipe resizes it itself
    top = classify(mobilenet_v2_tflite, COFFEE)
    print(f"MediaPipe on examples/coffee.jpg: {top[:2]}")
    assert top[0][1] == "espresso"
    # the pixels the model sees: MediaPipe's scores are Keras' probabilities
    pixels = coffee_pixels()
    record = kl.weights_info(weights)
    expected = model.predict(preprocess_input(pixels[None].astype("float32"), record["preprocessing"]), verbose=0)[0]
    got = classify(mobilenet_v2_tflite, pixels)
    order = np.argsort(-expected)[:5]
    print(f"MediaPipe vs Keras on the same 224x224 pixels: {got[0][1]} {got[0][2]:.7f} vs "
          f"{expected[order[0]]:.7f}, max |Δ| top-5 {np.abs(np.array([c[2] for c in got]) - expected[order]).max():.1e}")
    assert [c[0] for c in got] == order.tolist() and got[0][1] == "espresso"
    np.testing.assert_allclose([c[2] for c in got], expected[order], atol=1e-5)


def test_info_shows_the_metadata(mobilenet_v2_tflite, capsys):
    assert info_main([str(mobilenet_v2_tflite)]) == 0
    out = capsys.readouterr().out
    assert "ImageClassifier (MediaPipe classifier)" in out and "1000: tench, goldfish" in out
    assert "uint8 [-1, 224, 224, 3]" in out and "none (uint8 pixels go in as they are)" in out


def test_float_input_with_normalization_metadata(tmp_path):
    """A one-scale preprocessing ("tf": x / 127.5 - 1) goes into the metadata, the input stays float32."""
    model = small_classifier()
    labels = ["tench", "goldfish", "shark", "hen", "ostrich"]
    figures = exporter.export(model, tmp_path / "c.tflite", preprocessing={"mode": "tf"}, labels=labels)
    assert figures["input_dtype"] == "float32" and "mean 127.5 std 127.5" in figures["metadata"]
    pixels = np.random.default_rng(4).integers(0, 256, (32, 32, 3)).astype("uint8")
    expected = model.predict(preprocess_input(pixels[None].astype("float32"), "tf"), verbose=0)[0]
    got = classify(tmp_path / "c.tflite", pixels)
    assert [c[1] for c in got] == [labels[i] for i in np.argsort(-expected)]
    np.testing.assert_allclose([c[2] for c in got], np.sort(expected)[::-1], atol=1e-5)


@pytest.mark.parametrize("mode", ["tf", "lite", "unit", "torch", "caffe", "bgr"])
def test_mediapipe_normalization_is_preprocess_input(mode):
    """The NormalizationOptions MediaPipe applies, (pixel - mean) / std, are the mode's own values."""
    found = exporter.mediapipe_normalization({"mode": mode})
    if mode in ("torch", "caffe", "bgr"):  # per channel, or BGR: not expressible
        assert found is None and exporter.resolve_input_dtype("auto", "tflite", mode) == "uint8"
        return
    pixels = np.arange(256, dtype="float32")[:, None, None].repeat(3, -1)
    mean, std = found
    np.testing.assert_allclose((pixels - mean) / std, preprocess_input(pixels, mode), atol=1e-6)


def test_mediapipe_refuses_what_the_metadata_rules_refuse(tmp_path):
    """Why: MediaPipe refuses per-channel normalisation and a float input without NormalizationOptions."""
    content = md.add_image_metadata(tflite_bytes(small_classifier()), "classifier", list("abcde"),
                                    mean=[123.7, 116.3, 103.5], std=[58.4, 57.1, 57.4], allow_per_channel=True)
    (tmp_path / "p.tflite").write_bytes(content)
    pixels = np.zeros((32, 32, 3), "uint8")
    with pytest.raises(Exception, match="[Pp]er-channel"):
        classify(tmp_path / "p.tflite", pixels)
    (tmp_path / "n.tflite").write_bytes(tflite_bytes(small_classifier()))
    with pytest.raises(Exception, match="NormalizationOptions"):
        classify(tmp_path / "n.tflite", pixels)


def test_bad_requests_one_line_nothing_written(tmp_path, capsys):
    weights = tmp_path / "c.h5"
    from tests.finetune_data import classifier_file

    classifier_file(weights)
    cases = [
        (["--format", "onnx", "--quantize", "fp16"], "--quantize applies to --format tflite"),
        (["--format", "tflite", "--free-size"], "--free-size is for segmenters"),
        (["--format", "tflite", "--input-dtype", "float32"], "MediaPipe's metadata cannot express"),
        (["--format", "tflite", "--size", "16"], "at least 32"),
    ]
    for args, message in cases:
        status, out, err = export(capsys, "--weights", weights, *args, tmp_path / "out.tflite")
        assert status == 2 and message in err and err.count("\n") == 1 and out == "", (args, err)
    # the checks run before TensorFlow starts
    result = subprocess.run(
        [sys.executable, "-m", "keras_lightnets.export", "--weights", str(weights), "--format", "tflite",
         "--free-size", str(tmp_path / "out.tflite")],
        capture_output=True, text=True, cwd=REPO, timeout=300, env={**os.environ, **without_tensorflow(tmp_path)},
    )
    assert result.returncode == 2 and result.stderr == "error: --free-size is for segmenters: a classifier is " \
        "exported at its own size\n"
    (tmp_path / "exists.onnx").write_bytes(b"keep")
    status, _, err = export(capsys, "--weights", weights, "--format", "onnx", tmp_path / "exists.onnx")
    assert status == 2 and "exists" in err and (tmp_path / "exists.onnx").read_bytes() == b"keep"
    assert sorted(os.listdir(tmp_path)) == ["c.h5", "exists.onnx", "no_tensorflow"]


# ---------------------------------------------------------------- segmenters


@pytest.fixture(scope="module")
def deeplab_weights(tmp_path_factory):
    """DeepLabV3+ on torchvision's ImageNet MobileNetV2 with a new head of 3 classes (what
    fine-tuning starts from): masks that follow the photo, not a constant."""
    path = tmp_path_factory.mktemp("deeplab") / "deeplab.h5"
    imagenet_deeplab_file(str(path), classes=3)
    return path


@pytest.mark.parametrize("arch,size", [
    ("lraspp_mobilenet_v3_large", (520, 520)),  # torchvision's SemanticSegmentation(resize_size=520)
    ("deeplabv3plus_mobilenetv2", (512, 512)),  # VainF's: the photo at its own size
])
def test_segmenters_export_at_the_size_their_photos_meet(arch, size):
    import argparse

    from keras_lightnets import registry
    from keras_lightnets.cli.export import input_size

    record = {"arch": arch, "preprocessing": dict(registry.get_spec(arch).preprocessing)}
    assert input_size(argparse.Namespace(size=None), record) == size
    assert input_size(argparse.Namespace(size=(64, 96)), record) == (64, 96)


@pytest.mark.slow
def test_segmenter_at_a_fixed_size_for_mediapipe(deeplab_weights, tmp_path, capsys):
    status, out, err = export(capsys, "--weights", deeplab_weights, "--format", "tflite", "--size", "64x96",
                              tmp_path / "seg.tflite")
    assert status == 0, err
    assert "MediaPipe takes fixed input sizes only" in out and "input           uint8, 64x96" in out
    pixels = np.asarray(Image.open(COFFEE).convert("RGB").resize((96, 64), Image.Resampling.BILINEAR))
    model = kl.from_h5(deeplab_weights, input_shape=(64, 96, 3))
    logits = model.predict(preprocess_input(pixels[None].astype("float32"), "torch"), verbose=0)[0]
    category, confidence, labels = segment(tmp_path / "seg.tflite", pixels)
    assert labels == ["class 0", "class 1", "class 2"]
    top2 = np.sort(logits, -1)[..., -2:]
    decided = top2[..., 1] - top2[..., 0] > 1e-4  # pixels float rounding cannot flip
    assert decided.mean() > 0.99 and len(np.unique(logits.argmax(-1))) > 1
    np.testing.assert_array_equal(category[decided], logits.argmax(-1)[decided])
    # the metadata's activation: MediaPipe's confidence masks are the softmax of the logits
    np.testing.assert_allclose(confidence, softmax(logits), atol=1e-5)


@pytest.mark.slow
def test_segmenter_with_free_size(tmp_path, capsys):
    """--free-size: one file for any size (LiteRT resizes it), no MediaPipe metadata, checked at two sizes."""
    weights = tmp_path / "small.h5"
    deeplab_file(str(weights))  # MobileNetV2 α 0.35, separable head, random
    status, out, err = export(capsys, "--weights", weights, "--format", "tflite", "--free-size",
                              "--size", "64x96", tmp_path / "free.tflite")
    assert status == 0, err
    assert "on 4 inputs" in out and "no MediaPipe metadata" in out
    content = (tmp_path / "free.tflite").read_bytes()
    assert md.read_image_metadata(content) is None
    runner, model = Runner(content), kl.from_h5(weights)
    for shape in ((1, 57, 83, 3), (1, 96, 64, 3)):
        x = preprocess_input(np.random.default_rng(0).uniform(0, 255, shape).astype("float32"), "torch")
        expected = model.predict(x, verbose=0)
        assert runner(x).shape == expected.shape and np.abs(expected).max() > 0.1
        np.testing.assert_allclose(runner(x), expected, atol=1e-4)


# ---------------------------------------------------------------- ONNX, fp16, checks


@pytest.mark.slow
def test_mobilenet_v2_onnx_matches_keras(mobilenet_v2, tmp_path, capsys):
    weights, model = mobilenet_v2
    status, out, err = export(capsys, "--weights", weights, "--format", "onnx", tmp_path / "m.onnx")
    assert status == 0, err
    print(out)
    runner = OnnxRunner((tmp_path / "m.onnx").read_bytes())
    assert runner.input.type == "tensor(float)" and runner.input.shape[1:] == [224, 224, 3]
    pixels = np.stack([coffee_pixels(), photo("chelsea", 224).astype("uint8")])
    x = preprocess_input(pixels.astype("float32"), "torch")
    got, expected = runner(x), model.predict(x, verbose=0)
    print(f"ONNX Runtime vs Keras on two photos: max |Δ| {np.abs(got - expected).max():.1e} (probabilities)")
    assert np.abs(got - expected).max() <= 1e-4 and expected[1].max() < 0.9  # one confident, one not
    assert kl.decode_predictions(got, top=1)[0][0][1] == "espresso"


@pytest.mark.parametrize("mode", ["caffe", "tf"])  # BGR and per-channel means; one scale
def test_onnx_with_uint8_input(tmp_path, mode):
    model = small_classifier()
    figures = exporter.export(model, tmp_path / "m.onnx", "onnx", input_dtype="uint8", preprocessing={"mode": mode})
    assert figures["max_abs_diff"] <= 1e-4 and figures["input_dtype"] == "uint8"
    runner = OnnxRunner((tmp_path / "m.onnx").read_bytes())
    assert runner.input.type == "tensor(uint8)"
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    expected = model.predict(preprocess_input(pixels.astype("float32"), mode), verbose=0)
    np.testing.assert_allclose(runner(pixels), expected, atol=1e-5)
    assert np.abs(runner(pixels) - model.predict(preprocess_input(pixels.astype("float32"), "unit"), verbose=0)).max() > 1e-3


@pytest.mark.slow
def test_mobilenet_v2_fp16(mobilenet_v2, tmp_path, capsys):
    weights, model = mobilenet_v2
    status, out, err = export(capsys, "--weights", weights, "--format", "tflite", "--quantize", "fp16",
                              tmp_path / "m16.tflite")
    assert status == 0, err
    print(out)
    assert "size 0.5" in out
    pixels = coffee_pixels()
    expected = model.predict(preprocess_input(pixels[None].astype("float32"), "torch"), verbose=0)[0]
    got = classify(tmp_path / "m16.tflite", pixels)
    print(f"fp16 in MediaPipe: {got[0][1]} {got[0][2]:.5f} vs Keras {expected.max():.5f}")
    assert got[0][1] == "espresso" and abs(got[0][2] - expected.max()) < 5e-3


@pytest.mark.slow
def test_deeplab_onnx_free_size(tmp_path):
    """DeepLabV3+ with bubbliiiing's head (align_corners=True resizes), any input size."""
    keras.utils.set_random_seed(0)
    model = kl.DeepLabV3Plus(input_shape=(None, None, 3), head="bubbliiiing", classes=5, alpha=0.35)
    randomise_bn(model)
    figures = exporter.export(model, tmp_path / "d.onnx", "onnx", preprocessing={"mode": "torch"},
                              free_size=True, check_size=(64, 96))
    print(f"DeepLabV3+ ONNX: max |Δ| {figures['max_abs_diff']:.1e}")
    assert figures["max_abs_diff"] <= 1e-4 and figures["samples"] == 4
    x = preprocess_input(np.random.default_rng(1).uniform(0, 255, (1, 97, 131, 3)).astype("float32"), "torch")
    expected = model.predict(x, verbose=0)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(OnnxRunner((tmp_path / "d.onnx").read_bytes())(x), expected, atol=1e-4)


def test_failed_onnx_check_writes_nothing(tmp_path, monkeypatch):
    model = small_classifier()
    (tmp_path / "m.onnx").write_bytes(b"previous")
    monkeypatch.setattr(exporter, "FP32_ATOL", -1.0)  # no export can pass
    with pytest.raises(exporter.ExportCheckError, match="does not reproduce"):
        exporter.export(model, tmp_path / "m.onnx", "onnx", force=True)
    assert (tmp_path / "m.onnx").read_bytes() == b"previous" and os.listdir(tmp_path) == ["m.onnx"]
