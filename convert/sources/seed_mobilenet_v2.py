"""The seeds' MobileNetV2 naming (DeepLabV3+ backbone blog and the light-nets survey).

`features.0` = conv_bn (conv, bn, relu6); blocks `features.N.conv.M` as one
flat Sequential: t = 1: dw 0, bn 1, project 3, bn 4; t = 6: expand 0, bn 1,
dw 3, bn 4, project 6, bn 7; `features.18` = conv_1x1_bn; `classifier.1` Linear.
"""

from convert.sources import _mobilenet_v2

NAME = "seed_v2"
ARCHS = ("mobilenet_v2",)


def detect(keys):
    return "features.0.0.weight" in keys and "features.1.conv.0.weight" in keys


def builder_kwargs(arch, tensors):
    last_block = max(int(k.split(".")[1]) for k in tensors if k.startswith("features.")) - 1
    return {
        "alpha": _mobilenet_v2.infer_alpha(
            tensors["features.0.0.weight"].shape[0],
            tensors[f"features.{last_block}.conv.6.weight"].shape[0],
        ),
        "classes": tensors["classifier.1.weight"].shape[0],
    }


def layer_map(model, keys):
    rows = [("features.0.0", "Conv1"), ("features.0.1", "bn_Conv1")]
    prefixes = _mobilenet_v2.block_prefixes(model)
    for index, prefix in enumerate(prefixes):
        module = f"features.{index + 1}.conv"
        if index == 0:
            convs = [(0, "depthwise"), (1, "depthwise_BN"), (3, "project"), (4, "project_BN")]
        else:
            convs = [
                (0, "expand"), (1, "expand_BN"), (3, "depthwise"),
                (4, "depthwise_BN"), (6, "project"), (7, "project_BN"),
            ]
        rows += [(f"{module}.{i}", prefix + keras_name) for i, keras_name in convs]
    last = len(prefixes) + 1
    rows += [(f"features.{last}.0", "Conv_1"), (f"features.{last}.1", "Conv_1_bn")]
    rows.append(("classifier.1", "predictions"))
    return rows
