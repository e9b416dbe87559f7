"""timm's PyTorch-trained `efficientnet_lite0..4` (symmetric padding, BN eps 1e-5).

`conv_stem`, `bn1`; `blocks.0.0` (`ds`: `conv_dw`, `bn1`, `conv_pw`, `bn2`);
`blocks.{1..6}.{index}` (`ir`: `conv_pw`, `bn1`, `conv_dw`, `bn2`, `conv_pwl`,
`bn3`); `conv_head`, `bn2`; `classifier` Linear. timm's TF ports
`tf_efficientnet_lite*` have the same keys and shapes: `timm_tf`.
"""

from keras_lightnets.conversion.namings import timm_common

NAME = "timm"
FAMILY = "efficientnet_lite"
detect, builder_kwargs, preprocessing, reference = timm_common.naming_functions(FAMILY)


def layer_map(model, keys):
    head = [("conv_head", "top_conv"), ("bn2", "top_bn")]
    keras_names = timm_common.keras_blocks(model, "efficientnet")
    return timm_common.layer_rows(keys, ("stem_conv", "stem_bn"), keras_names, head, "predictions")
