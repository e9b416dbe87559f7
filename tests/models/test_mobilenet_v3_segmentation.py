"""torchvision's LR-ASPP and DeepLabV3 on MobileNetV3-Large: conversion parity
at odd input sizes, and the demo, folder prediction and fine-tuning's head."""

import contextlib
import io
import json
import re
import time

import numpy as np
import pytest
import torch
from PIL import Image

import keras_lightnets as kl
from keras_lightnets.cli import predict
from keras_lightnets.cli.convert import main as convert_main
from keras_lightnets.conversion.references.torchvision.segmentation import (
    DeepLabV3MobileNetV3Large,
    LRASPPMobileNetV3Large,
)
from keras_lightnets.models.mobilenet_v3 import segmentation_taps
from keras_lightnets.training import finetune as ft
from tests import finetune_data as fd
from tests.helpers import (
    assert_reported_parity,
    calibration_images,
    nchw,
    randomize_torch_model,
    torch_forward,
    unit_logits,
)

SEG_ATOL = 1e-4
SEG_ARGMAX = 0.9999  # on the pixels whose two best classes are more than 1e-4 apart


def lraspp(classes):
    model = LRASPPMobileNetV3Large(classes)
    return model, [model.classifier.low_classifier, model.classifier.high_classifier]


def deeplabv3(classes):
    model = DeepLabV3MobileNetV3Large(classes, aux_loss=True)  # as the published weights
    return model, [model.classifier[4]]


REFERENCES = {"lraspp_mobilenet_v3_large": lraspp, "deeplabv3_mobilenet_v3_large": deeplabv3}


def convert(arch, classes, images, folder, seed=0):
    """A random torchvision segmenter (calibrated BatchNorm, unit-spread logits on
    `images`), saved and converted with the CLI. Returns `(reference, report, .h5)`.

    The BatchNorm statistics are measured on `images` and on pixel noise: the
    converter checks itself on noise (`parity_images`), to which a model
    calibrated on smooth images alone gives logits of spread 5 or 6.
    """
    torch.manual_seed(seed)
    reference, classifiers = REFERENCES[arch](classes)
    noise = np.random.default_rng(seed).uniform(-2, 2, (1, *images.shape[1:])).astype("float32")
    randomize_torch_model(reference, nchw(np.concatenate([images, noise])), seed=seed)
    unit_logits(reference, images, classifiers)
    torch.save(reference.state_dict(), folder / f"{arch}.pth")
    out = folder / f"{arch}.h5"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = convert_main([str(folder / f"{arch}.pth"), str(out), "--arch", arch])
    assert status == 0, stderr.getvalue()
    return reference, stdout.getvalue(), out


def assert_segmentation_parity(got, expected):
    assert got.shape == expected.shape
    diff = np.abs(got - expected).max()
    top_two = np.sort(expected, axis=-1)[..., -2:]
    decided = top_two[..., 1] - top_two[..., 0] > 1e-4
    agreement = (got.argmax(-1) == expected.argmax(-1))[decided].mean()
    assert diff <= SEG_ATOL, f"max |Δlogit| = {diff:.2e}"
    assert agreement >= SEG_ARGMAX, f"argmax agreement {agreement:.5f}"
    assert decided.mean() > 0.99
    return diff, agreement


class _FixedTorch(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = torch.from_numpy(logits.transpose(0, 3, 1, 2).copy())

    def forward(self, x):
        return self.logits


class _FixedKeras:
    input_shape = (None, 4, 5, 3)

    def __init__(self, logits):
        self.logits = logits

    def __call__(self, images, training=False):
        return self.logits


@pytest.mark.parametrize("decided", [False, True])
def test_converter_gate_counts_the_decided_pixels(decided):
    """The converter's segmentation gate: |Δ| <= 1e-4 and 99.99 % argmax agreement
    on the pixels whose two best classes are more than 1e-4 apart."""
    from keras_lightnets.conversion.pipeline import ConversionError, check_parity

    expected = np.zeros((2, 4, 5, 3), "float32")
    expected[..., 0] = 1.0
    got = expected.copy()
    gap = 1.2e-4 if decided else 0.5e-4
    expected[0, 0, 0, 1] = 1.0 + gap
    got[0, 0, 0, :2] = (1.0 + 0.75 * gap, 1.0 + 0.25 * gap)  # within 1e-4 of expected, argmax flipped
    spec = kl.SPECS["lraspp_mobilenet_v3_large"]
    run = lambda: check_parity(_FixedKeras(got), spec, {}, {}, lambda *_: _FixedTorch(expected))
    if decided:
        with pytest.raises(ConversionError, match="does not reproduce"):
            run()
    else:
        measured, _ = run()
        assert measured["argmax_agreement"] == 1.0 and measured["max_abs_diff"] <= 1e-4


@pytest.fixture(scope="module")
def lraspp_converted(tmp_path_factory):
    """`(PyTorch reference, converted .h5)` of a random LR-ASPP."""
    reference, _, out = convert(
        "lraspp_mobilenet_v3_large", 21, calibration_images(97, 131), tmp_path_factory.mktemp("lraspp")
    )
    return reference, out


@pytest.fixture(scope="module")
def lraspp_file(lraspp_converted):
    return lraspp_converted[1]


@pytest.mark.parametrize(
    "arch,classes,report_line",
    [
        ("lraspp_mobilenet_v3_large", 21, "unused tensors  none\n"),
        ("deeplabv3_mobilenet_v3_large", 7,
         "unused tensors  none; 7 left out by design: aux_classifier.* (torchvision's auxiliary FCN head"),
    ],
)
def test_cli_conversion_reproduces_torchvision_at_odd_sizes(arch, classes, report_line, tmp_path):
    started = time.perf_counter()
    images = calibration_images(97, 131)
    reference, report, out = convert(arch, classes, images, tmp_path)
    assert f"naming          torchvision_{arch.split('_')[0]}" in report
    assert f"classes={classes}" in report and report_line in report and "unset weights   none" in report
    reference_class = {"lraspp": "LRASPPMobileNetV3Large", "deeplabv3": "DeepLabV3MobileNetV3Large"}[arch.split("_")[0]]
    assert_reported_parity(report, f"torchvision_{arch.split('_')[0]} {reference_class} (shipped reference)")
    assert "argmax agreement 100.000 %" in report

    model = kl.from_h5(out)
    expected = torch_forward(reference, images).transpose(0, 2, 3, 1)
    assert 0.9 < expected.std() < 1.1  # unit-scale logits: 1e-4 is the gate it should be
    diff, agreement = assert_segmentation_parity(np.asarray(model(images)), expected)
    # any other size, with the same model (its input is (None, None, 3))
    small = calibration_images(33, 48, seed=1)
    assert_segmentation_parity(np.asarray(model(small)), torch_forward(reference, small).transpose(0, 2, 3, 1))
    print(f"\n{arch} 97x131: max |Δlogit| {diff:.1e}, argmax {100 * agreement:.3f} %, "
          f"{time.perf_counter() - started:.1f} s")


def test_taps_are_torchvisions(lraspp_file):
    model = kl.from_h5(lraspp_file, input_shape=(97, 131, 3))
    taps = kl.from_h5(lraspp_file, input_shape=(97, 131, 3), feature_extractor=True)
    levels = {level: tuple(tensor.shape[1:]) for level, tensor in taps.output.items()}
    # features[4] (stride 8, the block entering it) and features[16] (stride 16: the last stage is dilated)
    assert levels == {"P3": (13, 17, 40), "P4": (7, 9, 960)}
    assert segmentation_taps() == {"P3": "expanded_conv_3_project_bn", "P4": "conv_1_activation"}
    # the head reads those layers
    assert model.get_layer("low_classifier").input is model.get_layer("expanded_conv_3_project_bn").output
    assert model.get_layer("lraspp_cbr").input is model.get_layer("conv_1_activation").output
    assert model.get_layer("expanded_conv_12_depthwise").dilation_rate == (2, 2)
    assert model.get_layer("expanded_conv_12_depthwise").strides == (1, 1)


def test_demo_writes_overlay(lraspp_file, tmp_path, capsys):
    from keras_lightnets.cli import demo

    photo = tmp_path / "cat.png"
    Image.fromarray(fd.photo("chelsea")[:57, :75]).save(photo)
    out = tmp_path / "overlay.png"
    assert demo.main([str(photo), "--weights", str(lraspp_file), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"overlay written to {out}"
    assert all(re.match(r"^\w+: \d+\.\d %$", line) for line in lines[:-1]) and len(lines) > 1
    image = Image.open(out)
    assert image.format == "PNG" and image.size == (75, 57)


def test_folder_prediction_and_finetuning_head(lraspp_file, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(fd.photo("coffee")[:57, :75]).save(folder / "coffee.png")
    assert predict.main([str(folder), "--weights", str(lraspp_file), "--out", str(tmp_path / "seg.jsonl")]) == 0
    (line,) = (tmp_path / "seg.jsonl").read_text().splitlines()
    mask = Image.open(tmp_path / json.loads(line)["mask"])
    assert mask.mode == "P" and mask.size == (75, 57)
    # fine-tuning to 3 classes replaces both of LR-ASPP's classifiers and keeps the rest
    model, _, replaced, backbone = ft.build_model(str(lraspp_file), classes=3, image_size=(64, 64))
    assert sorted(replaced) == ["high_classifier", "low_classifier"]
    assert "expanded_conv_14_project_bn" in backbone and "lraspp_cbr" not in backbone
    saved = ft.read_h5_weights(str(lraspp_file))
    np.testing.assert_array_equal(model.get_layer("lraspp_cbr").get_weights()[0], saved["lraspp_cbr"][0])
    assert model.output_shape == (None, 64, 64, 3)


def torchvision_segmentation(reference, photo):
    """The class map torchvision's pipeline gives at the photo's size, written
    from its code: `SemanticSegmentation(resize_size=520)` (`F.resize(img,
    [520])` on a PIL image: the shorter side to 520, the longer
    `int(520 * long / short)`, PIL bilinear; `pil_to_tensor`, /255, ImageNet
    mean/std), the model, and its logits interpolated to the photo
    (`F.interpolate(..., "bilinear", align_corners=False)`, as the model
    resizes its own). Returns `(class map, logits at the photo's size)`."""
    import torch.nn.functional as F

    width, height = photo.size
    short, long = min(width, height), max(width, height)
    new_long = int(520 * long / short)
    size = (520, new_long) if width <= height else (new_long, 520)
    pixels = torch.from_numpy(np.array(photo.resize(size, Image.Resampling.BILINEAR))).permute(2, 0, 1)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    x = ((pixels.float() / 255 - mean) / std)[None]
    with torch.no_grad():
        logits = F.interpolate(reference.eval()(x), size=(height, width), mode="bilinear", align_corners=False)
    return logits[0].argmax(0).numpy(), logits[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("height,width", [(150, 200), (300, 180)])
def test_segment_follows_torchvisions_transform(lraspp_converted, height, width):
    from keras_lightnets.runtime.segmentation import segment

    reference, out = lraspp_converted
    preprocessing = kl.weights_info(out)["preprocessing"]
    assert preprocessing["resize"] == 520 and preprocessing["size"] is None
    photo = Image.fromarray(fd.photo("coffee")[:height, :width])
    model, shapes = kl.from_h5(out), []

    def predict(batch):
        shapes.append(batch.shape)
        return np.asarray(model(batch))

    got = segment(photo, predict, preprocessing)
    expected, logits = torchvision_segmentation(reference, photo)
    short, long = min(height, width), max(height, width)
    side = int(520 * long / short)
    assert shapes == [(1, 520, side, 3) if height < width else (1, side, 520, 3)]
    assert got.shape == (height, width)
    top_two = np.sort(logits, axis=-1)[..., -2:]
    decided = top_two[..., 1] - top_two[..., 0] > 1e-3
    assert decided.mean() > 0.99 and len(np.unique(expected)) > 1
    assert (got == expected)[decided].mean() >= SEG_ARGMAX
