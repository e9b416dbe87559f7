"""torchvision.models.segmentation.deeplabv3_mobilenet_v3_large naming.

`backbone.0..16`: the dilated MobileNetV3-Large `features`; `classifier.0`
the ASPP (`convs.0..3` conv + BN, `convs.4` pooling: `.1` conv, `.2` BN,
`project.0/1`), `classifier.1/2` the 3x3 conv + BN, `classifier.4` the
logits. `aux_classifier.*` (the FCN head on the stride-8 features that
torchvision's published weights carry) is a training loss: the Keras model
is torchvision's `"out"`, and those tensors are left out by design.
"""

from keras_lightnets.conversion.namings.deeplab import common as _deeplab
from keras_lightnets.conversion.namings.mobilenet_v3 import common as _mobilenet_v3

NAME = "torchvision_deeplabv3"
UNUSED_BY_DESIGN = {"aux_classifier.": "torchvision's auxiliary FCN head, a training loss; the output is 'out'"}


def detect(keys):
    return "classifier.0.convs.0.0.weight" in keys and "backbone.1.block.0.0.weight" in keys


def builder_kwargs(spec, tensors):
    _mobilenet_v3.check_segmentation_backbone(tensors)
    return {"classes": tensors["classifier.4.weight"].shape[0]}


def layer_map(model, keys):
    aspp = "classifier.0"
    return (
        _mobilenet_v3.backbone_rows(model, "backbone")
        + _deeplab.aspp_rows(
            [(f"{aspp}.convs.{i}.0", f"{aspp}.convs.{i}.1") for i in range(4)]
            + [(f"{aspp}.convs.4.1", f"{aspp}.convs.4.2"), (f"{aspp}.project.0", f"{aspp}.project.1")]
        )
        + [("classifier.1", "head_conv"), ("classifier.2", "head_conv_bn"), ("classifier.4", "logits")]
    )


def reference(spec, builder_kwargs, tensors):
    """torchvision's DeepLabV3 (`keras_lightnets.conversion.references`) holding the checkpoint
    (with its aux head when the checkpoint has one)."""
    from keras_lightnets.conversion.references.torchvision.segmentation import (
        DeepLabV3MobileNetV3Large,
    )

    aux = any(key.startswith("aux_classifier.") for key in tensors)
    return _mobilenet_v3.load_reference(DeepLabV3MobileNetV3Large(builder_kwargs["classes"], aux), tensors)
