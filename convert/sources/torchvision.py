"""torchvision.models.mobilenet_v2 naming.

`features.0` stem, `features.1..17` inverted residual blocks whose `conv` is
[ConvBNReLU expand (not in block 1)], ConvBNReLU depthwise, project conv,
project BN; `features.18` last 1x1 ConvBNReLU; `classifier.1` Linear.
"""

from convert.sources import _mobilenet_v2

NAME = "torchvision"
ARCHS = ("mobilenet_v2",)


def detect(keys):
    return "features.0.0.weight" in keys and "features.1.conv.0.0.weight" in keys


FIRST_BLOCK = (("0.0", "depthwise"), ("0.1", "depthwise_BN"), ("1", "project"), ("2", "project_BN"))
BLOCK = (
    ("0.0", "expand"), ("0.1", "expand_BN"), ("1.0", "depthwise"),
    ("1.1", "depthwise_BN"), ("2", "project"), ("3", "project_BN"),
)


def builder_kwargs(arch, tensors):
    return _mobilenet_v2.features_builder_kwargs(tensors, project_conv="2")


def layer_map(model, keys):
    return _mobilenet_v2.features_layer_map(model, FIRST_BLOCK, BLOCK)
