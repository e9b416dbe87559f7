"""`--arch auto`, wrapper prefixes and Hugging Face snapshot folders.

Every registry arch's own checkpoints (state_dicts of the test references,
in every naming the arch lists) must be recognised as that arch, naming and
configuration. Detection reads only keys and shapes, so those checkpoints are
built on torch's meta device (no memory, no values); the conversions through
the command line use real random weights.
"""

import json
import os
import signal

import numpy as np
import pytest
import torch
from efficientnet_lite_pytorch import EfficientNet

import keras_lightnets as kl
from keras_lightnets.conversion import detect
from keras_lightnets.conversion.references import (
    bubbliiiing,
    c1_bottleneck,
    jfzhang95,
    jfzhang95_legacy,
    jfzhang95_xception,
    marvis,
    megvii,
    tonylins,
    vainf,
)
from keras_lightnets.conversion.references import smp as torch_smp
from keras_lightnets.conversion.references import timm as torch_timm
from keras_lightnets.conversion.references.torchvision import (
    mobilenet_v2 as torchvision_mobilenet_v2,
)
from keras_lightnets.conversion.references.torchvision import (
    mobilenet_v3 as torch_mobilenet_v3,
)
from keras_lightnets.conversion.references.torchvision import (
    segmentation as torch_segmentation,
)
from keras_lightnets.conversion.references.torchvision import (
    shufflenet as torchvision_shufflenet,
)
from keras_lightnets.conversion.references.torchvision import (
    squeezenet as torchvision_squeezenet,
)
from keras_lightnets.registry import SPECS
from tests.helpers import (
    assert_parity,
    nchw,
    randomize_torch_model,
    reference_images,
    run_cli,
    torch_forward,
    write_safetensors,
)


def _deeplab_cases(backbone, depth=None):
    jfz = "mobilenet" if backbone == "mobilenetv2" else "resnet"
    smp_encoder = "mobilenet_v2" if backbone == "mobilenetv2" else backbone
    cases = {
        "vainf": lambda: vainf.DeepLabV3Plus(backbone, 6, 16),
        "vainf_separable": lambda: vainf.DeepLabV3Plus(backbone, 21, 8, separable=True),
        "jfzhang95": lambda: jfzhang95.DeepLab(jfz, 16, 9, depth or 101),
        "smp": lambda: torch_smp.DeepLabV3Plus(smp_encoder, 16, 7),
    }
    if backbone == "mobilenetv2":
        cases["bubbliiiing"] = lambda: bubbliiiing.DeepLab(3, "mobilenet", 16)
    else:
        cases["jfzhang95_legacy"] = lambda: jfzhang95_legacy.DeepLabV3Plus(4, 16, depth)
    return {(f"deeplabv3plus_{backbone}", naming): factory for naming, factory in cases.items()}


# (arch, naming): a factory of the test reference whose state_dict is a checkpoint of that arch.
CHECKPOINTS = {
    ("mobilenet_v1", "marvis"): lambda: marvis.MobileNet(num_classes=10, width_mult=0.75),
    ("mobilenet_v2", "torchvision"): lambda: torchvision_mobilenet_v2.MobileNetV2(num_classes=7, width_mult=1.4),
    ("mobilenet_v2", "tonylins"): lambda: tonylins.MobileNetV2(n_class=10),
    ("mobilenet_v2", "c1_bottleneck"): lambda: c1_bottleneck.MobileNetV2(num_classes=5),
    **{
        (f"efficientnet_lite{v}", "efficientnet_lite_pytorch"):
            lambda v=v: EfficientNet.from_name(f"efficientnet-lite{v}", num_classes=10 + v)
        for v in range(5)
    },
    ("squeezenet1_0", "torchvision"): lambda: torchvision_squeezenet.SqueezeNet("1_0", num_classes=3),
    ("squeezenet1_1", "torchvision"): lambda: torchvision_squeezenet.SqueezeNet("1_1"),
    **{
        (f"shufflenet_v2_x{width:.1f}".replace(".", "_"), "torchvision"):
            lambda channels=channels: torchvision_shufflenet.ShuffleNetV2([4, 8, 4], channels, num_classes=11)
        for width, channels in {
            0.5: [24, 48, 96, 192, 1024], 1.0: [24, 116, 232, 464, 1024],
            1.5: [24, 176, 352, 704, 1024], 2.0: [24, 244, 488, 976, 2048],
        }.items()
    },
    **{
        (f"shufflenet_v1_g{group}", "megvii"): lambda group=group, size=size: megvii.ShuffleNetV1(12, size, group=group)
        for group, size in ((1, "1.0x"), (2, "0.5x"), (3, "2.0x"), (4, "1.5x"), (8, "1.0x"))
    },
    **_deeplab_cases("mobilenetv2"),
    **_deeplab_cases("resnet50", 50),
    **_deeplab_cases("resnet101", 101),
    ("deeplabv3plus_xception", "bubbliiiing"): lambda: bubbliiiing.DeepLab(21, "xception", 16),
    ("deeplabv3plus_xception", "jfzhang95"): lambda: jfzhang95_xception.DeepLab(16, 8),
    ("mobilenet_v3_large", "torchvision"): lambda: torch_mobilenet_v3.MobileNetV3("large", 10),
    ("mobilenet_v3_small", "torchvision"): lambda: torch_mobilenet_v3.MobileNetV3("small", 6, width_mult=0.75),
    ("lraspp_mobilenet_v3_large", "torchvision_lraspp"): lambda: torch_segmentation.LRASPPMobileNetV3Large(5),
    ("deeplabv3_mobilenet_v3_large", "torchvision_deeplabv3"):
        lambda: torch_segmentation.DeepLabV3MobileNetV3Large(7),
    ("mobilenet_v1", "timm"): lambda: torch_timm.build("mobilenetv1_125", 9),
    ("mobilenet_v2", "timm"): lambda: torch_timm.build("mobilenetv2_110d", 7),
    **{
        (f"efficientnet_lite{v}", naming): lambda v=v, tf=naming == "timm_tf":
            torch_timm.build(f"{'tf_' if tf else ''}efficientnet_lite{v}", 4)
        for v in range(5) for naming in ("timm", "timm_tf")
    },
    ("mobilenet_v3_large", "timm"): lambda: torch_timm.build("mobilenetv3_large_100", 8),
    ("mobilenet_v3_large", "timm_tf"): lambda: torch_timm.build("tf_mobilenetv3_large_minimal_100", 8),
    ("mobilenet_v3_small", "timm"): lambda: torch_timm.build("mobilenetv3_small_050", 5),
    ("mobilenet_v3_small", "timm_tf"): lambda: torch_timm.build("tf_mobilenetv3_small_075", 5),
}
CASE_IDS = [f"{arch}-{naming}" for arch, naming in sorted(CHECKPOINTS)]
# timm's `tf_` ports have the keys and shapes of the PyTorch-trained models:
# only --source (or a snapshot's config.json) tells them apart.
SAME_KEYS = {
    *((f"efficientnet_lite{v}", naming) for v in range(5) for naming in ("timm", "timm_tf")),
    ("mobilenet_v3_large", "timm"),  # tf_mobilenetv3_large_100
    ("mobilenet_v3_small", "timm_tf"),  # mobilenetv3_small_075
}


def shapes_only(factory):
    """The reference's state_dict as the reader gives it, as zero-byte arrays of the right shapes."""
    with torch.device("meta"):
        model = factory()
    return {
        key: np.broadcast_to(np.float32(0), tuple(value.shape))
        for key, value in model.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }


def test_every_arch_and_naming_has_a_checkpoint():
    """A new arch or naming in the registry needs its case here."""
    listed = {(spec.name, naming.rpartition("/")[2]) for spec in SPECS.values() for naming in spec.namings}
    listed.discard(("deeplabv3plus_mobilenetv2", "tonylins"))  # a classifier's checkpoint: test_backbone_only_*
    assert listed == set(CHECKPOINTS)


@pytest.mark.parametrize("arch,naming", sorted(CHECKPOINTS), ids=CASE_IDS)
def test_auto_finds_the_arch_of_its_own_checkpoints(arch, naming):
    tensors = shapes_only(CHECKPOINTS[arch, naming])
    if (arch, naming) in SAME_KEYS:
        with pytest.raises(detect.ConversionError) as error:
            detect.find_arch(tensors)
        assert str(error.value) == (
            f"the checkpoint matches 2 namings: {arch} (timm naming), {arch} (timm_tf naming); give --source"
        )
    found = detect.find_arch(tensors, source=naming if (arch, naming) in SAME_KEYS else None)
    assert (found.spec.name, found.naming.NAME, found.prefix) == (arch, naming, None)
    assert found.inferred.startswith(f"{arch} ({naming} naming: ")
    # with --arch given, the same naming is chosen
    assert detect.find_arch(found.tensors, arch, found.naming.NAME).naming is found.naming


@pytest.mark.parametrize(
    "factory,arch,told",
    [
        (CHECKPOINTS["mobilenet_v2", "torchvision"], "mobilenet_v2",
         "alpha=1.4, classes=7 from features.0.0.weight 48x3x3x3"),
        (CHECKPOINTS["mobilenet_v1", "marvis"], "mobilenet_v1", "alpha=0.75"),
        (CHECKPOINTS["squeezenet1_0", "torchvision"], "squeezenet1_0", "classes=3 from features.0.weight 96x3x7x7"),
        (CHECKPOINTS["shufflenet_v1_g4", "megvii"], "shufflenet_v1_g4", "scale=1.5, classes=12"),
        (CHECKPOINTS["efficientnet_lite3", "efficientnet_lite_pytorch"], "efficientnet_lite3", "classes=13"),
        (CHECKPOINTS["deeplabv3plus_resnet50", "jfzhang95"], "deeplabv3plus_resnet50",
         "classes=9, head='jfzhang95'"),
        (CHECKPOINTS["mobilenet_v3_small", "torchvision"], "mobilenet_v3_small", "alpha=0.75, classes=6"),
        (CHECKPOINTS["mobilenet_v2", "timm"], "mobilenet_v2",
         "(timm naming: all its keys and shapes); alpha=1.1, depth_coefficient=1.2, stem_filters=32, "
         "last_filters=1280, classes=7"),
    ],
)
def test_the_report_says_what_was_inferred_and_from_what(factory, arch, told):
    found = detect.find_arch(shapes_only(factory))
    assert found.spec.name == arch and told in found.inferred, found.inferred


def test_backbone_only_reading_loses_to_the_whole_network():
    """A seed MobileNetV2 classifier is also the backbone of seed 000's DeepLab
    (a reading without classes): auto takes the whole network."""
    found = detect.find_arch(shapes_only(CHECKPOINTS["mobilenet_v2", "tonylins"]))
    assert (found.spec.name, found.naming.NAME) == ("mobilenet_v2", "tonylins")


@pytest.mark.parametrize("prefix", ["backbone.", "model.", "net.", "encoder.", "model.backbone.", "student_0."])
def test_a_common_prefix_is_stripped_when_the_rest_is_a_network(prefix):
    tensors = shapes_only(CHECKPOINTS["squeezenet1_1", "torchvision"])
    found = detect.find_arch({prefix + key: value for key, value in tensors.items()})
    assert (found.spec.name, found.prefix) == ("squeezenet1_1", prefix)
    assert set(found.tensors) == set(tensors)
    found = detect.find_arch({prefix + key: value for key, value in tensors.items()}, "squeezenet1_1")
    assert found.prefix == prefix and set(found.tensors) == set(tensors)


def test_keys_that_match_as_they_are_keep_their_prefix():
    """smp's keys start with encoder./decoder.; a backbone-only torchvision
    MobileNetV2 has only `features.*` keys: neither is a wrapper."""
    smp_keys = shapes_only(CHECKPOINTS["deeplabv3plus_mobilenetv2", "smp"])
    assert detect.find_arch(smp_keys).prefix is None
    features = {k: v for k, v in shapes_only(CHECKPOINTS["mobilenet_v2", "torchvision"]).items() if k[0] == "f"}
    found = detect.find_arch(features, "deeplabv3plus_mobilenetv2", "tonylins")
    assert found.prefix is None and all(key.startswith("features.") for key in found.tensors)


@pytest.mark.parametrize("base", ["", "model."])
def test_two_networks_under_one_wrapper_are_refused(base):
    tensors = shapes_only(CHECKPOINTS["squeezenet1_1", "torchvision"])
    lite = shapes_only(CHECKPOINTS["efficientnet_lite0", "efficientnet_lite_pytorch"])
    both = {
        **{f"{base}student.{k}": v for k, v in lite.items()},
        **{f"{base}teacher.{k}": v for k, v in tensors.items()},
    }
    with pytest.raises(detect.ConversionError) as error:
        detect.find_arch(both)
    message = str(error.value)
    assert f"2 networks, under '{base}student.' (efficientnet_lite0) and '{base}teacher.' (squeezenet1_1)" in message
    with pytest.raises(detect.ConversionError, match="2 networks"):
        detect.find_arch(both, "squeezenet1_1")


def test_a_checkpoint_of_two_archs_lists_them():
    merged = {
        **shapes_only(CHECKPOINTS["mobilenet_v2", "torchvision"]),
        **shapes_only(CHECKPOINTS["efficientnet_lite0", "efficientnet_lite_pytorch"]),
    }
    with pytest.raises(detect.ConversionError) as error:
        detect.find_arch(merged)
    assert str(error.value) == (
        "the checkpoint matches 2 archs: mobilenet_v2 (torchvision naming), "
        "efficientnet_lite0 (efficientnet_lite_pytorch naming); give --arch"
    )


def test_a_known_naming_of_no_known_variant_names_why():
    tensors = shapes_only(CHECKPOINTS["squeezenet1_0", "torchvision"])
    tensors["features.0.weight"] = np.broadcast_to(np.float32(0), (96, 3, 5, 5))
    with pytest.raises(detect.ConversionError) as error:
        detect.find_arch(tensors)
    assert "look like a known naming, but: squeezenet1_0 (torchvision naming): its conv1 is 5x5" in str(error.value)


def test_wrong_arch_names_the_arch_the_keys_fit(tmp_path, capsys):
    torch.save(torchvision_mobilenet_v2.MobileNetV2(num_classes=3).state_dict(), tmp_path / "m.pth")
    status, _, err = run_cli(capsys, tmp_path / "m.pth", tmp_path / "m.h5", "--arch", "efficientnet_lite0")
    assert status == 2 and err.count("\n") == 1
    assert "match no efficientnet_lite0 naming" in err and "they fit mobilenet_v2 (torchvision naming)" in err
    assert not (tmp_path / "m.h5").exists()


# ---------------------------------------------------------------- through the command line


def test_cli_auto_and_prefix_reproduce_pytorch(tmp_path, capsys):
    torch.manual_seed(0)
    model = torchvision_mobilenet_v2.MobileNetV2(num_classes=7, width_mult=1.4)
    images = reference_images(96)
    randomize_torch_model(model, nchw(images))
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "m.pth")
    status, report, err = run_cli(capsys, tmp_path / "m.pth", tmp_path / "m.h5")
    assert status == 0, err
    assert "(pytorch-zip, unwrapped {'state_dict'}, prefix 'backbone.' stripped)" in report
    assert "arch            mobilenet_v2: style='torch', alpha=1.4, classes=7" in report
    assert (
        "inferred        mobilenet_v2 (torchvision naming: features.0.0.weight, features.1.conv.0.0.weight); "
        "alpha=1.4, classes=7 from features.0.0.weight 48x3x3x3, features.17.conv.2.weight 448x1344x1x1, "
        "classifier.1.weight 7x1792\n"
    ) in report
    keras_model = kl.from_h5(tmp_path / "m.h5", classifier_activation=None, input_shape=(96, 96, 3))
    assert_parity(np.asarray(keras_model(images)), torch_forward(model, images))


def test_cli_two_networks_exit_2_and_write_nothing(tmp_path, capsys):
    state = marvis.MobileNet(num_classes=4).state_dict()
    torch.save({**{f"ema.{k}": v for k, v in state.items()}, **{f"model.{k}": v for k, v in state.items()}},
               tmp_path / "two.pth")
    status, out, err = run_cli(capsys, tmp_path / "two.pth", tmp_path / "two.h5")
    assert (status, out) == (2, "")
    assert err == "error: the checkpoint holds 2 networks, under 'ema.' (mobilenet_v1) and 'model.' (mobilenet_v1); " \
                  "save one of them alone\n"
    assert not list(tmp_path.glob("two.h5*"))


# One checkpoint per builder through the whole conversion (test_auto_finds_the_arch_of_its_own_checkpoints
# covers every arch and naming's detection; the namings' own tests their conversions with --arch).
CLI_CASES = [
    ("mobilenet_v1", "timm"), ("mobilenet_v2", "c1_bottleneck"), ("efficientnet_lite1", "efficientnet_lite_pytorch"),
    ("efficientnet_lite2", "timm_tf"), ("squeezenet1_0", "torchvision"), ("shufflenet_v2_x0_5", "torchvision"),
    ("shufflenet_v1_g8", "megvii"), ("mobilenet_v3_small", "torchvision"), ("mobilenet_v3_large", "timm_tf"),
    ("lraspp_mobilenet_v3_large", "torchvision_lraspp"), ("deeplabv3plus_mobilenetv2", "bubbliiiing"),
    ("deeplabv3plus_resnet50", "vainf_separable"), ("deeplabv3plus_xception", "jfzhang95"),
]


@pytest.mark.slow
@pytest.mark.parametrize("arch,naming", CLI_CASES, ids=[f"{arch}-{naming}" for arch, naming in CLI_CASES])
def test_cli_auto_converts_each_builder(arch, naming, tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(CHECKPOINTS[arch, naming]().state_dict(), tmp_path / "c.pth")
    source = ["--source", naming] if (arch, naming) in SAME_KEYS else []
    status, report, err = run_cli(capsys, tmp_path / "c.pth", tmp_path / "c.h5", "--no-check", *source)
    assert status == 0, err
    assert f"arch            {arch}:" in report and f"naming          {naming}" in report
    assert "unused tensors  none" in report and "unset weights   none" in report
    assert kl.weights_info(tmp_path / "c.h5")["arch"] == arch


# ---------------------------------------------------------------- Hugging Face snapshot folders

IMAGENET_CFG = {
    "tag": "ra_in1k", "custom_load": False, "input_size": [3, 224, 224], "fixed_input_size": False,
    "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center", "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225], "num_classes": 1000, "pool_size": [7, 7], "first_conv": "conv_stem",
    "classifier": "classifier", "license": "apache-2.0",
}


def timm_config(architecture, num_classes, **cfg):
    """config.json as timm 1.0's `save_for_hf` writes it."""
    return {
        "architecture": architecture, "num_classes": num_classes, "num_features": 1280, "global_pool": "avg",
        "model_args": {"in_chans": 3, "num_classes": num_classes, "global_pool": "avg"},
        "pretrained_cfg": {**IMAGENET_CFG, **cfg},
    }


def make_snapshot(folder, model, config, weights="model.safetensors"):
    folder.mkdir(parents=True, exist_ok=True)
    if weights == "model.safetensors":
        write_safetensors(folder / weights, model.state_dict())
    else:
        torch.save(model.state_dict(), folder / weights)
    (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return folder


def random_timm(name, classes, seed=0):
    torch.manual_seed(seed)
    model = torch_timm.build(name, classes)
    randomize_torch_model(model, nchw(reference_images(96)), seed=seed)
    return model


def assert_refused(capsys, *args, says):
    status, out, err = run_cli(capsys, *args)
    assert (status, out) == (2, ""), err
    assert err.startswith("error: ") and err.count("\n") == 1 and says in err, err


def test_snapshot_folder_converts_with_no_other_argument(tmp_path, capsys):
    model = random_timm("mobilenetv2_100", 10)
    folder = make_snapshot(tmp_path / "mobilenetv2_100.ra_in1k", model, timm_config("mobilenetv2_100", 10))
    status, report, err = run_cli(capsys, folder, tmp_path / "m.h5")
    assert status == 0, err
    assert "naming          timm" in report and "arch            mobilenet_v2:" in report
    assert "inferred        mobilenet_v2 from config.json's architecture 'mobilenetv2_100'" in report
    assert "top-5 identical" in report  # the converter's own check, against timm's network
    info = kl.weights_info(tmp_path / "m.h5")
    assert info["preprocessing"] == {"mode": "torch", "size": 224, "resize": 256, "resample": "bicubic"}
    assert info["source"]["checkpoint"] == "model.safetensors"
    images = reference_images(96)
    keras_model = kl.from_h5(tmp_path / "m.h5", classifier_activation=None, input_shape=(96, 96, 3))
    assert_parity(np.asarray(keras_model(images)), torch_forward(model, images))


def test_snapshot_config_tells_a_tf_port_from_its_namesake(tmp_path, capsys):
    """tf_efficientnet_lite0 has efficientnet_lite0's keys and shapes: config.json decides."""
    model = random_timm("tf_efficientnet_lite0", 4, seed=1)
    cfg = {"interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3}
    config = timm_config("tf_efficientnet_lite0", 4, **cfg)
    folder = make_snapshot(tmp_path / "lite", model, config, "pytorch_model.bin")
    status, report, err = run_cli(capsys, folder, tmp_path / "l.h5")
    assert status == 0, err
    assert "naming          timm_tf" in report and "style='tf'" in report and "top-5 identical" in report
    assert kl.weights_info(tmp_path / "l.h5")["preprocessing"]["mode"] == "tf"
    # the same weights without config.json: the keys cannot say which
    assert_refused(capsys, folder / "pytorch_model.bin", tmp_path / "x.h5", says="matches 2 namings")


def test_hugging_face_cache_links_are_followed_into_blobs_only(tmp_path, capsys):
    repo = tmp_path / "models--timm--mobilenetv1_100.ra4_e3600_r224_in1k"
    blobs, snapshot = repo / "blobs", repo / "snapshots" / "0123abcd"
    model = random_timm("mobilenetv1_100", 3)
    make_snapshot(blobs, model, timm_config("mobilenetv1_100", 3, mean=[0.5] * 3, std=[0.5] * 3))
    snapshot.mkdir(parents=True)
    (blobs / "config.json").rename(blobs / "a1")
    (blobs / "model.safetensors").rename(blobs / "b2")
    (snapshot / "config.json").symlink_to("../../blobs/a1")
    (snapshot / "model.safetensors").symlink_to("../../blobs/b2")
    status, report, err = run_cli(capsys, snapshot, tmp_path / "v1.h5", "--no-check")
    assert status == 0, err
    assert "arch            mobilenet_v1:" in report and "naming          timm" in report
    # a link anywhere else is refused, in a cache folder or not
    (snapshot / "config.json").unlink()
    (snapshot / "config.json").symlink_to(tmp_path / "elsewhere.json")
    (tmp_path / "elsewhere.json").write_text(json.dumps(timm_config("mobilenetv1_100", 3)))
    assert_refused(capsys, snapshot, tmp_path / "v2.h5", says="config.json is a link that leaves the snapshot")
    assert not (tmp_path / "v2.h5").exists()


@pytest.mark.parametrize(
    "weights_of,config,says",
    [
        (("mobilenetv1_100", 10), timm_config("mobilenetv2_100", 10),
         "config.json disagrees with the weights: its architecture 'mobilenetv2_100' is mobilenet_v2, "
         "the weights are mobilenet_v1; nothing written"),
        (("mobilenetv2_100", 10), timm_config("mobilenetv2_100", 5),
         "config.json disagrees with the weights: num_classes 5, the weights' classifier has 10"),
        (("mobilenetv2_100", 10), timm_config("mobilenetv2_140", 10),
         "config.json disagrees with the weights: architecture 'mobilenetv2_140' means alpha=1.4, the weights "
         "alpha=1.0"),
        (("efficientnet_lite0", 10), timm_config("efficientnet_lite2", 10),
         "its architecture 'efficientnet_lite2' is efficientnet_lite2, but the checkpoint is timm's "
         "efficientnet_lite0"),
    ],
    ids=["architecture", "num_classes", "width", "variant"],
)
def test_snapshot_config_that_disagrees_with_its_weights_is_refused(weights_of, config, says, tmp_path, capsys):
    with torch.device("meta"):
        model = torch_timm.build(*weights_of)
    model = model.to_empty(device="cpu")
    folder = make_snapshot(tmp_path / "snap", model, config)
    assert_refused(capsys, folder, tmp_path / "out.h5", says=says)
    assert not list(tmp_path.glob("out.h5*"))


def test_arch_given_against_the_snapshot_is_refused(tmp_path, capsys):
    folder = make_snapshot(tmp_path / "snap", random_timm("mobilenetv2_100", 10), timm_config("mobilenetv2_100", 10))
    assert_refused(capsys, folder, tmp_path / "o.h5", "--arch", "mobilenet_v1",
                   says="--arch mobilenet_v1, but snap/config.json's architecture 'mobilenetv2_100' is mobilenet_v2")


@pytest.mark.parametrize(
    "text,says",
    [
        ("[]", "config.json is not a JSON object"),
        ('{"architecture": "mobilenetv2_100", "num_classes": NaN}', "NaN is not a JSON number"),
        ('{"architecture": "a", "architecture": "b"}', "a key appears twice"),
        ('{"architecture": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        (json.dumps({"architecture": "mobilenetv2_100", "x": [[[[[[[[[[1]]]]]]]]]]}), "nested deeper than 8"),
        ("{" + " " * 300_000 + "}", "config.json is larger than 256 KB"),
        (b"\xff\xfe{}", "config.json is not valid JSON"),
        (json.dumps({"architecture": 7}), "'architecture' must be a timm model name, got 7"),
        (json.dumps({"architecture": "../../etc/passwd"}), "'architecture' must be a timm model name"),
        (json.dumps({"architecture": "\x1b[31mred"}), "'architecture' must be a timm model name"),
        (json.dumps(timm_config("mobilenetv2_100", "10")), "model_args.num_classes must be a class count"),
        (json.dumps(timm_config("mobilenetv2_100", True)), "must be a class count, got true"),
        (json.dumps({**timm_config("mobilenetv2_100", 10), "num_classes": 11}),
         "num_classes 11 but model_args.num_classes 10"),
        (json.dumps(timm_config("mobilenetv2_100", 10, mean=[0.5, 0.5])), "pretrained_cfg.mean is invalid"),
        (json.dumps(timm_config("mobilenetv2_100", 10, std=[0.5, 0, 0.5])), "pretrained_cfg.std is invalid"),
        (json.dumps(timm_config("mobilenetv2_100", 10, crop_pct="0.9")), "pretrained_cfg.crop_pct is invalid"),
        (json.dumps({**timm_config("mobilenetv2_100", 10), "model_args": {"in_chans": 1}}),
         "in_chans 1; only 3-channel models are converted"),
        (json.dumps({**timm_config("mobilenetv2_100", 10), "pretrained_cfg": "x"}), "pretrained_cfg is not an object"),
        (json.dumps(timm_config("resnet50", 10)), "timm architecture 'resnet50' is not supported"),
    ],
    ids=["list", "nan", "duplicate", "deep", "nested", "large", "utf8", "type", "path", "escape", "string-classes",
         "bool-classes", "two-classes", "mean", "std", "crop", "in-chans", "cfg-type", "unsupported"],
)
def test_bad_config_json_is_one_line_and_writes_nothing(text, says, tmp_path, capsys):
    folder = tmp_path / "snap"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")  # never read: config.json is checked first
    (folder / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    assert_refused(capsys, folder, tmp_path / "out.h5", says=says)
    assert not list(tmp_path.glob("out.h5*"))


def test_snapshot_folder_files_are_regular_files_and_no_others_are_opened(tmp_path, capsys):
    model = random_timm("mobilenetv2_050", 3)
    folder = make_snapshot(tmp_path / "snap", model, timm_config("mobilenetv2_050", 3))
    # FIFOs would block whoever opens them: none of these may be touched
    for name in ("README.md", "pytorch_model.bin", "open_clip_config.json", "model.pth"):
        os.mkfifo(folder / name)
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("a file other than the snapshot's was opened"))
    signal.alarm(120)
    try:
        status, report, err = run_cli(capsys, folder, tmp_path / "m.h5", "--no-check")
    finally:
        signal.alarm(0)
    assert status == 0, err
    os.unlink(folder / "model.safetensors")
    assert_refused(capsys, folder, tmp_path / "x.h5", says="snap/pytorch_model.bin is not a regular file")
    os.unlink(folder / "pytorch_model.bin")
    assert_refused(capsys, folder, tmp_path / "x.h5", says="the snapshot folder has no model.safetensors or "
                   "pytorch_model.bin")
    os.unlink(folder / "config.json")
    os.mkfifo(folder / "config.json")
    assert_refused(capsys, folder, tmp_path / "x.h5", says="snap/config.json is not a regular file")
    os.unlink(folder / "config.json")
    assert_refused(capsys, folder, tmp_path / "x.h5", says="snap is a folder without config.json")
