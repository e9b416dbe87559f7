"""torchvision.models.mobilenet_v3_large / mobilenet_v3_small naming.

`features.0` stem (conv `.0`, BN `.1`); `features.1..N` inverted residual
blocks whose `block` is [expand ConvBNAct (when its width differs)],
depthwise ConvBNAct, [SqueezeExcitation `fc1`, `fc2`], project ConvBNAct;
`features.N+1` the last 1x1 ConvBNAct; `classifier.0` Linear (Keras
`conv_2`), `classifier.3` Linear (Keras `logits`). Any `width_mult`.
"""

from keras_lightnets.conversion.namings.mobilenet_v3 import common as _mobilenet_v3

NAME = "torchvision"


def detect(keys):
    return "features.0.0.weight" in keys and "features.1.block.0.0.weight" in keys


def _size(spec):
    return spec.name.rpartition("_")[2]


def builder_kwargs(spec, tensors):
    return {
        "alpha": _mobilenet_v3.infer_width(_size(spec), tensors, "features", "classifier.0.weight"),
        "classes": tensors["classifier.3.weight"].shape[0],
    }


def layer_map(model, keys):
    return _mobilenet_v3.backbone_rows(model, "features") + [("classifier.0", "conv_2"), ("classifier.3", "logits")]


def reference(spec, builder_kwargs, tensors):
    """torchvision's MobileNetV3 (`keras_lightnets.conversion.references`) holding the checkpoint."""
    from keras_lightnets.conversion.references.torchvision.mobilenet_v3 import (
        MobileNetV3,
    )

    model = MobileNetV3(_size(spec), builder_kwargs["classes"], builder_kwargs["alpha"])
    return _mobilenet_v3.load_reference(model, tensors)
