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
