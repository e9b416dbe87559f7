"""torchvision.models.shufflenetv2 naming (shufflenet_v2_x0_5 .. x2_0).

`conv1.0/1` conv + BN; `stage{2,3,4}.N` InvertedResidual units whose
`branch1` (stride-2 units only) is [dw conv, BN, conv, BN, ReLU] and
`branch2` is [conv, BN, ReLU, dw conv, BN, conv, BN, ReLU]; `conv5.0/1`;
`fc` Linear.
"""

import re

from keras_lightnets.models.tables import SHUFFLENET_V2_CHANNELS, shufflenet_v2_name

NAME = "torchvision"
BRANCH1 = (("0", "dwconv"), ("1", "dwconv_bn"), ("2", "conv"), ("3", "conv_bn"))
BRANCH2 = (
    ("0", "conv1"), ("1", "conv1_bn"), ("3", "dwconv"), ("4", "dwconv_bn"), ("5", "conv2"), ("6", "conv2_bn"),
)
UNIT = re.compile(r"^stage(\d+)_unit(\d+)_branch2_conv1$")


def detect(keys):
    return "conv1.0.weight" in keys and "stage2.0.branch1.0.weight" in keys and "fc.weight" in keys


def builder_kwargs(spec, tensors):
    channels = (
        tensors["conv1.0.weight"].shape[0],
        2 * tensors["stage2.0.branch2.5.weight"].shape[0],
        2 * tensors["stage3.0.branch2.5.weight"].shape[0],
        2 * tensors["stage4.0.branch2.5.weight"].shape[0],
        tensors["conv5.0.weight"].shape[0],
    )
    widths = [w for w, plan in SHUFFLENET_V2_CHANNELS.items() if plan == channels]
    if widths != [spec.builder_kwargs["width"]]:
        found = shufflenet_v2_name(widths[0]) if widths else "no known width"
        raise ValueError(f"its channels {channels} are {found}, not {spec.name}")
    return {"classes": tensors["fc.weight"].shape[0]}


def layer_map(model, keys):
    rows = [("conv1.0", "conv1"), ("conv1.1", "conv1_bn")]
    names = {layer.name for layer in model.layers}
    for layer in model.layers:
        match = UNIT.match(layer.name)
        if not match:
            continue
        stage, unit = int(match[1]), int(match[2])
        torch_unit, prefix = f"stage{stage}.{unit - 1}", f"stage{stage}_unit{unit}"
        if f"{prefix}_branch1_dwconv" in names:
            rows += [(f"{torch_unit}.branch1.{i}", f"{prefix}_branch1_{n}") for i, n in BRANCH1]
        rows += [(f"{torch_unit}.branch2.{i}", f"{prefix}_branch2_{n}") for i, n in BRANCH2]
    rows += [("conv5.0", "conv5"), ("conv5.1", "conv5_bn"), ("fc", "predictions")]
    return rows


def reference(spec, builder_kwargs, tensors):
    """torchvision's `shufflenet_v2_x*` holding the checkpoint (torchvision's own where installed)."""
    from keras_lightnets.conversion.references.common import holding, library_or_shipped
    from keras_lightnets.models.tables import (
        SHUFFLENET_STAGE_REPEATS,
        SHUFFLENET_V2_CHANNELS,
    )

    channels = list(SHUFFLENET_V2_CHANNELS[builder_kwargs["width"]])
    repeats = list(SHUFFLENET_STAGE_REPEATS)

    def library():
        from torchvision.models import shufflenetv2

        return shufflenetv2.ShuffleNetV2(repeats, channels, num_classes=builder_kwargs["classes"])

    def shipped():
        from keras_lightnets.conversion.references.torchvision.shufflenet import (
            ShuffleNetV2,
        )

        return ShuffleNetV2(repeats, channels, builder_kwargs["classes"])

    return holding(library_or_shipped(library, shipped), tensors)
