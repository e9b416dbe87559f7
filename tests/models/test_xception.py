"""Seed 000's whole DeepLabV3+ (bubbliiiing, MobileNetV2 and Xception) and jfzhang95's
Aligned Xception-65: conversion parity against PyTorch references, bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

import keras_lightnets as kl
from keras_lightnets.conversion.references import bubbliiiing, jfzhang95_xception
from keras_lightnets.models.tables import FEATURE_TAPS
from tests.helpers import (
    assert_reported_parity,
    nchw,
    photo,
    randomize_torch_model,
    run_cli,
    torch_forward,
)

SEG_ATOL = 1e-4  # GUIDE.md section 6: segmentation, unit-spread logits
SEG_ARGMAX = 0.9999
# Two logits that each stay within SEG_ATOL of the reference can swap places
# only where the reference's top two are closer than this: such near-ties are
# not decided by the gate (random unit-spread maps upsampled x4 have ~1e-4 of them).
TIE_MARGIN = 2 * SEG_ATOL

REFERENCES = {
    ("bubbliiiing", "mobilenetv2"): lambda os_: bubbliiiing.DeepLab(21, "mobilenet", os_),
    ("bubbliiiing", "xception"): lambda os_: bubbliiiing.DeepLab(21, "xception", os_),
    ("jfzhang95", "xception"): lambda os_: jfzhang95_xception.DeepLab(os_, 21),
}
# each source's input scaling: bubbliiiing /255, jfzhang95 ImageNet mean/std
INPUT_MODES = {"bubbliiiing": "unit", "jfzhang95": "torch"}
# (naming, backbone, output stride, height, width); the quick subset has one case per backbone
PARITY_CASES = [
    pytest.param("bubbliiiing", "mobilenetv2", 16, 129, 97, id="bubbliiiing-mnv2-os16-129x97"),
    pytest.param("bubbliiiing", "mobilenetv2", 8, 97, 161, id="bubbliiiing-mnv2-os8-97x161"),
    pytest.param("bubbliiiing", "xception", 16, 65, 97, id="bubbliiiing-xception-os16-65x97"),
    pytest.param("bubbliiiing", "xception", 8, 97, 65, marks=pytest.mark.slow, id="bubbliiiing-xception-os8-97x65"),
    pytest.param("jfzhang95", "xception", 8, 65, 97, id="jfz-xception-os8-65x97"),
    pytest.param("jfzhang95", "xception", 16, 129, 97, marks=pytest.mark.slow, id="jfz-xception-os16-129x97"),
]


def calibration_images(height, width, mode, seed=0):
    """A real photo and smooth noise at (height, width), scaled as the source scales its input."""
    cat = Image.fromarray(photo("chelsea", 256).astype("uint8")).resize((width, height), Image.Resampling.BILINEAR)
    noise = np.random.default_rng(seed).uniform(0, 255, (height // 8 + 1, width // 8 + 1, 3)).astype("uint8")
    noise = Image.fromarray(noise).resize((width, height), Image.Resampling.BICUBIC)
    images = np.stack([np.asarray(cat), np.asarray(noise)]).astype("float32")
    return kl.preprocess_input(images, mode)


@torch.no_grad()
def unit_logits(reference, images):
    """Scales the classifier (the last conv) so the logits have unit spread: the
    residual stream of Xception's 16 middle blocks grows, the BN layers do not
    bring it back."""
    classifier = [m for m in reference.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    scale = float(torch_forward(reference, images).std())
    classifier.weight /= scale
    classifier.bias /= scale


def make_reference(naming, backbone, output_stride, height, width, seed=0):
    """A reference with random weights, data-calibrated BN statistics, unit-spread logits."""
    torch.manual_seed(seed)
    reference = REFERENCES[(naming, backbone)](output_stride)
    images = calibration_images(height, width, INPUT_MODES[naming], seed)
    randomize_torch_model(reference, nchw(images), seed=seed)
    unit_logits(reference, images)
    return reference, images


def convert(capsys, checkpoint, out, backbone, output_stride, *extra):
    return run_cli(
        capsys, checkpoint, out, "--arch", f"deeplabv3plus_{backbone}", "--output-stride", output_stride, *extra
    )


@pytest.mark.parametrize("naming,backbone,output_stride,height,width", PARITY_CASES)
def test_conversion_reproduces_pytorch(naming, backbone, output_stride, height, width, tmp_path, capsys):
    reference, images = make_reference(naming, backbone, output_stride, height, width)
    state = reference.state_dict()
    # bubbliiiing saves plain state_dicts; jfzhang95 wraps them with its training state
    torch.save({"state_dict": state, "epoch": 50} if naming == "jfzhang95" else state, tmp_path / "deeplab.pth")
    status, report, err = convert(capsys, tmp_path / "deeplab.pth", tmp_path / "deeplab.h5", backbone, output_stride)
    assert status == 0, err
    assert f"naming          {naming}" in report  # detected from the keys
    assert ("unwrapped {'state_dict'}" in report) == (naming == "jfzhang95")
    assert f"output_stride={output_stride}" in report and f"head='{naming}'" in report
    assert "unused tensors  none" in report and "unset weights   none" in report
    assert_reported_parity(report, f"{naming} DeepLab (shipped reference)")

    expected = torch_forward(reference, images)
    model = kl.from_h5(tmp_path / "deeplab.h5")
    got = np.asarray(model(images)).transpose(0, 3, 1, 2)
    assert got.shape == expected.shape == (2, 21, height, width)
    diff = np.abs(got - expected).max()
    same = got.argmax(1) == expected.argmax(1)
    top_two = np.sort(expected, axis=1)[:, -2:]
    decided = top_two[:, 1] - top_two[:, 0] > TIE_MARGIN
    agreement, decided_agreement = same.mean(), same[decided].mean()
    print(f"\nparity {naming} {backbone} os{output_stride} {height}x{width}: max|Δ| {diff:.2e}, "
          f"argmax {100 * agreement:.3f} % ({(~same).sum()} of {same.size} pixels differ; "
          f"{100 * decided_agreement:.3f} % where the top-two margin > {TIE_MARGIN:g}), "
          f"logit std {expected.std():.2f}")
    assert 0.9 < expected.std() < 1.1  # unit-scale logits: the gate means what it says
    assert diff <= SEG_ATOL, f"max |Δlogit| = {diff:.2e}"
    assert decided_agreement >= SEG_ARGMAX, f"argmax agreement {decided_agreement:.5f} on decided pixels"
    assert agreement >= 0.999, f"argmax agreement {agreement:.5f}"
    # the record keeps the source's own eval transform
    preprocessing = kl.weights_info(tmp_path / "deeplab.h5")["preprocessing"]
    assert preprocessing["mode"] == INPUT_MODES[naming]
    assert (preprocessing.get("resize") == "letterbox") == (naming == "bubbliiiing")


@pytest.mark.parametrize(
    "variant,output_stride,expected",
    [
        ("bubbliiiing", 16, {"P2": (17, 25, 256), "P3": (9, 13, 256), "P4": (5, 7, 728), "P5": (5, 7, 2048)}),
        ("jfzhang95", 8, {"P2": (17, 25, 128), "P3": (9, 13, 256), "P4": (9, 13, 728), "P5": (9, 13, 2048)}),
    ],
)
def test_xception_pyramid(variant, output_stride, expected):
    """P2 is the decoder's low-level input: block2's `hook_layer` (bubbliiiing) or
    relu(block1) (jfzhang95); at output stride 8 the levels past stride 8 dilate."""
    model = kl.DeepLabV3Plus((65, 97, 3), classes=3, backbone="xception", head=variant, output_stride=output_stride)
    features = kl.DeepLabV3Plus((65, 97, 3), classes=3, backbone="xception", head=variant,
                                output_stride=output_stride, feature_extractor=True)
    assert {k: tuple(v.shape[1:]) for k, v in features.output.items() if k != "P1"} == expected
    # the decoder reads P2: the same layer's output
    assert model.get_layer("decoder_low_conv").input.shape[-1] == expected["P2"][-1]
    low = FEATURE_TAPS[f"xception_{variant}"]["P2"]
    assert model.get_layer("decoder_low_conv").input is model.get_layer(low).output


def test_vainf_head_has_no_xception():
    with pytest.raises(ValueError, match="no Xception backbone"):
        kl.DeepLabV3Plus((64, 64, 3), backbone="xception", head="vainf")


# --- bad input ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Untrained state_dicts of the three systems (the shapes are what matters here)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for (naming, backbone), factory in REFERENCES.items():
        torch.manual_seed(0)
        paths[(naming, backbone)] = folder / f"{naming}_{backbone}.pth"
        torch.save(factory(16).state_dict(), paths[(naming, backbone)])
    return paths


@pytest.mark.parametrize(
    "system,arch,output_stride,expected",
    [
        (("bubbliiiing", "mobilenetv2"), "xception", 8, "the checkpoint's backbone is mobilenetv2, not xception"),
        (("bubbliiiing", "xception"), "mobilenetv2", 16, "the checkpoint's backbone is xception, not mobilenetv2"),
        (("jfzhang95", "xception"), "mobilenetv2", 8, "the checkpoint's backbone is xception, not mobilenetv2"),
        (("jfzhang95", "xception"), "resnet101", 16, "the checkpoint's backbone is xception, not resnet101"),
        (("bubbliiiing", "mobilenetv2"), "resnet50", 8, "match no deeplabv3plus_resnet50 naming"),
    ],
    ids=["bubbliiiing-mnv2-as-xception", "bubbliiiing-xception-as-mnv2", "jfz-xception-as-mnv2",
         "jfz-xception-as-r101", "bubbliiiing-as-r50"],
)
def test_wrong_arch_exits_2_and_writes_nothing(checkpoints, system, arch, output_stride, expected, tmp_path, capsys):
    """The output stride changes no weight shape (only dilations), so a wrong
    one converts; a wrong backbone is named in one line."""
    status, out, err = convert(capsys, checkpoints[system], tmp_path / "x.h5", arch, output_stride)
    assert status == 2, err
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert not list(tmp_path.iterdir())


def test_missing_and_misshapen_tensors_exit_2(checkpoints, tmp_path, capsys):
    state = torch.load(checkpoints[("bubbliiiing", "mobilenetv2")])
    del state["backbone.features.7.conv.3.weight"]
    torch.save(state, tmp_path / "missing.pth")
    status, _, err = convert(capsys, tmp_path / "missing.pth", tmp_path / "x.h5", "mobilenetv2", 8)
    assert status == 2 and "'backbone.features.7.conv.3.weight'" in err and err.count("\n") == 1, err

    state = torch.load(checkpoints[("jfzhang95", "xception")])
    state["backbone.block7.rep.4.pointwise.weight"] = torch.zeros(728, 700, 1, 1)
    torch.save(state, tmp_path / "misshapen.pth")
    status, _, err = convert(capsys, tmp_path / "misshapen.pth", tmp_path / "x.h5", "xception", 16)
    assert status == 2 and "backbone.block7.rep.4" in err and "block7_sepconv2_pointwise" in err, err
    assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["misshapen.pth", "missing.pth"]


# --- demo: bubbliiiing's prediction path ----------------------------------------------------


def detect_image_class_map(reference, path, size=512):
    """bubbliiiing's `detect_image`: letterbox (bicubic, grey 128), /255, softmax,
    crop the grey bars away, bilinear resize to the photo (cv2 INTER_LINEAR), argmax."""
    import torch.nn.functional as F

    image = Image.open(path).convert("RGB")
    iw, ih = image.size
    scale = min(size / iw, size / ih)
    nw, nh = int(iw * scale), int(ih * scale)
    boxed = Image.new("RGB", (size, size), (128, 128, 128))
    boxed.paste(image.resize((nw, nh), Image.BICUBIC), ((size - nw) // 2, (size - nh) // 2))
    x = torch.from_numpy(np.asarray(boxed, "float32").transpose(2, 0, 1)[None] / 255.0)
    with torch.no_grad():
        pr = F.softmax(reference.eval()(x)[0].permute(1, 2, 0), dim=-1)
    top, left = (size - nh) // 2, (size - nw) // 2
    pr = pr[top : top + nh, left : left + nw].permute(2, 0, 1)[None]
    pr = F.interpolate(pr, size=(ih, iw), mode="bilinear", align_corners=False)
    return pr[0].argmax(0).numpy()


def test_demo_follows_detect_image(tmp_path, capsys):
    from keras_lightnets.cli import demo
    from keras_lightnets.preprocessing.image import read_image
    from keras_lightnets.runtime.predictor import Predictor
    from keras_lightnets.runtime.segmentation import segment

    reference, _ = make_reference("bubbliiiing", "mobilenetv2", 16, 129, 97, seed=3)
    torch.save(reference.state_dict(), tmp_path / "deeplab_mobilenetv2.pth")
    status, _, err = run_cli(capsys, tmp_path / "deeplab_mobilenetv2.pth", tmp_path / "b.h5",
                             "--arch", "deeplabv3plus_mobilenetv2")
    assert status == 0, err
    path = tmp_path / "chelsea.png"
    Image.fromarray(photo("chelsea", 256).astype("uint8")).resize((301, 187)).save(path)  # wide, odd

    model, record = demo.load_model(None, str(tmp_path / "b.h5"))
    preprocessing = record["preprocessing"]
    assert preprocessing == {"mode": "unit", "size": 512, "resize": "letterbox", "resample": "bicubic", "fill": 128}
    class_map = segment(read_image(path), Predictor(model), preprocessing)
    expected = detect_image_class_map(reference, path)
    assert class_map.shape == expected.shape == (187, 301)
    agreement = (class_map == expected).mean()
    print(f"\ndemo vs detect_image: argmax agreement {100 * agreement:.3f} %, classes {np.unique(expected)}")
    assert len(np.unique(expected)) > 1  # a map with structure, not one class
    assert agreement >= 0.999, agreement

    out = tmp_path / "overlay.png"
    assert demo.main([str(path), "--weights", str(tmp_path / "b.h5"), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"overlay written to {out}"
    assert Image.open(out).size == (301, 187)
