"""torchvision.models.segmentation.lraspp_mobilenet_v3_large naming.

`backbone.0..16`: the dilated MobileNetV3-Large `features` (torchvision's
naming, without `features.`); `classifier.cbr.0/1` (1x1 conv, BN),
`classifier.scale.1` (the gate's 1x1 conv), `classifier.low_classifier`,
`classifier.high_classifier`.
"""

from keras_lightnets.conversion.namings.mobilenet_v3 import common as _mobilenet_v3

NAME = "torchvision_lraspp"


def detect(keys):
    return "classifier.cbr.0.weight" in keys and "backbone.1.block.0.0.weight" in keys


def builder_kwargs(spec, tensors):
    _mobilenet_v3.check_segmentation_backbone(tensors)
    return {"classes": tensors["classifier.low_classifier.weight"].shape[0]}


def layer_map(model, keys):
    return _mobilenet_v3.backbone_rows(model, "backbone") + [
        ("classifier.cbr.0", "lraspp_cbr"),
        ("classifier.cbr.1", "lraspp_cbr_bn"),
        ("classifier.scale.1", "lraspp_scale_conv"),
        ("classifier.low_classifier", "low_classifier"),
        ("classifier.high_classifier", "high_classifier"),
    ]


def reference(spec, builder_kwargs, tensors):
    """torchvision's LR-ASPP (`keras_lightnets.conversion.references`) holding the checkpoint."""
    from keras_lightnets.conversion.references.torchvision.segmentation import (
        LRASPPMobileNetV3Large,
    )

    return _mobilenet_v3.load_reference(LRASPPMobileNetV3Large(builder_kwargs["classes"]), tensors)
