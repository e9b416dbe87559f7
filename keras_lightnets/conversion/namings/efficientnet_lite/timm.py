"""timm's PyTorch-trained `efficientnet_lite0..4` (symmetric padding, BN eps 1e-5).

`conv_stem`, `bn1`; `blocks.0.0` (`ds`: `conv_dw`, `bn1`, `conv_pw`, `bn2`);
`blocks.{1..6}.{index}` (`ir`: `conv_pw`, `bn1`, `conv_dw`, `bn2`, `conv_pwl`,
`bn3`); `conv_head`, `bn2`; `classifier` Linear. timm's TF ports
`tf_efficientnet_lite*` have the same keys and shapes: `timm_tf`.
"""

from keras_lightnets.conversion.namings import timm_common

NAME = "timm"
FAMILY = "efficientnet_lite"
detect, builder_kwargs = timm_common.readers(FAMILY)
preprocessing = timm_common.preprocessing
reference = timm_common.reference


def layer_map(model, keys):
    from keras import (
        layers,  # here, so that `python -m convert --help` needs no TensorFlow
    )

    from keras_lightnets.layers.blocks import block_layer_names

    prefixes = [layer.name[: -len("dwconv")] for layer in model.layers if isinstance(layer, layers.DepthwiseConv2D)]
    keras_blocks = [block_layer_names(prefix, "efficientnet") for prefix in prefixes]
    rows = [("conv_stem", "stem_conv"), ("bn1", "stem_bn"), *timm_common.block_rows(keys, keras_blocks)]
    rows += [("conv_head", "top_conv"), ("bn2", "top_bn")]
    if "classifier.weight" in keys:
        rows.append(("classifier", "predictions"))
    return rows
