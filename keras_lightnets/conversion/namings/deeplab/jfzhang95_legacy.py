"""The seed 003 DeepLabV3+ (ResNet-101) naming.

`resnet_features.*` (torchvision ResNet keys), `aspp1..4.atrous_convolution/bn`,
`global_avg_pool.1/2`, `conv1/bn1` (ASPP projection), `conv2/bn2` (low-level
48), `last_conv.0, 1, 3, 4, 6`. Its output-stride-8 dilations differ from
jfzhang95's (`dilation_schedule="first_block_multigrid"`).
"""

from keras_lightnets.conversion.namings.deeplab import common as _deeplab
from keras_lightnets.conversion.namings.deeplab import jfzhang95

NAME = "jfzhang95_legacy"


def detect(keys):
    return "resnet_features.conv1.weight" in keys and "aspp1.atrous_convolution.weight" in keys


def builder_kwargs(spec, tensors):
    logits = jfzhang95.last_conv_indices(tensors, "last_conv")[-1]
    return {
        **_deeplab.backbone_kwargs(spec, tensors, "resnet_features"),
        "classes": tensors[f"last_conv.{logits}.weight"].shape[0],
        "head": "jfzhang95",
        "dilation_schedule": "first_block_multigrid",
    }


def layer_map(model, keys):
    rows = _deeplab.resnet_rows(model, "resnet_features")
    rows += _deeplab.aspp_rows(
        [(f"aspp{i}.atrous_convolution", f"aspp{i}.bn") for i in range(1, 5)]
        + [("global_avg_pool.1", "global_avg_pool.2"), ("conv1", "bn1")]
    )
    return rows + jfzhang95.decoder_rows(keys, "conv2", "bn2", "last_conv")


def reference(spec, builder_kwargs, tensors):
    """The early `DeepLabv3_plus` holding the checkpoint."""
    from keras_lightnets.conversion.references.common import holding
    from keras_lightnets.conversion.references.jfzhang95_legacy import DeepLabV3Plus

    depth = int(builder_kwargs["backbone"][len("resnet"):])
    return holding(DeepLabV3Plus(builder_kwargs["classes"], builder_kwargs["output_stride"], depth), tensors)
