"""DeepLabV3+: resize layer, builder, conversion parity against the PyTorch sources."""

import os
import re
import time

import keras
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import keras_lightnets as kl
from keras_lightnets.conversion.references import (
    bubbliiiing,
    jfzhang95,
    jfzhang95_legacy,
    tonylins,
    vainf,
)
from keras_lightnets.layers.resize import BilinearResize
from tests.helpers import (
    REPO,
    assert_reported_parity,
    calibration_images,
    nchw,
    randomize_torch_model,
    run_cli,
    run_demo,
    unit_logits,
)

SEG_ATOL = 1e-3  # GUIDE.md section 6: segmentation
SEG_ARGMAX = 0.999


# --- align_corners resize -------------------------------------------------------------------


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize(
    "source,target", [((7, 9), (33, 20)), ((33, 65), (129, 129)), ((64, 48), (17, 31)), ((1, 1), (5, 4)), ((5, 5), (5, 5))]
)
def test_bilinear_resize_matches_torch_interpolate(source, target, align_corners):
    x = np.random.default_rng(0).normal(size=(2, *source, 3)).astype("float32")
    reference = np.zeros((1, *target, 1), "float32")
    got = np.asarray(BilinearResize(align_corners)([x, reference]))
    expected = F.interpolate(
        torch.from_numpy(nchw(x)), size=target, mode="bilinear", align_corners=align_corners
    ).numpy().transpose(0, 2, 3, 1)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-5


def test_bilinear_resize_serializes():
    layer = BilinearResize(align_corners=True, name="up")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(clone, BilinearResize) and clone.align_corners and clone.name == "up"


# --- builder --------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["mobilenetv2", "resnet50"])
def test_any_input_size_and_pyramid(backbone):
    model = kl.DeepLabV3Plus((None, None, 3), classes=5, backbone=backbone, head="jfzhang95")
    for shape in [(65, 97), (48, 48)]:
        assert model(np.zeros((1, *shape, 3), "float32")).shape == (1, *shape, 5)
    features = kl.DeepLabV3Plus((96, 128, 3), classes=5, backbone=backbone, output_stride=8,
                                feature_extractor=True, feature_keys=["P2", "P3", "P4", "P5"])
    levels = {k: tuple(v.shape[1:3]) for k, v in features.output.items()}
    # output stride 8: the levels past stride 8 dilate instead of shrinking
    assert levels == {"P2": (24, 32), "P3": (12, 16), "P4": (12, 16), "P5": (12, 16)}


# --- conversion parity ----------------------------------------------------------------------


RESNET_DEPTH = {"resnet50": 50, "resnet101": 101}
# how the conversion report names each naming's shipped PyTorch reference
SHIPPED_REFERENCES = {
    "vainf": "vainf DeepLabV3Plus (shipped reference)",
    "vainf_separable": "vainf_separable DeepLabV3Plus (shipped reference)",
    "jfzhang95": "jfzhang95 DeepLab (shipped reference)",
    "jfzhang95_legacy": "jfzhang95_legacy DeepLabV3Plus (shipped reference)",
}


REFERENCES = {
    "vainf": lambda backbone, os_: vainf.DeepLabV3Plus(backbone, 21, os_),
    # VainF's main.py with --separable_conv: convert_to_separable_conv(model.classifier)
    "vainf_separable": lambda backbone, os_: vainf.DeepLabV3Plus(backbone, 21, os_, separable=True),
    "jfzhang95": lambda backbone, os_: jfzhang95.DeepLab(
        "mobilenet" if backbone == "mobilenetv2" else "resnet", os_, 21, RESNET_DEPTH.get(backbone, 101)
    ),
    "jfzhang95_legacy": lambda backbone, os_: jfzhang95_legacy.DeepLabV3Plus(21, os_, RESNET_DEPTH[backbone]),
}
# (naming, backbone, output stride, input height, width); MobileNetV2 and ResNet-101 have
# 512x512 cases (output stride 16). The MobileNetV2 ones at output stride 8 run at 321:
# a 41x41 feature map, wider than the ASPP's largest rate (36), so that every tap of
# its dilated kernels reads the image. The ResNet-101 ones at stride 8 run smaller:
# the ASPP is the same module for both backbones, and at 161x193 (21x25) the
# backbone's own dilations (multi-grid 4, 8, 16) still read the image.
# VainF's ResNet at output stride 8 is its ResNet-50 case (the same code with
# fewer blocks); its ResNet-101 is checked at 16, full size.
PARITY_CASES = [
    pytest.param("vainf", "mobilenetv2", 16, 512, 512, id="vainf-mnv2-os16-512"),
    pytest.param("vainf", "mobilenetv2", 8, 321, 321, id="vainf-mnv2-os8-321"),
    pytest.param("vainf_separable", "mobilenetv2", 16, 161, 193, id="vainf-separable-mnv2-os16-161x193"),
    pytest.param("vainf_separable", "resnet50", 8, 129, 129, id="vainf-separable-r50-os8-129"),
    pytest.param("jfzhang95", "mobilenetv2", 16, 513, 513, id="jfz-mnv2-os16-513"),
    pytest.param("jfzhang95", "mobilenetv2", 8, 321, 321, marks=pytest.mark.slow, id="jfz-mnv2-os8-321"),
    pytest.param("vainf", "resnet101", 16, 512, 512, marks=pytest.mark.slow, id="vainf-r101-os16-512"),
    pytest.param("vainf", "resnet50", 8, 161, 161, id="vainf-r50-os8-161"),
    pytest.param("jfzhang95", "resnet101", 16, 161, 161, id="jfz-r101-os16-161"),
    pytest.param("jfzhang95", "resnet101", 8, 161, 193, marks=pytest.mark.slow, id="jfz-r101-os8-161x193"),
    pytest.param("jfzhang95_legacy", "resnet101", 8, 97, 129, id="seed003-r101-os8-97x129"),
    pytest.param("jfzhang95_legacy", "resnet101", 16, 129, 129, id="seed003-r101-os16-129"),
]
MEASURED = {}


# BatchNorm statistics are measured on images of at most this side: the
# calibration forward of a 512x512 ResNet-101 would cost as much as the test.
CALIBRATION_SIDE = 161


def keras_logits(model, images):
    """NCHW logits. Large images go one at a time through `predict`: a graph
    frees each activation after its last use, an eager Functional call keeps
    them all to the end (GBs for a ResNet-101 at 512x512). Small ones are
    called eagerly, which saves tracing the graph."""
    if images.shape[1] * images.shape[2] <= CALIBRATION_SIDE * 200:
        return np.asarray(model(images, training=False)).transpose(0, 3, 1, 2)
    return model.predict(images, batch_size=1, verbose=0).transpose(0, 3, 1, 2)


def convert_reference(naming, backbone, output_stride, height, width, tmp_path, capsys, wrap=None):
    torch.manual_seed(0)
    reference = REFERENCES[naming](backbone, output_stride)
    images = calibration_images(height, width)
    if backbone == "resnet101" and height * width > 300 * 300:
        images = images[:1]  # the photo alone: a 512x512 ResNet-101 forward is the costliest of the suite
    small = calibration_images(min(height, CALIBRATION_SIDE), min(width, CALIBRATION_SIDE))
    randomize_torch_model(reference, nchw(small), seed=0)
    expected = unit_logits(reference, images)
    checkpoint = tmp_path / "deeplab.pth"
    state = reference.state_dict()
    torch.save(wrap(state) if wrap else state, checkpoint)
    del state
    out = tmp_path / "deeplab.h5"
    status, report, err = run_cli(
        capsys, checkpoint, out, "--arch", f"deeplabv3plus_{backbone}", "--output-stride", output_stride
    )
    assert status == 0, err
    assert_reported_parity(report, SHIPPED_REFERENCES[naming])
    return reference, images, expected, out, report


@pytest.mark.parametrize("naming,backbone,output_stride,height,width", PARITY_CASES)
def test_conversion_reproduces_pytorch_deeplab(naming, backbone, output_stride, height, width, tmp_path, capsys):
    started = time.perf_counter()
    reference, images, expected, out, report = convert_reference(
        naming, backbone, output_stride, height, width, tmp_path, capsys
    )
    del reference  # freed before Keras' model is built
    assert f"naming          {naming}" in report
    assert f"output_stride={output_stride}" in report
    assert "unused tensors  none" in report and "unset weights   none" in report

    got = keras_logits(kl.from_h5(out), images)
    assert got.shape == expected.shape == (len(images), 21, height, width)
    diff = np.abs(got - expected).max()
    agreement = (got.argmax(1) == expected.argmax(1)).mean()
    MEASURED[(naming, backbone, output_stride, height, width)] = (diff, agreement, time.perf_counter() - started)
    print(f"\nparity {naming} {backbone} os{output_stride} {height}x{width}: max|Δ| {diff:.2e}, "
          f"argmax {100 * agreement:.3f} %, logit std {expected.std():.2f}")
    assert 0.9 < expected.std() < 1.1  # unit-scale logits: 1e-3 is the gate it should be
    assert diff <= SEG_ATOL, f"max |Δlogit| = {diff:.2e}"
    assert agreement >= SEG_ARGMAX, f"argmax agreement {agreement:.5f}"


def test_jfzhang95_aliases_and_numpy_scalars(tmp_path, capsys):
    """jfzhang95's MobileNetV2 lists each backbone tensor under two names; its
    checkpoints carry the score as numpy.float64."""
    reference, images, expected, out, report = convert_reference(
        "jfzhang95", "mobilenetv2", 16, 97, 97, tmp_path, capsys,
        wrap=lambda sd: {"state_dict": sd, "best_pred": np.float64(0.71), "epoch": 30},
    )
    state = reference.state_dict()
    assert "backbone.low_level_features.1.conv.0.weight" in state
    assert "backbone.high_level_features.17.conv.0.weight" in state
    assert "unwrapped {'state_dict'}" in report and "unused tensors  none" in report
    got = np.asarray(kl.from_h5(out)(images)).transpose(0, 3, 1, 2)
    assert np.abs(got - expected).max() <= SEG_ATOL


def test_output_stride_option(tmp_path, capsys):
    torch.save(vainf.DeepLabV3Plus("mobilenetv2", 4, 16).state_dict(), tmp_path / "v.pth")
    status, report, _ = run_cli(capsys, tmp_path / "v.pth", tmp_path / "v.h5", "--arch", "deeplabv3plus_mobilenetv2")
    assert status == 0 and "output_stride=16" in report and "classes=4" in report
    status, _, err = run_cli(capsys, tmp_path / "v.pth", tmp_path / "w.h5", "--arch", "mobilenet_v2", "--output-stride", "8")
    assert status == 2 and "--output-stride applies to DeepLab archs" in err
    status, _, err = run_cli(capsys, tmp_path / "v.pth", tmp_path / "x.h5", "--arch", "deeplabv3plus_resnet101")
    assert status == 2 and err.startswith("error: ")


# --- segmentation demo ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def deeplab_weights(tmp_path_factory):
    from keras_lightnets import convert_checkpoint

    folder = tmp_path_factory.mktemp("demo")
    torch.manual_seed(0)
    reference = vainf.DeepLabV3Plus("mobilenetv2", 21, 16)
    randomize_torch_model(reference, nchw(calibration_images(96, 96)), seed=0)
    torch.save({"model_state": reference.state_dict(), "best_score": np.float64(0.5)}, folder / "vainf.pth")
    convert_checkpoint(folder / "vainf.pth", folder / "vainf.h5", "deeplabv3plus_mobilenetv2")
    return folder / "vainf.h5"


def test_demo_writes_overlay_with_legend(deeplab_weights, tmp_path):
    from keras_lightnets.labels import VOC_CLASSES, voc_palette

    out = tmp_path / "overlay.png"
    cat = os.path.join(REPO, "examples", "cat.jpg")
    result = run_demo(cat, "--model", "deeplabv3plus_mobilenetv2", "--weights", deeplab_weights, "--out", out)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == f"overlay written to {out}"
    shares = [re.match(r"^(\w+): (\d+\.\d) %$", line) for line in lines[:-1]]
    assert shares and all(shares), lines
    assert all(m.group(1) in VOC_CLASSES for m in shares)
    assert abs(sum(float(m.group(2)) for m in shares) - 100) < 0.1 * len(shares)
    image = Image.open(out)
    assert image.format == "PNG" and image.size == Image.open(cat).size
    # the legend's first swatch has the colour of the first class present (ids ascending)
    first = min(VOC_CLASSES.index(m.group(1)) for m in shares)
    assert tuple(np.asarray(image.convert("RGB"))[8, 8]) == tuple(voc_palette(21)[first])


@pytest.mark.parametrize(
    "make_args",
    [
        lambda t, w: [os.path.join(REPO, "examples", "cat.jpg"), "--weights", w, "--out", t / "missing" / "o.png"],
        lambda t, w: [(t / "notes.jpg").write_text("not a photo") and t / "notes.jpg", "--weights", w, "--out", t / "o.png"],
        lambda t, w: [os.path.join(REPO, "examples", "cat.jpg"), "--model", "mobilenet_v2", "--weights", w, "--out", t / "o.png"],
        lambda t, w: [os.path.join(REPO, "examples", "cat.jpg"), "--weights", w, "--out", t],
    ],
    ids=["out-in-missing-folder", "non-image", "wrong-model", "out-is-directory"],
)
def test_demo_bad_input_exits_2(make_args, deeplab_weights, tmp_path):

    result = run_demo(*make_args(tmp_path, deeplab_weights))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("output_stride", [16, 8])
def test_seed000_backbone_checkpoint(output_stride, tmp_path, capsys):
    """A seed 000 MobileNetV2 checkpoint becomes the backbone of its DeepLabV3+."""
    import copy

    torch.manual_seed(1)
    classifier = tonylins.MobileNetV2()
    images = calibration_images(97, 129)
    randomize_torch_model(classifier, nchw(images), seed=1)
    torch.save(classifier.state_dict(), tmp_path / "seed.pth")
    args = [tmp_path / "seed.pth", tmp_path / "b.h5", "--arch", "deeplabv3plus_mobilenetv2",
            "--output-stride", output_stride]
    status, _, err = run_cli(capsys, *args)
    assert status == 2 and "--num-classes" in err
    status, _, err = run_cli(capsys, *args, "--num-classes", "21")
    assert status == 2 and "7 checkpoint tensors unused" in err and "--allow-partial" in err
    status, report, err = run_cli(capsys, *args, "--num-classes", "21", "--allow-partial")
    assert status == 0, err
    assert "naming          tonylins" in report and "dilation_schedule='nostride_dilate'" in report
    assert "unused tensors  7 (classifier.1.bias, classifier.1.weight, features.18.0.weight" in report
    assert "unset weights   17 (" in report
    assert "parity          not measured: 17 Keras layers hold no checkpoint weights (--allow-partial)" in report

    reference = bubbliiiing.MobileNetV2(output_stride, copy.deepcopy(classifier)).eval()
    with torch.no_grad():
        low, high = (t.numpy().transpose(0, 2, 3, 1) for t in reference(torch.from_numpy(nchw(images))))
    taps = kl.from_h5(tmp_path / "b.h5", input_shape=(97, 129, 3), feature_extractor=True, feature_keys=["P2", "P5"])
    got_low, got_high = (np.asarray(t) for t in taps(images).values())
    assert got_low.shape == low.shape and got_high.shape == high.shape
    assert np.abs(got_low - low).max() <= SEG_ATOL and np.abs(got_high - high).max() <= SEG_ATOL
    assert high.std() > 0.3  # features of real scale, not washed out
