"""timm's `mobilenetv1_100`, `mobilenetv1_100h` (1x1 head conv) and `mobilenetv1_125`.

`conv_stem`, `bn1`; `blocks.{stage}.{index}` (13 `dsa` blocks: `conv_dw`, `bn1`,
`conv_pw`, `bn2`, each BN followed by ReLU6); `conv_head`, `bn2` (`_100h`
only); `classifier` Linear. PyTorch padding, BN eps 1e-5.
"""

from keras_lightnets.conversion.namings import timm_common

NAME = "timm"
FAMILY = "mobilenet_v1"
detect, builder_kwargs, preprocessing, reference = timm_common.naming_functions(FAMILY)


def layer_map(model, keys):
    keras_names = [
        {"depthwise": f"conv_dw_{i}", "depthwise_bn": f"conv_dw_{i}_bn", "project": f"conv_pw_{i}",
         "project_bn": f"conv_pw_{i}_bn"}
        for i in range(1, len(timm_common.block_modules(keys)) + 1)
    ]
    head = [("conv_head", "conv_head"), ("bn2", "conv_head_bn")] if "conv_head.weight" in keys else []
    return timm_common.layer_rows(keys, ("conv1", "conv1_bn"), keras_names, head, "conv_preds")
