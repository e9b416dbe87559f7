"""The seeds' MobileNetV2 naming (DeepLabV3+ backbone blog and the light-nets survey).

`features.0` = conv_bn (conv, bn, relu6); blocks `features.N.conv.M` as one
flat Sequential: t = 1: dw 0, bn 1, project 3, bn 4; t = 6: expand 0, bn 1,
dw 3, bn 4, project 6, bn 7; `features.18` = conv_1x1_bn; `classifier.1` Linear.

For `deeplabv3plus_mobilenetv2` such a checkpoint is the backbone of seed
000's DeepLabV3+ (`features[:-1]`, dilated in place): the backbone is
converted, `features.18` and the classifier stay unused and the DeepLab head
unset, so the conversion needs `--allow-partial` and `--num-classes`.
"""

from keras_lightnets.conversion.namings.mobilenet_v2 import common as _mobilenet_v2

NAME = "tonylins"


def detect(keys):
    return "features.0.0.weight" in keys and "features.1.conv.0.weight" in keys


def builder_kwargs(spec, tensors):
    kwargs = _mobilenet_v2.features_builder_kwargs(tensors, project_conv="6")
    if spec.task == "segmentation":
        # the classifier is ImageNet's, not the segmentation head's
        return {"alpha": kwargs["alpha"], "dilation_schedule": "nostride_dilate"}
    return kwargs


def layer_map(model, keys):
    if model.name.startswith("deeplabv3plus"):
        return _mobilenet_v2.stem_and_block_rows(model, lambda i: f"features.{i}", _mobilenet_v2.FLAT_BLOCK)
    return _mobilenet_v2.features_layer_map(model, _mobilenet_v2.FLAT_BLOCK)


def reference(spec, builder_kwargs, tensors):
    """tonylins' MobileNetV2 holding the checkpoint (classifiers only: a DeepLab
    built from its backbone has a head the checkpoint does not hold)."""
    if spec.task == "segmentation":
        raise ValueError("the checkpoint holds the backbone only, not the whole DeepLabV3+")
    from keras_lightnets.conversion.references.common import holding
    from keras_lightnets.conversion.references.tonylins import MobileNetV2

    return holding(MobileNetV2(builder_kwargs["classes"], builder_kwargs["alpha"]), tensors)
