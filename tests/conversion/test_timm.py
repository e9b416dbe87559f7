"""timm's MobileNet v1/V2, EfficientNet-Lite and MobileNetV3: checkpoints made with the
shipped plain-torch copy of timm's networks, converted by the command line and checked
against it; timm's state_dict shapes and eval transform."""

import hashlib

import numpy as np
import pytest
from PIL import Image

import keras_lightnets as kl
from keras_lightnets import catalog, registry
from keras_lightnets.conversion import pipeline
from keras_lightnets.conversion.namings import NAMINGS, timm_models
from keras_lightnets.conversion.references.timm import TimmMobileNet
from keras_lightnets.preprocessing import preprocess_input
from keras_lightnets.preprocessing.image import load_for
from tests import timm_transforms
from tests.helpers import (
    nchw,
    photo,
    randomize_torch_model,
    reference_images,
    run_cli,
    top5,
    torch_forward,
)

# timm 1.0.31's `timm.create_model(name, pretrained=False, num_classes=n)`: the
# first 16 hex digits of the sha256 of its sorted "key:shape" lines (no
# num_batches_tracked), for n = 1000 and 7.
TIMM_STATE_DIGESTS = {
    "mobilenetv1_100": ("e872ccc51f8675b4", "6e8fde13ef0f3984"),
    "mobilenetv1_100h": ("61808d3e9a77b1f0", "4c617fb6c00a1ebe"),
    "mobilenetv1_125": ("1302c499995f7f6e", "681e3135e1259d77"),
    "mobilenetv2_035": ("7ecf48d2e3b33c32", "41d286cd09cd9d8d"),
    "mobilenetv2_050": ("3b62a784efd366cf", "774c1a35a5beedf2"),
    "mobilenetv2_075": ("c83731e3905746e0", "f11d4fd5dec849e2"),
    "mobilenetv2_100": ("1862dbc8fb2bc6eb", "c9147b40f359e5d0"),
    "mobilenetv2_140": ("7f2ea88042923503", "25ce1be5a1839c15"),
    "mobilenetv2_110d": ("6bb1f21636af61b6", "6f27e5b5ac2cf574"),
    "mobilenetv2_120d": ("373322bf77f23be1", "e3d761b1690edc29"),
    "efficientnet_lite0": ("d724c58dc779b18e", "af788b7840b7e4a3"),
    "efficientnet_lite1": ("884d808023e57896", "6e945219de636219"),
    "efficientnet_lite2": ("8b3b159065223cb1", "54a5a8d7b9d0c13b"),
    "efficientnet_lite3": ("9e8fcc4c2ecf5d88", "bdcac215dc390c94"),
    "efficientnet_lite4": ("4ff0735cfe9461be", "261dfe8342942b93"),
    "tf_efficientnet_lite0": ("d724c58dc779b18e", "af788b7840b7e4a3"),
    "tf_efficientnet_lite1": ("884d808023e57896", "6e945219de636219"),
    "tf_efficientnet_lite2": ("8b3b159065223cb1", "54a5a8d7b9d0c13b"),
    "tf_efficientnet_lite3": ("9e8fcc4c2ecf5d88", "bdcac215dc390c94"),
    "tf_efficientnet_lite4": ("4ff0735cfe9461be", "261dfe8342942b93"),
    "mobilenetv3_large_075": ("58be968ae49b361e", "638a0d3f503bb80e"),
    "mobilenetv3_large_100": ("2a2b3dbc41471024", "dde6534aa79b8879"),
    "mobilenetv3_small_050": ("2abe8da254487125", "c12b8b7dda6922f1"),
    "mobilenetv3_small_075": ("7f99501f59c6cbb5", "326812b287c29207"),
    "mobilenetv3_small_100": ("42c2410616048457", "9572259bf6d7700b"),
    "tf_mobilenetv3_large_075": ("58be968ae49b361e", "638a0d3f503bb80e"),
    "tf_mobilenetv3_large_100": ("2a2b3dbc41471024", "dde6534aa79b8879"),
    "tf_mobilenetv3_large_minimal_100": ("fbc43e42f35c5347", "66cdc41c3538375d"),
    "tf_mobilenetv3_small_075": ("7f99501f59c6cbb5", "326812b287c29207"),
    "tf_mobilenetv3_small_100": ("42c2410616048457", "9572259bf6d7700b"),
    "tf_mobilenetv3_small_minimal_100": ("e81b72ecbb905be0", "8418d2d79a025724"),
}
PROBABILITY_GATE = 1e-5
ODD_SIZE = (113, 100)  # stride-2 inputs of both parities: TF "same" pads 1/1 and 0/1 (k3), 2/2 and 1/2 (k5)


def _digest(shapes):
    return hashlib.sha256("\n".join(sorted(f"{k}:{v}" for k, v in shapes.items())).encode()).hexdigest()[:16]


def test_state_dict_shapes_are_timms():
    assert set(TIMM_STATE_DIGESTS) == set(timm_models.TIMM_MODELS)
    for name, digests in TIMM_STATE_DIGESTS.items():
        assert (_digest(timm_models.state_shapes(name, 1000)), _digest(timm_models.state_shapes(name, 7))) == digests


def _naming(name):
    config = timm_models.TIMM_MODELS[name]
    return NAMINGS[f"{config.family}/{'timm_tf' if config.tf else 'timm'}"]


QUICK_MAPPINGS = {"mobilenetv1_125", "mobilenetv2_110d", "tf_efficientnet_lite4", "mobilenetv3_small_050"}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=() if n in QUICK_MAPPINGS else pytest.mark.slow) for n in timm_models.supported_models()],
)
def test_every_timm_model_maps_onto_its_keras_arch(name):
    """The naming reads timm_arch's arguments from the shapes, and every
    tensor fills exactly one Keras weight of the same shape."""
    tensors = {k: np.zeros(shape, "float32") for k, shape in timm_models.state_shapes(name, 7).items()}
    keys = set(tensors)
    arch, kwargs, preprocessing = timm_models.timm_arch(name, 7)
    spec, naming = registry.get_spec(arch), _naming(name)
    assert naming.detect(keys)
    planned = pipeline.plan_builder_kwargs(spec, naming, tensors)
    assert planned == {**spec.builder_kwargs, **kwargs}
    assert timm_models.timm_name(arch, planned) == name
    model = pipeline.build_model(catalog.get_builder(arch), planned)
    mapped, used = pipeline.map_weights(model, tensors, naming.layer_map(model, keys))
    assert pipeline.completeness(model, keys, used, mapped, [], allow_partial=False) == ([], [])
    assert pipeline.record_preprocessing(spec, planned, naming) == preprocessing


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _assert_gates(keras_logits, torch_logits):
    assert torch_logits.std() > 0.3  # logits that move: the gate is a real test
    delta = np.abs(_softmax(keras_logits) - _softmax(torch_logits)).max()
    assert delta <= PROBABILITY_GATE, f"max |Δprobability| {delta:.2e}"
    np.testing.assert_array_equal(top5(keras_logits), top5(torch_logits))


def _convert(name, classes, tmp_path, capsys, source=None):
    """A random timm-shaped checkpoint (unit-spread activations), converted by
    the command line; returns `(reference, weights file, images, arch)`."""
    arch, _, preprocessing = timm_models.timm_arch(name, classes)
    images = reference_images(preprocessing["size"])
    reference = randomize_torch_model(TimmMobileNet(name, classes), nchw(images), seed=len(name))
    import torch

    torch.save(reference.state_dict(), tmp_path / f"{name}.pth")
    out = tmp_path / f"{name}.h5"
    status, report, err = run_cli(capsys, tmp_path / f"{name}.pth", out, "--arch", arch,
                                  *(("--source", source) if source else ()))
    assert status == 0, err
    assert "top-5 identical" in report  # the converter's own parity check ran
    assert kl.weights_info(out)["preprocessing"] == preprocessing
    return reference, out, images, arch


PARITY_CASES = [
    # (timm model, classes, --source, quick): every head, width and padding path once
    pytest.param("mobilenetv1_100h", 7, None, id="v1-head-conv-7-classes"),
    pytest.param("mobilenetv1_125", 1000, None, id="v1-width-1.25", marks=pytest.mark.slow),
    pytest.param("mobilenetv2_120d", 1000, None, id="v2-d-variant"),
    pytest.param("mobilenetv2_140", 1000, None, id="v2-width-1.4", marks=pytest.mark.slow),
    pytest.param("mobilenetv3_large_100", 1000, "timm", id="v3-large", marks=pytest.mark.slow),
    pytest.param("mobilenetv3_small_050", 7, None, id="v3-small-0.5-7-classes", marks=pytest.mark.slow),
    pytest.param("tf_mobilenetv3_small_minimal_100", 1000, None, id="v3-tf-minimal"),
    pytest.param("tf_mobilenetv3_large_075", 1000, "timm_tf", id="v3-tf-large-0.75", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name, classes, source", PARITY_CASES)
def test_random_timm_checkpoint_through_cli(name, classes, source, tmp_path, capsys):
    reference, out, images, _ = _convert(name, classes, tmp_path, capsys, source)
    model = kl.from_h5(out, classifier_activation=None)
    _assert_gates(np.asarray(model(images)), torch_forward(reference, images))


@pytest.mark.parametrize(
    "name", ["tf_efficientnet_lite0", pytest.param("efficientnet_lite0", marks=pytest.mark.slow)]
)
def test_efficientnet_lite_padding_at_an_odd_size(name, tmp_path, capsys):
    """timm's `efficientnet_lite0` and `tf_efficientnet_lite0` share every key
    and shape: without --source nothing is written; with it, each padding
    holds at a size whose stride-2 inputs are odd and even."""
    tf = name.startswith("tf_")
    arch = "efficientnet_lite0"
    tensors = {k: np.zeros(s, "float32") for k, s in timm_models.state_shapes(name).items()}
    np.savez(tmp_path / "ambiguous.npz", **tensors)
    status, _, err = run_cli(capsys, tmp_path / "ambiguous.npz", tmp_path / "x.h5", "--arch", arch)
    assert status == 2 and "choose one with --source: timm:" in err and "timm_tf:" in err
    assert not (tmp_path / "x.h5").exists()

    reference, out, _, _ = _convert(name, 1000, tmp_path, capsys, "timm_tf" if tf else "timm")
    rng = np.random.default_rng(0)
    images = np.stack([photo("chelsea", ODD_SIZE[0])[:, : ODD_SIZE[1]], photo("coffee", ODD_SIZE[0])[:, : ODD_SIZE[1]]])
    images = np.concatenate([kl.preprocess_input(images, "tf"), rng.uniform(-1, 1, (1, *ODD_SIZE, 3))]).astype("float32")
    model = kl.from_h5(out, classifier_activation=None, input_shape=(*ODD_SIZE, 3))
    _assert_gates(np.asarray(model(images)), torch_forward(reference, images))


def test_a_checkpoint_of_another_size_names_its_arch(tmp_path, capsys):
    tensors = {k: np.zeros(s, "float32") for k, s in timm_models.state_shapes("tf_efficientnet_lite2", 10).items()}
    np.savez(tmp_path / "lite2.npz", **tensors)
    status, _, err = run_cli(capsys, tmp_path / "lite2.npz", tmp_path / "x.h5", "--arch", "efficientnet_lite0",
                             "--source", "timm_tf")
    assert status == 2 and "timm's tf_efficientnet_lite2: convert it with --arch efficientnet_lite2" in err
    assert not (tmp_path / "x.h5").exists()


# ---------------------------------------------------------------- pretrained_cfg → eval transform

EVAL_CFGS = [
    *{timm_models.default_pretrained_cfg(n)["crop_pct"]: timm_models.default_pretrained_cfg(n)
      for n in timm_models.supported_models()}.values(),  # every crop_pct (size, interpolation, mean/std with it)
    {"input_size": [3, 240, 240], "interpolation": "nearest", "crop_pct": 1.0, "crop_mode": "squash"},
    {"input_size": [3, 192, 192], "interpolation": "bilinear", "crop_pct": 0.95, "mean": [0.4, 0.45, 0.5],
     "std": [0.2, 0.25, 0.3]},
    {},  # timm's defaults
]


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    import skimage.data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("chelsea", "coffee"):
        Image.fromarray(getattr(skimage.data, name)()).save(folder / f"{name}.png")
    return sorted(folder.iterdir())


@pytest.mark.parametrize("cfg", EVAL_CFGS, ids=lambda cfg: f"{cfg.get('input_size', ['-'])[-1]}-{cfg.get('crop_pct')}")
def test_pretrained_cfg_reads_photos_as_timm_does(cfg, photo_files):
    preprocessing = timm_models.preprocessing_from_timm_cfg(cfg)
    for path in photo_files:
        with Image.open(path) as img:
            expected = timm_transforms.eval_tensor(img, cfg).numpy().transpose(1, 2, 0)
        pixels = load_for(path, preprocessing)
        got = preprocess_input(pixels, preprocessing)
        config = timm_transforms.resolve_data_config(cfg)
        grey_levels = np.abs(got - expected) * np.asarray(config["std"]) * 255
        assert got.shape == expected.shape and grey_levels.max() <= 1.0


def test_pretrained_cfg_modes():
    imagenet = timm_models.default_pretrained_cfg("mobilenetv2_100")
    assert timm_models.preprocessing_from_timm_cfg(imagenet) == {
        "mode": "torch", "size": 224, "resize": 256, "resample": "bicubic"}
    assert timm_models.preprocessing_from_timm_cfg(timm_models.default_pretrained_cfg("tf_efficientnet_lite4")) == {
        "mode": "tf", "size": 380, "resize": 413, "resample": "bilinear"}
    unit = timm_models.preprocessing_from_timm_cfg({**imagenet, "mean": [0, 0, 0], "std": [1, 1, 1]})
    assert unit["mode"] == "unit"
    custom = timm_models.preprocessing_from_timm_cfg({**imagenet, "mean": [0.4, 0.45, 0.5], "std": [0.2, 0.25, 0.3]})
    assert custom["mode"] == "meanstd" and custom["mean"] == [0.4, 0.45, 0.5] and custom["std"] == [0.2, 0.25, 0.3]
    images = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3)).astype("uint8")
    expected = (images / 255.0 - np.array([0.4, 0.45, 0.5])) / np.array([0.2, 0.25, 0.3])
    np.testing.assert_allclose(preprocess_input(images, custom), expected, atol=1e-5)


@pytest.mark.parametrize("cfg, message", [
    ({"crop_mode": "border"}, "crop_mode 'border'"),
    ({"crop_mode": "squash", "crop_pct": 0.875}, "crop_mode 'squash'"),
    ({"input_size": [3, 224, 192]}, "only square RGB"),
    ({"input_size": [1, 224, 224]}, "only square RGB"),
    ({"input_size": "224"}, "input_size must be"),
    ({"interpolation": "lanczos"}, "interpolation 'lanczos'"),
    ({"crop_pct": 1.5}, "crop_pct must be"),
    ({"mean": [0.5, 0.5]}, "mean must be"),
    ({"std": [0.5, 0.0, 0.5]}, "std must be"),
    ("cfg", "JSON object"),
])
def test_pretrained_cfgs_it_cannot_reproduce_are_refused(cfg, message):
    with pytest.raises(ValueError, match=message):
        timm_models.preprocessing_from_timm_cfg(cfg)


def test_timm_arch():
    arch, kwargs, preprocessing = timm_models.timm_arch("tf_efficientnet_lite3.in1k", 10)
    assert (arch, kwargs) == ("efficientnet_lite3", {"style": "tf", "input_shape": (300, 300, 3), "classes": 10})
    assert preprocessing == {"mode": "tf", "size": 300, "resize": 331, "resample": "bilinear"}
    cfg = {**timm_models.default_pretrained_cfg("mobilenetv3_large_100"), "mean": [0, 0, 0], "std": [1, 1, 1],
           "interpolation": "bilinear"}  # a tag whose cfg comes with the snapshot (miil_in21k_ft_in1k)
    arch, kwargs, preprocessing = timm_models.timm_arch("mobilenetv3_large_100.miil_in21k_ft_in1k", 1000, cfg)
    assert arch == "mobilenet_v3_large" and preprocessing["mode"] == "unit"
    assert [timm_models.naming_source(a) for a in ("tf_mobilenetv3_large_100.in1k", "mobilenetv3_large_100")] == [
        "timm_tf", "timm"]
    for architecture, message in (
        ("resnet50", "not supported"),
        ("mobilenetv3_rw", "not supported"),
        ("mobilenetv3_large_100.miil_in21k", "only the default tag 'ra_in1k'"),
        (None, "must be a string"),
    ):
        with pytest.raises(ValueError, match=message):
            timm_models.timm_arch(architecture, 1000)
    with pytest.raises(ValueError, match="num_classes"):
        timm_models.timm_arch("mobilenetv2_100", -1)
