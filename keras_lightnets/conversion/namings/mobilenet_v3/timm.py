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
detect, builder_kwargs = timm_common.readers(FAMILY)
preprocessing = timm_common.preprocessing
reference = timm_common.reference


def layer_map(model, keys):
    from keras import (
        layers,  # here, so that `python -m convert --help` needs no TensorFlow
    )

    from keras_lightnets.layers.blocks import block_layer_names

    prefixes = [layer.name[: -len("depthwise")] for layer in model.layers if isinstance(layer, layers.DepthwiseConv2D)]
    keras_blocks = [block_layer_names(prefix, "mobilenet_v3") for prefix in prefixes]
    last = next(prefix for prefix, kind in timm_common.block_modules(keys) if kind == "cn")
    rows = [("conv_stem", "conv"), ("bn1", "conv_bn"), *timm_common.block_rows(keys, keras_blocks)]
    rows += [(f"{last}.conv", "conv_1"), (f"{last}.bn1", "conv_1_bn"), ("conv_head", "conv_2")]
    if "classifier.weight" in keys:
        rows.append(("classifier", "logits"))
    return rows
