"""timm's `mobilenetv1_100`, `mobilenetv1_100h` (1x1 head conv) and `mobilenetv1_125`.

`conv_stem`, `bn1`; `blocks.{stage}.{index}` (13 `dsa` blocks: `conv_dw`, `bn1`,
`conv_pw`, `bn2`, each BN followed by ReLU6); `conv_head`, `bn2` (`_100h`
only); `classifier` Linear. PyTorch padding, BN eps 1e-5.
"""

from keras_lightnets.conversion.namings import timm_common

NAME = "timm"
FAMILY = "mobilenet_v1"
detect, builder_kwargs = timm_common.readers(FAMILY)
preprocessing = timm_common.preprocessing
reference = timm_common.reference


def layer_map(model, keys):
    rows = [("conv_stem", "conv1"), ("bn1", "conv1_bn")]
    for block_id, (prefix, _) in enumerate(timm_common.block_modules(keys), start=1):
        rows += [
            (f"{prefix}.conv_dw", f"conv_dw_{block_id}"),
            (f"{prefix}.bn1", f"conv_dw_{block_id}_bn"),
            (f"{prefix}.conv_pw", f"conv_pw_{block_id}"),
            (f"{prefix}.bn2", f"conv_pw_{block_id}_bn"),
        ]
    if "conv_head.weight" in keys:
        rows += [("conv_head", "conv_head"), ("bn2", "conv_head_bn")]
    if "classifier.weight" in keys:
        rows.append(("classifier", "conv_preds"))
    return rows
