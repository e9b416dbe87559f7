"""jfzhang95/pytorch-deeplab-xception naming (`{"state_dict": ...}` checkpoints).

MobileNetV2: `backbone.features.N.conv.M` (flat Sequential; the aliases
`backbone.low_level_features.N` / `high_level_features.N` are views of the
same tensors); ResNet: `backbone.conv1/bn1/layer1..4`; Aligned Xception-65:
`backbone.conv1/bn1/conv2/bn2`, `backbone.blockN.skip/skipbn`,
`backbone.blockN.rep.I` (separable conv: `.conv1` depthwise, `.bn`,
`.pointwise`; `rep.I+1` its BN; I = 0, 3, 6 in blocks 1-2, which do not start
with a ReLU, else 1, 4, 7), `backbone.conv3..5.conv1/bn/pointwise` and
`backbone.bn3..5`. Head:
`aspp.aspp1..4.atrous_conv/bn`, `aspp.global_avg_pool.1/2`, `aspp.conv1/bn1`,
`decoder.conv1/bn1`, `decoder.last_conv.N` (0, 1, 4, 5, 8 with the dropouts
of the current code; 0, 1, 3, 4, 6 in early versions).
"""

from keras_lightnets.conversion.namings.deeplab import common as _deeplab
from keras_lightnets.conversion.namings.deeplab import xception as _xception
from keras_lightnets.conversion.namings.mobilenet_v2 import common as _mobilenet_v2

NAME = "jfzhang95"

# A key each backbone has, for telling the checkpoint's backbone.
_BACKBONE_KEYS = {
    "mobilenetv2": "backbone.features.0.0.weight",
    "xception": "backbone.block1.skip.weight",
    "resnet": "backbone.layer1.0.conv1.weight",
}


def detect(keys):
    return "aspp.aspp1.atrous_conv.weight" in keys and "decoder.last_conv.0.weight" in keys


def last_conv_indices(keys, prefix="decoder.last_conv"):
    """Module indices of (conv, BN, conv, BN, classifier) in `last_conv`."""
    return (0, 1, 4, 5, 8) if f"{prefix}.8.weight" in keys else (0, 1, 3, 4, 6)


def decoder_rows(keys, low_conv, low_bn, last_conv):
    conv1, bn1, conv2, bn2, logits = (f"{last_conv}.{i}" for i in last_conv_indices(keys, last_conv))
    return [
        (low_conv, "decoder_low_conv"), (low_bn, "decoder_low_conv_bn"),
        (conv1, "decoder_conv1"), (bn1, "decoder_conv1_bn"),
        (conv2, "decoder_conv2"), (bn2, "decoder_conv2_bn"),
        (logits, "logits"),
    ]


def checkpoint_backbone(keys):
    """`"mobilenetv2"`, `"xception"`, `"resnet"` (any depth) or None."""
    return next((name for name, key in _BACKBONE_KEYS.items() if key in keys), None)


def builder_kwargs(spec, tensors):
    backbone, found = spec.builder_kwargs["backbone"], checkpoint_backbone(tensors)
    if found is not None and not backbone.startswith(found):
        raise ValueError(f"the checkpoint's backbone is {found}, not {backbone} (wrong --arch?)")
    logits = last_conv_indices(tensors)[-1]
    return {
        **_deeplab.backbone_kwargs(spec, tensors, "backbone"),
        "classes": tensors[f"decoder.last_conv.{logits}.weight"].shape[0],
        "head": "jfzhang95",
    }


def layer_map(model, keys):
    if "backbone.features.0.0.weight" in keys:
        module_of = lambda i: f"backbone.features.{i}"  # noqa: E731
        rows = _mobilenet_v2.stem_and_block_rows(model, module_of, _mobilenet_v2.FLAT_BLOCK)
    elif checkpoint_backbone(keys) == "xception":
        rows = xception_rows(model, keys)
    else:
        rows = _deeplab.resnet_rows(model, "backbone")
    rows += _deeplab.aspp_rows(
        [(f"aspp.aspp{i}.atrous_conv", f"aspp.aspp{i}.bn") for i in range(1, 5)]
        + [("aspp.global_avg_pool.1", "aspp.global_avg_pool.2"), ("aspp.conv1", "aspp.bn1")]
    )
    return rows + decoder_rows(keys, "decoder.conv1", "decoder.bn1", "decoder.last_conv")


def xception_rows(model, keys):
    """Rows of the Aligned Xception-65 (`modeling/backbone/xception.py`)."""

    def separable(block, k):
        block = f"backbone.block{block}.rep"
        first = 0 if f"{block}.0.conv1.weight" in keys else 1  # blocks without a leading ReLU
        index = first + 3 * (k - 1)
        module = f"{block}.{index}"
        return (f"{module}.conv1", f"{module}.bn", f"{module}.pointwise", f"{block}.{index + 1}")

    def exit_conv(index):
        module = f"backbone.conv{index}"
        return (f"{module}.conv1", f"{module}.bn", f"{module}.pointwise", f"backbone.bn{index}")

    return _xception.xception_rows(model, "backbone", separable, exit_conv)


def reference(spec, builder_kwargs, tensors):
    """jfzhang95's `DeepLab` holding the checkpoint."""
    from keras_lightnets.conversion.references import jfzhang95, jfzhang95_xception
    from keras_lightnets.conversion.references.common import holding

    backbone, classes = builder_kwargs["backbone"], builder_kwargs["classes"]
    output_stride = builder_kwargs["output_stride"]
    dropouts = last_conv_indices(tensors) == (0, 1, 4, 5, 8)
    if backbone == "xception":
        model = jfzhang95_xception.DeepLab(output_stride, classes, dropouts)
    elif backbone == "mobilenetv2":
        model = jfzhang95.DeepLab("mobilenet", output_stride, classes, dropouts=dropouts)
    else:
        model = jfzhang95.DeepLab("resnet", output_stride, classes, int(backbone[len("resnet"):]), dropouts)
    return holding(model, tensors)
