"""VainF/DeepLabV3Plus-Pytorch naming (`{"model_state": ...}` checkpoints).

MobileNetV2: `backbone.low_level_features.0..3` and
`backbone.high_level_features.4..17` (slices of torchvision-style `features`,
keys kept); ResNet: torchvision `backbone.conv1/bn1/layer1..4`. Head:
`classifier.aspp.convs.0..4` (4 = pooling: .1 conv, .2 BN),
`classifier.aspp.project.0/1`, `classifier.project.0/1` (low-level 48),
`classifier.classifier.0/1` (3x3) and `.3` (classes).
"""

from keras_lightnets.conversion.namings.deeplab import common as _deeplab
from keras_lightnets.conversion.namings.mobilenet_v2 import common as _mobilenet_v2

NAME = "vainf"


def detect(keys):
    return (
        "classifier.aspp.convs.0.0.weight" in keys
        and "classifier.classifier.3.weight" in keys
        and "classifier.classifier.0.weight" in keys  # not the separable variant
    )


def builder_kwargs(spec, tensors):
    return {
        **_deeplab.backbone_kwargs(spec, tensors, "backbone"),
        "classes": tensors["classifier.classifier.3.weight"].shape[0],
        "head": "vainf",
    }


def layer_map(model, keys):
    if any(k.startswith("backbone.low_level_features.") for k in keys):
        module_of = lambda i: f"backbone.{'low' if i < 4 else 'high'}_level_features.{i}"  # noqa: E731
        rows = _mobilenet_v2.stem_and_block_rows(model, module_of, _mobilenet_v2.TORCHVISION_BLOCK)
    else:
        rows = _deeplab.resnet_rows(model, "backbone")
    aspp = "classifier.aspp"
    rows += _deeplab.aspp_rows(
        [(f"{aspp}.convs.{i}.0", f"{aspp}.convs.{i}.1") for i in range(4)]
        + [(f"{aspp}.convs.4.1", f"{aspp}.convs.4.2"), (f"{aspp}.project.0", f"{aspp}.project.1")]
    )
    return rows + [
        ("classifier.project.0", "decoder_low_conv"),
        ("classifier.project.1", "decoder_low_conv_bn"),
        ("classifier.classifier.0", "decoder_conv1"),
        ("classifier.classifier.1", "decoder_conv1_bn"),
        ("classifier.classifier.3", "logits"),
    ]


def reference(spec, builder_kwargs, tensors):
    """VainF's `deeplabv3plus_*` holding the checkpoint."""
    from keras_lightnets.conversion.references.common import holding
    from keras_lightnets.conversion.references.vainf import DeepLabV3Plus

    kwargs = builder_kwargs
    separable = kwargs.get("separable", False)
    model = DeepLabV3Plus(kwargs["backbone"], kwargs["classes"], kwargs["output_stride"], separable)
    return holding(model, tensors)
