"""EfficientNet-Lite naming of `efficientnet_lite_pytorch` (lukemelas-style).

`_conv_stem`, `_bn0`; `_blocks.N._expand_conv` (absent when t = 1), `_bn0`,
`_depthwise_conv`, `_bn1`, `_project_conv`, `_bn2`; `_conv_head`, `_bn1`; `_fc`.
"""

from keras import layers

NAME = "efficientnet_lite"
ARCHS = tuple(f"efficientnet_lite{v}" for v in range(5))


def detect(keys):
    return "_conv_stem.weight" in keys and "_blocks.0._depthwise_conv.weight" in keys


def builder_kwargs(arch, tensors):
    return {"classes": tensors["_fc.weight"].shape[0]}


def layer_map(model, keys):
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
