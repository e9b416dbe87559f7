"""The layer-by-layer MobileNetV2 naming (seed 002).

`c1`, `bottleneck1..7.stack.N.{exp,depthwise,pointwise}`, `c2`, each a
ConvBNRelu whose Sequential is `layers2` (conv 0, bn 1); `c3` is a 1x1 conv
classifier with bias. Every block, the first (t = 1) included, has the 1x1
expansion conv, so the Keras model is built with `expand_first_block=True`.
"""

from keras_lightnets.conversion.namings.mobilenet_v2 import common as _mobilenet_v2

NAME = "c1_bottleneck"


def detect(keys):
    return "c1.layers2.0.weight" in keys and "bottleneck1.stack.0.exp.layers2.0.weight" in keys


def builder_kwargs(spec, tensors):
    return {
        "alpha": _mobilenet_v2.infer_alpha(
            tensors["c1.layers2.0.weight"].shape[0],
            tensors["bottleneck7.stack.0.pointwise.layers2.0.weight"].shape[0],
        ),
        "classes": tensors["c3.weight"].shape[0],
        "expand_first_block": True,
    }


def _torch_blocks(keys):
    """`bottleneck{i}.stack.{j}` module names, in network order."""
    blocks = {tuple(k.split(".")[:3]) for k in keys if k.startswith("bottleneck")}
    return [".".join(b) for b in sorted(blocks, key=lambda b: (int(b[0][10:]), int(b[2])))]


def layer_map(model, keys):
    rows = [("c1.layers2.0", "Conv1"), ("c1.layers2.1", "bn_Conv1")]
    parts = [("exp", "expand"), ("depthwise", "depthwise"), ("pointwise", "project")]
    for module, prefix in zip(_torch_blocks(keys), _mobilenet_v2.block_prefixes(model)):
        for torch_part, keras_part in parts:
            rows.append((f"{module}.{torch_part}.layers2.0", prefix + keras_part))
            rows.append((f"{module}.{torch_part}.layers2.1", prefix + keras_part + "_BN"))
    rows += [("c2.layers2.0", "Conv_1"), ("c2.layers2.1", "Conv_1_bn"), ("c3", "predictions")]
    return rows


def reference(spec, builder_kwargs, tensors):
    """The layer-by-layer MobileNetV2 holding the checkpoint (width 1.0 only, as its code)."""
    if builder_kwargs["alpha"] != 1.0:
        raise ValueError(f"its code builds width 1.0 only, the checkpoint has width {builder_kwargs['alpha']}")
    from keras_lightnets.conversion.references.c1_bottleneck import MobileNetV2
    from keras_lightnets.conversion.references.common import holding

    return holding(MobileNetV2(builder_kwargs["classes"]), tensors)
