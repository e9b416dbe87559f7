"""torchvision.models.mobilenet_v2 naming.

`features.0` stem, `features.1..17` inverted residual blocks whose `conv` is
[ConvBNReLU expand (not in block 1)], ConvBNReLU depthwise, project conv,
project BN; `features.18` last 1x1 ConvBNReLU; `classifier.1` Linear.
"""

from convert.sources import _mobilenet_v2

NAME = "torchvision"
ARCHS = ("mobilenet_v2",)


def detect(keys):
    return "features.0.0.weight" in keys and "features.1.conv.0.0.weight" in keys


def builder_kwargs(arch, tensors):
    last_block = max(int(k.split(".")[1]) for k in tensors if k.startswith("features.")) - 1
    return {
        "alpha": _mobilenet_v2.infer_alpha(
            tensors["features.0.0.weight"].shape[0],
            tensors[f"features.{last_block}.conv.2.weight"].shape[0],
        ),
        "classes": tensors["classifier.1.weight"].shape[0],
    }


def layer_map(model, keys):
    rows = [("features.0.0", "Conv1"), ("features.0.1", "bn_Conv1")]
    prefixes = _mobilenet_v2.block_prefixes(model)
    for index, prefix in enumerate(prefixes):
        module = f"features.{index + 1}.conv"
        if index == 0:
            convs = [("0.0", "depthwise"), ("0.1", "depthwise_BN"), ("1", "project"), ("2", "project_BN")]
        else:
            convs = [
                ("0.0", "expand"), ("0.1", "expand_BN"), ("1.0", "depthwise"),
                ("1.1", "depthwise_BN"), ("2", "project"), ("3", "project_BN"),
            ]
        rows += [(f"{module}.{torch_name}", prefix + keras_name) for torch_name, keras_name in convs]
    last = len(prefixes) + 1
    rows += [(f"features.{last}.0", "Conv_1"), (f"features.{last}.1", "Conv_1_bn")]
    rows.append(("classifier.1", "predictions"))
    return rows
