"""megvii-model/ShuffleNet-Series `ShuffleNetV1` naming (shufflenet_v1_g1 .. g8).

`first_conv.0/1` conv + BN; `features.N` ShuffleV1Block units, numbered
through all stages, each with `branch_main_1` = [grouped 1x1 conv, BN, ReLU,
dw conv, BN] and `branch_main_2` = [grouped 1x1 conv, BN]; `classifier.0`
Linear without bias. The groups come from --arch, the scale from the
checkpoint's channels.
"""

from keras_lightnets.models.tables import (
    SHUFFLENET_V1_STEM_CHANNELS,
    shufflenet_v1_channels,
)

NAME = "megvii"
UNIT_CONVS = (
    ("branch_main_1.0", "gconv1"), ("branch_main_1.1", "gconv1_bn"), ("branch_main_1.3", "dwconv"),
    ("branch_main_1.4", "dwconv_bn"), ("branch_main_2.0", "gconv2"), ("branch_main_2.1", "gconv2_bn"),
)


def detect(keys):
    return "first_conv.0.weight" in keys and "features.0.branch_main_1.0.weight" in keys


def builder_kwargs(spec, tensors):
    # features.1 is a stride-1 unit of stage 2: its 1x1 convs are grouped.
    stage2 = tensors["features.1.branch_main_2.0.weight"].shape[0]
    groups = stage2 // tensors["features.1.branch_main_1.0.weight"].shape[1]
    if groups != spec.builder_kwargs["groups"]:
        raise ValueError(f"its 1x1 convolutions have {groups} groups: use --arch shufflenet_v1_g{groups}")
    units = 1 + max(int(k.split(".")[1]) for k in tensors if k.startswith("features."))
    channels = (
        tensors["first_conv.0.weight"].shape[0],
        stage2,
        tensors["features.4.branch_main_2.0.weight"].shape[0] + stage2,  # stride-2 unit: out - in
        tensors[f"features.{units - 1}.branch_main_2.0.weight"].shape[0],
    )
    for scale in SHUFFLENET_V1_STEM_CHANNELS:
        if shufflenet_v1_channels(groups, scale) == channels:
            return {"scale": scale, "classes": tensors["classifier.0.weight"].shape[0]}
    raise ValueError(f"no ShuffleNet v1 scale has the channels {channels} with {groups} groups")


def layer_map(model, keys):
    rows = [("first_conv.0", "conv1"), ("first_conv.1", "conv1_bn")]
    prefixes = [l.name[: -len("_gconv1")] for l in model.layers if l.name.endswith("_gconv1")]
    for index, prefix in enumerate(prefixes):
        rows += [(f"features.{index}.{module}", f"{prefix}_{suffix}") for module, suffix in UNIT_CONVS]
    rows.append(("classifier.0", "predictions"))
    return rows


def reference(spec, builder_kwargs, tensors):
    """megvii's ShuffleNetV1 holding the checkpoint."""
    from keras_lightnets.conversion.references.common import holding
    from keras_lightnets.conversion.references.megvii import ShuffleNetV1

    size = f"{builder_kwargs['scale']:.1f}x"
    return holding(ShuffleNetV1(builder_kwargs["classes"], size, group=builder_kwargs["groups"]), tensors)
