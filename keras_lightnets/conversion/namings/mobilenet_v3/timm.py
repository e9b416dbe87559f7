"""timm's PyTorch-trained `mobilenetv3_*` (symmetric padding, BN eps 1e-5).

`mobilenetv3_large_075/100`, `mobilenetv3_small_050/075/100`:
`conv_stem`, `bn1`; `blocks.0.0` (`ds`: `conv_dw`, `bn1`, [`se`], `conv_pw`,
`bn2`); `blocks.{1..}.{index}` (`ir`: `conv_pw`, `bn1`, `conv_dw`, `bn2`,
[`se.conv_reduce`, `se.conv_expand`], `conv_pwl`, `bn3`); the last stage's
`cn` block (`conv`, `bn1`: Keras `conv_1`); `conv_head` (with bias, after the
pooling: Keras `conv_2`); `classifier` Linear (Keras `logits`). timm's TF
ports `tf_mobilenetv3_*` have the same keys: `timm_tf`.
"""

from keras_lightnets.conversion.namings import timm_common

NAME = "timm"
FAMILY = "mobilenet_v3"
detect, builder_kwargs, preprocessing, reference = timm_common.naming_functions(FAMILY)


def layer_map(model, keys):
    last = next(prefix for prefix, kind in timm_common.block_modules(keys) if kind == "cn")
    head = [(f"{last}.conv", "conv_1"), (f"{last}.bn1", "conv_1_bn"), ("conv_head", "conv_2")]
    keras_names = timm_common.keras_blocks(model, "mobilenet_v3")
    return timm_common.layer_rows(keys, ("conv", "conv_bn"), keras_names, head, "logits")
