"""timm's `mobilenetv2_035/050/075/100/140` and the deeper `mobilenetv2_110d`/`_120d`.

`conv_stem`, `bn1`; `blocks.0.0` (`ds`: `conv_dw`, `bn1`, `conv_pw`, `bn2`);
`blocks.{1..6}.{index}` (`ir`: `conv_pw`, `bn1`, `conv_dw`, `bn2`, `conv_pwl`,
`bn3`); `conv_head`, `bn2`; `classifier` Linear. PyTorch padding, BN eps
1e-5. The `d` models scale stages 2-6 by 1.2/1.4 and keep a 32-channel stem
and a 1280-channel head.
"""

from keras_lightnets.conversion.namings import timm_common
from keras_lightnets.conversion.namings.mobilenet_v2 import common as _mobilenet_v2

NAME = "timm"
FAMILY = "mobilenet_v2"
detect, builder_kwargs = timm_common.readers(FAMILY)
preprocessing = timm_common.preprocessing
reference = timm_common.reference


def layer_map(model, keys):
    from keras_lightnets.layers.blocks import block_layer_names

    keras_blocks = [block_layer_names(prefix) for prefix in _mobilenet_v2.block_prefixes(model)]
    rows = [("conv_stem", "Conv1"), ("bn1", "bn_Conv1"), *timm_common.block_rows(keys, keras_blocks)]
    rows += [("conv_head", "Conv_1"), ("bn2", "Conv_1_bn")]
    if "classifier.weight" in keys:
        rows.append(("classifier", "predictions"))
    return rows
