"""timm's `mobilenetv2_035/050/075/100/140` and the deeper `mobilenetv2_110d`/`_120d`.

`conv_stem`, `bn1`; `blocks.0.0` (`ds`: `conv_dw`, `bn1`, `conv_pw`, `bn2`);
`blocks.{1..6}.{index}` (`ir`: `conv_pw`, `bn1`, `conv_dw`, `bn2`, `conv_pwl`,
`bn3`); `conv_head`, `bn2`; `classifier` Linear. PyTorch padding, BN eps
1e-5. The `d` models scale stages 2-6 by 1.2/1.4 and keep a 32-channel stem
and a 1280-channel head.
"""

from keras_lightnets.conversion.namings import timm_common

NAME = "timm"
FAMILY = "mobilenet_v2"
detect, builder_kwargs, preprocessing, reference = timm_common.naming_functions(FAMILY)


def layer_map(model, keys):
    head = [("conv_head", "Conv_1"), ("bn2", "Conv_1_bn")]
    keras_names = timm_common.keras_blocks(model, "mobilenet_v2")
    return timm_common.layer_rows(keys, ("Conv1", "bn_Conv1"), keras_names, head, "predictions")
