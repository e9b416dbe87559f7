"""EfficientNet-Lite naming of `efficientnet_lite_pytorch` (lukemelas-style).

`_conv_stem`, `_bn0`; `_blocks.N._expand_conv` (absent when t = 1), `_bn0`,
`_depthwise_conv`, `_bn1`, `_project_conv`, `_bn2`; `_conv_head`, `_bn1`; `_fc`.
"""

from keras_lightnets.models.tables import (
    EFFICIENTNET_LITE_BLOCKS,
    EFFICIENTNET_LITE_VARIANTS,
    make_divisible,
    scale_depth,
)

NAME = "efficientnet_lite_pytorch"


def detect(keys):
    return "_conv_stem.weight" in keys and "_blocks.0._depthwise_conv.weight" in keys


def variant_of(tensors):
    """The variant whose block count and last block width the checkpoint has, or None."""
    blocks = 1 + max(int(k.split(".")[1]) for k in tensors if k.startswith("_blocks."))
    shape = (blocks, tensors[f"_blocks.{blocks - 1}._project_conv.weight"].shape[0])
    repeats = [row[1] for row in EFFICIENTNET_LITE_BLOCKS]
    for variant, (width, depth, _, _) in EFFICIENTNET_LITE_VARIANTS.items():
        if shape == (sum(scale_depth(repeats, depth)), make_divisible(EFFICIENTNET_LITE_BLOCKS[-1][4] * width, 8)):
            return variant
    return None


def builder_kwargs(spec, tensors):
    variant = variant_of(tensors)
    if spec.name != f"efficientnet_lite{variant}":
        found = f"efficientnet_lite{variant}" if variant is not None else "no EfficientNet-Lite"
        raise ValueError(f"its blocks and widths are {found}'s, not {spec.name}'s")
    return {"classes": tensors["_fc.weight"].shape[0]}


def layer_map(model, keys):
    from keras import (
        layers,  # here, so that `python -m convert --help` needs no TensorFlow
    )

    rows = [("_conv_stem", "stem_conv"), ("_bn0", "stem_bn")]
    prefixes = [l.name[: -len("dwconv")] for l in model.layers if isinstance(l, layers.DepthwiseConv2D)]
    names = {l.name for l in model.layers}
    for index, prefix in enumerate(prefixes):
        module = f"_blocks.{index}"
        if prefix + "expand_conv" in names:
            rows += [(f"{module}._expand_conv", prefix + "expand_conv"), (f"{module}._bn0", prefix + "expand_bn")]
        rows += [
            (f"{module}._depthwise_conv", prefix + "dwconv"),
            (f"{module}._bn1", prefix + "bn"),
            (f"{module}._project_conv", prefix + "project_conv"),
            (f"{module}._bn2", prefix + "project_bn"),
        ]
    rows += [("_conv_head", "top_conv"), ("_bn1", "top_bn"), ("_fc", "predictions")]
    return rows


def reference(spec, builder_kwargs, tensors):
    """`efficientnet_lite_pytorch`'s model holding the checkpoint, where that
    package is installed; else the shipped reference written from its code."""
    from keras_lightnets.conversion.references.common import holding, library_or_shipped

    variant, classes = int(spec.name[-1]), builder_kwargs["classes"]

    def library():
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_name(f"efficientnet-lite{variant}", num_classes=classes)

    def shipped():
        from keras_lightnets.conversion.references.efficientnet_lite_pytorch import (
            EfficientNetLite,
        )

        return EfficientNetLite(variant, classes)

    return holding(library_or_shipped(library, shipped), tensors)
