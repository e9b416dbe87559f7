"""bubbliiiing/deeplabv3-plus-pytorch naming (seed 000's DeepLabV3+ platform).

Plain state_dicts (`torch.save(model.state_dict())`). Backbones:
MobileNetV2 `backbone.features.0..17` (the seed's MobileNetV2 without its
last conv, flat block Sequentials), or Xception
`backbone.conv1/bn1/conv2/bn2`, `backbone.blockN.skip/skipbn`,
`backbone.blockN.sepconvK.depthwise/bn1/pointwise/bn2`,
`backbone.conv3..5.depthwise/bn1/pointwise/bn2`. Head: `aspp.branch1..4.0/1`
(conv with bias, BN), `aspp.branch5_conv/branch5_bn`, `aspp.conv_cat.0/1`,
`shortcut_conv.0/1`, `cat_conv.0/1/4/5`, `cls_conv`.

Its prediction code letterboxes the photo to 512x512 (bicubic, grey 128),
divides by 255 and crops the class map back (`deeplab.py` `detect_image`).
"""

from keras_lightnets.conversion.namings.deeplab import common as _deeplab
from keras_lightnets.conversion.namings.deeplab import xception as _xception
from keras_lightnets.conversion.namings.mobilenet_v2 import common as _mobilenet_v2

NAME = "bubbliiiing"
# The record's preprocessing (it differs from the arch's default, VainF's).
PREPROCESSING = {"mode": "unit", "size": 512, "resize": "letterbox", "resample": "bicubic", "fill": 128}

_BACKBONE_KEYS = {
    "mobilenetv2": "backbone.features.0.0.weight",
    "xception": "backbone.block1.sepconv1.depthwise.weight",
}


def detect(keys):
    return "aspp.branch1.0.weight" in keys and "cls_conv.weight" in keys


def checkpoint_backbone(keys):
    """The backbone the checkpoint's keys name, or None."""
    return next((name for name, key in _BACKBONE_KEYS.items() if key in keys), None)


def builder_kwargs(spec, tensors):
    backbone = spec.builder_kwargs["backbone"]
    found = checkpoint_backbone(tensors)
    if found != backbone:
        raise ValueError(f"the checkpoint's backbone is {found or 'unknown'}, not {backbone} (wrong --arch?)")
    kwargs = {"backbone": backbone, "classes": tensors["cls_conv.weight"].shape[0], "head": "bubbliiiing"}
    if backbone == "mobilenetv2":
        last_block = max(int(k.split(".")[2]) for k in tensors if k.startswith("backbone.features."))
        kwargs["alpha"] = _mobilenet_v2.infer_alpha(
            tensors["backbone.features.0.0.weight"].shape[0],
            tensors[f"backbone.features.{last_block}.conv.6.weight"].shape[0],
        )
    return kwargs


def layer_map(model, keys):
    if checkpoint_backbone(keys) == "mobilenetv2":
        module_of = lambda i: f"backbone.features.{i}"  # noqa: E731
        rows = _mobilenet_v2.stem_and_block_rows(model, module_of, _mobilenet_v2.FLAT_BLOCK)
    else:
        def separable(module):
            return (f"{module}.depthwise", f"{module}.bn1", f"{module}.pointwise", f"{module}.bn2")

        rows = _xception.xception_rows(
            model, "backbone",
            lambda block, k: separable(f"backbone.block{block}.sepconv{k}"),
            lambda index: separable(f"backbone.conv{index}"),
        )
    rows += _deeplab.aspp_rows(
        [(f"aspp.branch{i}.0", f"aspp.branch{i}.1") for i in range(1, 5)]
        + [("aspp.branch5_conv", "aspp.branch5_bn"), ("aspp.conv_cat.0", "aspp.conv_cat.1")]
    )
    return rows + [
        ("shortcut_conv.0", "decoder_low_conv"), ("shortcut_conv.1", "decoder_low_conv_bn"),
        ("cat_conv.0", "decoder_conv1"), ("cat_conv.1", "decoder_conv1_bn"),
        ("cat_conv.4", "decoder_conv2"), ("cat_conv.5", "decoder_conv2_bn"),
        ("cls_conv", "logits"),
    ]


def reference(spec, builder_kwargs, tensors):
    """bubbliiiing's `DeepLab` holding the checkpoint (width 1.0, as its code builds it)."""
    if builder_kwargs.get("alpha", 1.0) != 1.0:
        raise ValueError(f"its code builds MobileNetV2 width 1.0 only, the checkpoint has {builder_kwargs['alpha']}")
    from keras_lightnets.conversion.references.bubbliiiing import DeepLab
    from keras_lightnets.conversion.references.common import holding

    backbone = "mobilenet" if builder_kwargs["backbone"] == "mobilenetv2" else "xception"
    return holding(DeepLab(builder_kwargs["classes"], backbone, builder_kwargs["output_stride"]), tensors)
