"""jfzhang95/pytorch-deeplab-xception naming (`{"state_dict": ...}` checkpoints).

MobileNetV2: `backbone.features.N.conv.M` (flat Sequential; the aliases
`backbone.low_level_features.N` / `high_level_features.N` are views of the
same tensors); ResNet: `backbone.conv1/bn1/layer1..4`. Head:
`aspp.aspp1..4.atrous_conv/bn`, `aspp.global_avg_pool.1/2`, `aspp.conv1/bn1`,
`decoder.conv1/bn1`, `decoder.last_conv.N` (0, 1, 4, 5, 8 with the dropouts
of the current code; 0, 1, 3, 4, 6 in early versions).
"""

from convert.sources import _deeplab, _mobilenet_v2

NAME = "jfzhang95"
ARCHS = ("deeplabv3plus_mobilenetv2", "deeplabv3plus_resnet50", "deeplabv3plus_resnet101")


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


def builder_kwargs(arch, tensors):
    logits = last_conv_indices(tensors)[-1]
    return {
        **_deeplab.backbone_kwargs(arch, tensors, "backbone"),
        "classes": tensors[f"decoder.last_conv.{logits}.weight"].shape[0],
        "head": "jfzhang95",
    }


def layer_map(model, keys):
    if "backbone.features.0.0.weight" in keys:
        module_of = lambda i: f"backbone.features.{i}"  # noqa: E731
        rows = _mobilenet_v2.stem_and_block_rows(model, module_of, _mobilenet_v2.FLAT_BLOCK)
    else:
        rows = _deeplab.resnet_rows(model, "backbone")
    rows += _deeplab.aspp_rows(
        [(f"aspp.aspp{i}.atrous_conv", f"aspp.aspp{i}.bn") for i in range(1, 5)]
        + [("aspp.global_avg_pool.1", "aspp.global_avg_pool.2"), ("aspp.conv1", "aspp.bn1")]
    )
    return rows + decoder_rows(keys, "decoder.conv1", "decoder.bn1", "decoder.last_conv")
