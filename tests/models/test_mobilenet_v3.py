"""MobileNetV3: against keras.applications' own models, torchvision's (through
the converter), and the pretrained sources of both (served on loopback)."""

import dataclasses
import hashlib
import re
import time

import keras
import numpy as np
import pytest
import torch

import keras_lightnets as kl
from keras_lightnets.conversion.references.torchvision.mobilenet_v3 import MobileNetV3
from keras_lightnets.layers.custom import HardSigmoid, HardSwish
from keras_lightnets.weights import cache, fetch, pretrained, sources
from keras_lightnets.weights.h5 import (
    WeightsMismatchError,
    model_layer_weights,
    read_record,
    write_weights,
)
from tests.helpers import (
    assert_parity,
    assert_reported_parity,
    files_in,
    keras_applications_request,
    nchw,
    randomize_keras_weights,
    randomize_torch_model,
    reference_images,
    run_cli,
    save_legacy_h5,
    torch_forward,
    unit_logits,
)


def weighted_layers(model):
    return [(layer.name, [tuple(w.shape) for w in layer.weights]) for layer in model.layers if layer.weights]


# ---------------------------------------------------------------- the hard activations


def test_hard_activations_round_as_their_sources():
    x = np.random.default_rng(0).normal(0, 4, 200_000).astype("float32")
    t = torch.from_numpy(x)
    np.testing.assert_array_equal(np.asarray(HardSwish()(x)), torch.nn.functional.hardswish(t).numpy())
    np.testing.assert_array_equal(np.asarray(HardSigmoid("torch")(x)), torch.nn.functional.hardsigmoid(t).numpy())
    # keras.applications' gate: ReLU(6)(x + 3) * (1 / 6)
    keras_gate = np.asarray(keras.layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0))
    np.testing.assert_array_equal(np.asarray(HardSigmoid("keras")(x)), keras_gate)
    # the two roundings differ, so each form matters for exactness
    assert (np.asarray(HardSigmoid("keras")(x)) != np.asarray(HardSigmoid("torch")(x))).any()


# ---------------------------------------------------------------- keras.applications


KERAS_CASES = [
    ("MobileNetV3Small", {}, (64, 80, 3)),
    ("MobileNetV3Large", {"minimalistic": True, "include_top": False, "pooling": "avg"}, (72, 64, 3)),
    ("MobileNetV3Large", {"alpha": 0.75, "classes": 10, "include_preprocessing": False}, (65, 97, 3)),
]


@pytest.mark.parametrize("family,kwargs,input_shape", KERAS_CASES)
def test_keras_applications_weights_give_identical_outputs(family, kwargs, input_shape, tmp_path, rng):
    ref = getattr(keras.applications, family)(input_shape=input_shape, weights=None, **kwargs)
    randomize_keras_weights(ref, seed=1)
    save_legacy_h5(ref, tmp_path / "keras.h5")
    ours = getattr(kl, family)(input_shape=input_shape, weights=str(tmp_path / "keras.h5"), **kwargs)
    assert weighted_layers(ours) == weighted_layers(ref)
    assert ours.name == ref.name
    x = rng.uniform(0, 255, (2,) + input_shape).astype("float32")
    if kwargs.get("include_preprocessing") is False:
        x = kl.preprocess_input(x, "tf")
    expected = np.asarray(ref(x, training=False))
    got = np.asarray(ours(x, training=False))
    print(f"\nkeras.applications {family} {kwargs}: max |Δ| {np.abs(got - expected).max():.1e}")
    np.testing.assert_array_equal(got, expected)  # bit for bit: not a model at its initial weights


def test_styles_differ_where_their_sources_do():
    tf_model = kl.MobileNetV3Large(input_shape=(64, 64, 3), alpha=0.5)
    torch_model = kl.MobileNetV3Large(input_shape=(64, 64, 3), alpha=0.5, style="torch")
    # keras.applications: TF "same" stride-2 padding, a fixed 16-channel stem, [0, 255] input
    assert tf_model.get_layer("expanded_conv_3_depthwise_pad").padding == ((1, 2), (1, 2))
    assert tf_model.get_layer("conv").filters == 16 and tf_model.get_layer("conv_2").filters == 1280
    assert isinstance(tf_model.get_layer("rescaling"), keras.layers.Rescaling)
    # torchvision: symmetric padding, width_mult on the stem and the classifier, its
    # squeeze-excite widths, its rounding of the hard activations, no rescaling
    assert torch_model.get_layer("conv_pad").padding == ((1, 1), (1, 1))
    assert torch_model.get_layer("expanded_conv_3_depthwise_pad").padding == ((2, 2), (2, 2))
    assert torch_model.get_layer("conv").filters == 8 and torch_model.get_layer("conv_2").filters == 640
    assert torch_model.get_layer("expanded_conv_3_squeeze_excite_conv").filters == 16  # make_divisible(40 // 4)
    assert isinstance(torch_model.get_layer("conv_activation"), HardSwish)
    assert "rescaling" not in [layer.name for layer in torch_model.layers]
    for model in (tf_model, torch_model):
        assert model.get_layer("conv_bn").epsilon == 1e-3
    # include_preprocessing=True with style="torch": torchvision's mean/std inside the model
    normalising = kl.MobileNetV3Small(input_shape=(64, 64, 3), style="torch", include_preprocessing=True)
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    inside = keras.Model(normalising.input, normalising.get_layer("rescaling").output)(x)
    np.testing.assert_allclose(inside, kl.preprocess_input(x, "torch"), atol=1e-5)


# ---------------------------------------------------------------- torchvision, through the converter


def torch_classifier(size, width, classes, images, seed=0):
    """torchvision's MobileNetV3 with random weights, calibrated BatchNorm and unit-spread logits."""
    torch.manual_seed(seed)
    model = MobileNetV3(size, classes, width)
    randomize_torch_model(model, nchw(images), seed=seed)
    unit_logits(model, images)
    return model


@pytest.mark.parametrize("size,width,classes", [("large", 1.0, 1000), ("small", 0.75, 7)])
def test_cli_converts_torchvision_classifiers(size, width, classes, tmp_path, capsys):
    started = time.perf_counter()
    images = reference_images(224)
    model = torch_classifier(size, width, classes, images)
    torch.save(model.state_dict(), tmp_path / "tv.pth")
    status, report, err = run_cli(capsys, tmp_path / "tv.pth", tmp_path / "tv.h5", "--arch", f"mobilenet_v3_{size}")
    assert status == 0, err
    assert "naming          torchvision" in report
    assert f"alpha={width}, classes={classes}" in report
    assert "unused tensors  none" in report and "unset weights   none" in report
    assert_reported_parity(report, "torchvision MobileNetV3 (shipped reference)")

    keras_model = kl.from_h5(tmp_path / "tv.h5", classifier_activation=None)
    got, expected = np.asarray(keras_model(images)), torch_forward(model, images)
    assert_parity(got, expected)
    probabilities = np.abs(np.asarray(keras.ops.softmax(got)) - torch.softmax(torch.from_numpy(expected), -1).numpy())
    print(f"\ntorchvision mobilenet_v3_{size} x{width}: max |Δlogit| {np.abs(got - expected).max():.1e}, "
          f"|Δprobability| {probabilities.max():.1e}, {time.perf_counter() - started:.1f} s")
    assert probabilities.max() <= 1e-5


def test_exports_to_tflite_with_its_hard_activations(tmp_path):
    from keras_lightnets.runtime import export as exporter

    keras.utils.set_random_seed(0)
    model = kl.MobileNetV3Small(input_shape=(64, 64, 3), style="torch", classes=10)
    randomize_keras_weights(model, seed=0)
    figures = exporter.export(model, str(tmp_path / "m.tflite"), "tflite", preprocessing={"mode": "torch"},
                              input_dtype="uint8")
    assert figures["max_abs_diff"] <= 1e-4


def test_a_checkpoint_of_the_other_size_is_one_line(tmp_path, capsys):
    torch.save(MobileNetV3("small", 10).state_dict(), tmp_path / "small.pth")
    status, _, err = run_cli(capsys, tmp_path / "small.pth", tmp_path / "x.h5", "--arch", "mobilenet_v3_large")
    assert status == 2 and err.count("\n") == 1
    assert "its features hold 11 blocks, MobileNetV3-Large has 15" in err
    assert not (tmp_path / "x.h5").exists()


# ---------------------------------------------------------------- keras.applications' files


def keras_v3_sources():
    return [sources.SOURCES["keras_mobilenet_v3_large"], sources.SOURCES["keras_mobilenet_v3_small"]]


def test_keras_files_named_pinned_and_located_as_keras_applications_has_them():
    from keras.src.applications import mobilenet_v3

    assert f"{sources.KERAS_URL}mobilenet_v3/" == mobilenet_v3.BASE_WEIGHT_PATH
    published = {}
    for model_name, (top, no_top) in mobilenet_v3.WEIGHTS_HASHES.items():
        published[f"weights_mobilenet_v3_{model_name}.h5"] = top
        published[f"weights_mobilenet_v3_{model_name}_no_top_v2.h5"] = no_top
    ours = [name for source in keras_v3_sources() for name in source.file_names()]
    assert sorted(ours) == sorted(published)
    assert {name: sources.HASHES[name] for name in ours} == published


@pytest.mark.parametrize(
    "family,kwargs",
    [
        ("MobileNetV3Large", {"alpha": 0.75}),
        ("MobileNetV3Small", {"minimalistic": True, "include_top": False}),
        ("MobileNetV3Large", {"minimalistic": True, "input_shape": (160, 160, 3), "include_top": False}),
    ],
)
def test_the_same_file_and_hash_as_keras_applications(family, kwargs, monkeypatch):
    """Asks the installed keras.applications which file it would fetch, and with which hash."""
    from keras.src.applications import mobilenet_v3

    asked = keras_applications_request(monkeypatch, [mobilenet_v3], family, **kwargs)
    source = sources.SOURCES[f"keras_mobilenet_v3_{family[11:].lower()}"]
    options = {"alpha": 1.0, "include_top": True, "minimalistic": False, **kwargs}
    fname = source.select(alpha=options["alpha"], include_top=options["include_top"],
                          minimalistic=options["minimalistic"])
    assert (fname, fetch.keras_url(source, fname), sources.HASHES[fname]) == asked


def test_unpublished_keras_options_are_refused_as_keras_refuses_them(caches):
    with pytest.raises(ValueError, match="ImageNet weights exist for alpha in 0.75, 1.0 only"):
        kl.MobileNetV3Large(alpha=0.5, weights="imagenet")
    with pytest.raises(ValueError, match="minimalistic ImageNet weights exist for alpha in 1.0 only"):
        kl.MobileNetV3Small(alpha=0.75, minimalistic=True, weights="imagenet")


# keras.applications' MobileNetV3 files were written by TF 2's Keras, whose layer names
# differ from Keras 3's; Keras 3 loads them by order.
TF2_NAMES = [
    (r"^conv(_1)?$", lambda m: f"Conv{m.group(1) or ''}"),
    (r"^conv(_1)?_bn$", lambda m: f"Conv{m.group(1) or ''}/BatchNorm"),
    (r"^conv_2$", lambda m: "Conv_2"),
    (r"^logits$", lambda m: "Logits"),
    (r"^(expanded_conv(_\d+)?)_squeeze_excite_conv(_1)?$", lambda m: f"{m.group(1)}/squeeze_excite/Conv{m.group(3) or ''}"),
    (r"^(expanded_conv(_\d+)?)_(expand|depthwise|project)(_bn)?$",
     lambda m: f"{m.group(1)}/{m.group(3)}{'/BatchNorm' if m.group(4) else ''}"),
]


def tf2_name(name):
    for pattern, replace in TF2_NAMES:
        if re.match(pattern, name):
            return re.sub(pattern, replace, name)
    raise AssertionError(name)


def test_keras_file_fetched_md5_checked_and_loaded_by_order(caches, server, tmp_path, monkeypatch):
    fname = "weights_mobilenet_v3_small_minimalistic_224_1.0_float_no_top_v2.h5"
    ref = keras.applications.MobileNetV3Small(minimalistic=True, include_top=False, weights=None)
    randomize_keras_weights(ref, seed=2)
    layers = [(tf2_name(name), [(f"{tf2_name(name)}/{w.split('/')[-1]}", a) for w, a in ws])
              for name, ws in model_layer_weights(ref)]
    assert layers[1][0] == "Conv/BatchNorm" and layers[2][0] == "expanded_conv/depthwise"
    write_weights(tmp_path / "made.h5", layers, None)  # keras.applications' files carry no record
    body = (tmp_path / "made.h5").read_bytes()
    server.files[f"/mobilenet_v3/{fname}"] = body
    monkeypatch.setattr(fetch, "KERAS_BASE_URL", server.url)
    # the md5 keras.applications pins is that of the published file, not this one
    with pytest.raises(WeightsMismatchError, match="md5 differs"):
        kl.MobileNetV3Small(minimalistic=True, include_top=False, weights="imagenet")
    assert files_in(caches["keras"]) == []
    monkeypatch.setitem(sources.HASHES, fname, hashlib.md5(body).hexdigest())
    with pytest.warns(UserWarning, match="input size 64: the ImageNet weights were trained at 224"):
        ours = kl.MobileNetV3Small(minimalistic=True, include_top=False, weights="imagenet", input_shape=(64, 64, 3))
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(ours(x)), np.asarray(ref(x)))
    kl.MobileNetV3Small(minimalistic=True, include_top=False, weights="imagenet")
    assert files_in(caches["keras"]) == [fname] and len(server.requests) == 2  # the rejected one, then once


# ---------------------------------------------------------------- torchvision's checkpoints


def test_torchvision_sources_pinned_by_their_file_names_and_eval_transforms():
    expected = {
        "torchvision_mobilenet_v3_large": ("mobilenet_v3_large-5c1a4163.pth", "5c1a4163", 232),
        "torchvision_mobilenet_v3_large_v1": ("mobilenet_v3_large-8738ca79.pth", "8738ca79", 256),
        "torchvision_mobilenet_v3_small": ("mobilenet_v3_small-047dcff4.pth", "047dcff4", 256),
    }
    for name, (url_file, prefix, resize) in expected.items():
        source = sources.SOURCES[name]
        assert (source.url_file, source.sha256, source.preprocessing["resize"]) == (url_file, prefix, resize)
        assert source.preprocessing["size"] == 224 and source.preprocessing["mode"] == "torch"
    assert kl.SPECS["mobilenet_v3_large"].pretrained[0] == "torchvision_mobilenet_v3_large"  # V2: the default


@pytest.fixture
def small_checkpoint(tmp_path, monkeypatch):
    """A MobileNetV3-Small checkpoint and a torchvision source pinned by its sha256 prefix."""
    torch.manual_seed(3)
    model = MobileNetV3("small").eval()
    torch.save(model.state_dict(), tmp_path / "small.pth")
    body = (tmp_path / "small.pth").read_bytes()
    source = sources.SOURCES["torchvision_mobilenet_v3_small"]
    pinned = dataclasses.replace(source, sha256=hashlib.sha256(body).hexdigest()[:8])
    monkeypatch.setitem(sources.SOURCES, "torchvision_mobilenet_v3_small", pinned)
    return model, body, source.url_file


def test_torchvision_checkpoint_from_the_url_converted_and_cached(caches, server, small_checkpoint, monkeypatch):
    model, body, url_file = small_checkpoint
    server.files[f"/{url_file}"] = body[:-1] + bytes([body[-1] ^ 1])  # fails its sha256 prefix
    monkeypatch.setattr(fetch, "TORCHVISION_BASE_URL", server.url)
    with pytest.raises(fetch.PretrainedUnavailable) as err:
        kl.MobileNetV3Small(weights="imagenet", style="torch")
    message = str(err.value)
    assert "sha256 differs" in message and "fix: connect to the internet, or copy" in message and "\n" not in message
    assert files_in(caches["cache"]) == []
    server.files[f"/{url_file}"] = body
    # the source's own eval transform (here torchvision's V2 one, resize 232) is what the file records
    source = sources.SOURCES["torchvision_mobilenet_v3_small"]
    v2_like = dataclasses.replace(source, eval_transform=pretrained.registry.TORCHVISION_V2_EVAL)
    monkeypatch.setitem(sources.SOURCES, "torchvision_mobilenet_v3_small", v2_like)
    keras_model = kl.MobileNetV3Small(weights="imagenet", style="torch", classifier_activation=None)
    np.testing.assert_array_equal(
        keras_model.get_layer("logits").get_weights()[1], model.classifier[3].bias.detach().numpy()
    )
    converted = caches["cache"] / "torchvision_mobilenet_v3_small.h5"
    assert read_record(converted)["preprocessing"]["resize"] == 232
    manifest = cache.read_manifest(str(caches["cache"] / "MANIFEST.json"))["torchvision_mobilenet_v3_small"]
    assert manifest["source_sha256"] == hashlib.sha256(body).hexdigest()  # the full hash of the copy used
    kl.MobileNetV3Small(weights="imagenet", style="torch", include_top=False)  # the cache: no new request
    assert server.requests == [f"/{url_file}"] * 2


def test_torchvision_cache_comes_first(caches, small_checkpoint, tmp_path):
    _, body, url_file = small_checkpoint
    hub = caches["torch_home"] / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / url_file).write_bytes(body)
    source = sources.SOURCES["torchvision_mobilenet_v3_small"]
    path, where = fetch.locate_torchvision_checkpoint(source, str(tmp_path))
    assert path == str(hub / url_file) and where.startswith("torchvision's cache")
