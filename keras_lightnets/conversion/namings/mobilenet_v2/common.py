"""What the MobileNetV2 namings share: width inference and Keras block prefixes."""

import re

from keras_lightnets.models.tables import MOBILENET_V2_ALPHAS, make_divisible

ALPHAS = MOBILENET_V2_ALPHAS


def infer_alpha(stem_channels, last_block_channels):
    """The width multiplier whose channel plan has these stem/last-block widths."""
    for alpha in ALPHAS:
        if (
            make_divisible(32 * alpha, 8) == stem_channels
            and make_divisible(int(320 * alpha), 8) == last_block_channels
        ):
            return alpha
    raise ValueError(
        f"no MobileNetV2 width has a {stem_channels}-channel stem and a "
        f"{last_block_channels}-channel last block (widths tried: {ALPHAS})"
    )


_BLOCK_DEPTHWISE = re.compile(r"^(expanded_conv_|block_\d+_)depthwise$")


def block_prefixes(model):
    """Keras name prefixes of the inverted residual blocks, in order."""
    from keras import (
        layers,  # here, so that `python -m convert --help` needs no TensorFlow
    )

    return [
        layer.name[: -len("depthwise")]
        for layer in model.layers
        if isinstance(layer, layers.DepthwiseConv2D) and _BLOCK_DEPTHWISE.match(layer.name)
    ]


def features_builder_kwargs(tensors, project_conv):
    """Width and classes of a `features.N` + `classifier.1` checkpoint.

    `project_conv` is the index, inside a block's `conv`, of the projection
    conv of an expanding block ("2" for torchvision, "6" for the seeds).
    """
    last_block = max(int(k.split(".")[1]) for k in tensors if k.startswith("features.")) - 1
    return {
        "alpha": infer_alpha(
            tensors["features.0.0.weight"].shape[0],
            tensors[f"features.{last_block}.conv.{project_conv}.weight"].shape[0],
        ),
        "classes": tensors["classifier.1.weight"].shape[0],
    }


# (torch module inside a block's `conv`, Keras layer suffix), for block 0
# (no expansion) and the expanding blocks.
TORCHVISION_BLOCK = (  # torchvision: ConvBNReLU Sequentials, then project conv and BN
    (("0.0", "depthwise"), ("0.1", "depthwise_BN"), ("1", "project"), ("2", "project_BN")),
    (("0.0", "expand"), ("0.1", "expand_BN"), ("1.0", "depthwise"), ("1.1", "depthwise_BN"),
     ("2", "project"), ("3", "project_BN")),
)
FLAT_BLOCK = (  # one flat Sequential: the seeds, jfzhang95
    (("0", "depthwise"), ("1", "depthwise_BN"), ("3", "project"), ("4", "project_BN")),
    (("0", "expand"), ("1", "expand_BN"), ("3", "depthwise"), ("4", "depthwise_BN"),
     ("6", "project"), ("7", "project_BN")),
)


def stem_and_block_rows(model, module_of, block_table):
    """Stem and block rows; `module_of(i)` is the torch prefix of `features[i]`."""
    rows = [(f"{module_of(0)}.0", "Conv1"), (f"{module_of(0)}.1", "bn_Conv1")]
    for index, prefix in enumerate(block_prefixes(model)):
        table = block_table[0] if index == 0 else block_table[1]
        rows += [(f"{module_of(index + 1)}.conv.{torch}", prefix + keras) for torch, keras in table]
    return rows


def features_layer_map(model, block_table):
    """Rows for the classifiers named `features.N` + `classifier.1` (torchvision, seeds)."""
    rows = stem_and_block_rows(model, lambda i: f"features.{i}", block_table)
    last = len(block_prefixes(model)) + 1
    rows += [(f"features.{last}.0", "Conv_1"), (f"features.{last}.1", "Conv_1_bn")]
    rows.append(("classifier.1", "predictions"))
    return rows
