"""segmentation_models_pytorch `DeepLabV3Plus` naming (`torch.save(model.state_dict())`).

Encoder `encoder.*` in its network's own naming: MobileNetV2
`encoder.features.0..18` (torchvision's, the last 1x1 conv included, no
classifier), ResNet `encoder.conv1/bn1/layer1..4` (torchvision's, no `fc`).
Decoder: `decoder.aspp.0.convs.0` (1x1 conv, BN), `convs.1..3` (separable:
`.0.0` depthwise, `.0.1` pointwise, `.1` BN), `convs.4` pooling (`.1` conv,
`.2` BN), `decoder.aspp.0.project.0/1`, then `decoder.aspp.1.0/1` (separable
3x3) and `decoder.aspp.2` (BN); `decoder.block1.0/1` (48-channel 1x1 on the
stride-4 features), `decoder.block2.0.0/0.1/1` (separable 3x3, BN);
`segmentation_head.0` (1x1 conv with bias).

smp refuses inputs whose sides are not multiples of the output stride; the
Keras model runs them too (its resizes go to the stride-4 map's and the
image's size), giving what smp gives on every size smp accepts.
"""

from keras_lightnets.conversion.namings.deeplab import common as _deeplab
from keras_lightnets.conversion.namings.mobilenet_v2 import common as _mobilenet_v2

NAME = "smp"
# smp's encoder_name of each backbone
ENCODERS = {"mobilenetv2": "mobilenet_v2", "resnet50": "resnet50", "resnet101": "resnet101"}
# The parity check's inputs: sides divisible by the output stride, as smp requires.
INPUT_MULTIPLE = 16
_BACKBONE_KEYS = {"mobilenetv2": "encoder.features.0.0.weight", "resnet": "encoder.layer1.0.conv1.weight"}


def detect(keys):
    return "decoder.aspp.0.convs.0.0.weight" in keys and "segmentation_head.0.weight" in keys


def checkpoint_backbone(keys):
    """`"mobilenetv2"`, `"resnet"` (any depth) or None."""
    return next((name for name, key in _BACKBONE_KEYS.items() if key in keys), None)


def builder_kwargs(spec, tensors):
    backbone, found = spec.builder_kwargs["backbone"], checkpoint_backbone(tensors)
    if found is None or not backbone.startswith(found):
        raise ValueError(f"the checkpoint's encoder is {found or 'unknown'}, not {backbone} (wrong --arch?)")
    kwargs = {
        **_deeplab.backbone_kwargs(spec, tensors, "encoder"),
        "classes": tensors["segmentation_head.0.weight"].shape[0],
        "head": "smp",
    }
    if backbone == "mobilenetv2":
        kwargs["alpha"] = _mobilenet_v2.infer_alpha(
            tensors["encoder.features.0.0.weight"].shape[0], tensors["encoder.features.17.conv.2.weight"].shape[0]
        )
    return kwargs


def layer_map(model, keys):
    if checkpoint_backbone(keys) == "mobilenetv2":
        module_of = lambda i: f"encoder.features.{i}"  # noqa: E731
        rows = _mobilenet_v2.stem_and_block_rows(model, module_of, _mobilenet_v2.TORCHVISION_BLOCK)
        rows += [("encoder.features.18.0", "Conv_1"), ("encoder.features.18.1", "Conv_1_bn")]
    else:
        rows = _deeplab.resnet_rows(model, "encoder")
    aspp = "decoder.aspp.0"
    rows += [(f"{aspp}.convs.0.0", "aspp_conv0"), (f"{aspp}.convs.0.1", "aspp_conv0_bn")]
    for index in (1, 2, 3):
        rows += separable_rows(f"{aspp}.convs.{index}.0", f"{aspp}.convs.{index}.1", f"aspp_conv{index}")
    rows += [
        (f"{aspp}.convs.4.1", "aspp_pool_conv"), (f"{aspp}.convs.4.2", "aspp_pool_conv_bn"),
        (f"{aspp}.project.0", "aspp_project"), (f"{aspp}.project.1", "aspp_project_bn"),
    ]
    rows += separable_rows("decoder.aspp.1", "decoder.aspp.2", "aspp_sepconv")
    rows += [("decoder.block1.0", "decoder_low_conv"), ("decoder.block1.1", "decoder_low_conv_bn")]
    rows += separable_rows("decoder.block2.0", "decoder.block2.1", "decoder_conv1")
    return rows + [("segmentation_head.0", "logits")]


def separable_rows(separable, bn, layer):
    """smp's `SeparableConv2d` (`.0` depthwise, `.1` pointwise) and its BN → `separable_conv_block` layers."""
    return [(f"{separable}.0", f"{layer}_depthwise"), (f"{separable}.1", layer), (bn, f"{layer}_bn")]


def reference(spec, builder_kwargs, tensors):
    """smp's DeepLabV3Plus holding the checkpoint: segmentation_models_pytorch's own
    when it is installed, else `keras_lightnets.conversion.references.smp`."""
    from keras_lightnets.conversion.references import smp
    from keras_lightnets.conversion.references.common import holding, library_or_shipped

    if builder_kwargs.get("alpha", 1.0) != 1.0:
        raise ValueError(f"smp builds MobileNetV2 at width 1.0 only, not {builder_kwargs['alpha']}")
    options = {
        "encoder_name": ENCODERS[builder_kwargs["backbone"]],
        "encoder_output_stride": builder_kwargs["output_stride"],
        "classes": builder_kwargs["classes"],
    }

    def library():
        import segmentation_models_pytorch

        return segmentation_models_pytorch.DeepLabV3Plus(encoder_weights=None, **options)

    return holding(library_or_shipped(library, lambda: smp.DeepLabV3Plus(**options)), tensors)
