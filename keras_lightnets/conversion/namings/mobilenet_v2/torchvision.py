"""torchvision.models.mobilenet_v2 naming.

`features.0` stem, `features.1..17` inverted residual blocks whose `conv` is
[ConvBNReLU expand (not in block 1)], ConvBNReLU depthwise, project conv,
project BN; `features.18` last 1x1 ConvBNReLU; `classifier.1` Linear.
"""

from keras_lightnets.conversion.namings.mobilenet_v2 import common as _mobilenet_v2

NAME = "torchvision"


def detect(keys):
    return "features.0.0.weight" in keys and "features.1.conv.0.0.weight" in keys


def builder_kwargs(spec, tensors):
    return _mobilenet_v2.features_builder_kwargs(tensors, project_conv="2")


def layer_map(model, keys):
    return _mobilenet_v2.features_layer_map(model, _mobilenet_v2.TORCHVISION_BLOCK)


def reference(spec, builder_kwargs, tensors):
    """torchvision's `mobilenet_v2` holding the checkpoint (torchvision's own where installed)."""
    from keras_lightnets.conversion.references.common import holding, library_or_shipped

    def library():
        from torchvision.models import mobilenet_v2

        return mobilenet_v2(weights=None, width_mult=builder_kwargs["alpha"], num_classes=builder_kwargs["classes"])

    def shipped():
        from keras_lightnets.conversion.references.torchvision.mobilenet_v2 import (
            MobileNetV2,
        )

        return MobileNetV2(builder_kwargs["classes"], builder_kwargs["alpha"])

    return holding(library_or_shipped(library, shipped), tensors)
