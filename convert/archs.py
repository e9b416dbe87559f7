"""The architectures the converter knows: Keras builder, namings, preprocessing."""

import dataclasses

from keras_lightnets.efficientnet_lite import EFFICIENTNET_LITE_VARIANTS
from keras_lightnets.shufflenet import (
    SHUFFLENET_V1_STAGE2_CHANNELS,
    SHUFFLENET_V2_CHANNELS,
    shufflenet_v2_name,
)

# torchvision's ImageNet evaluation: Resize(256) + CenterCrop(224), mean/std.
TORCH_IMAGENET_224 = {"mode": "torch", "size": 224, "crop_fraction": 0.875, "resample": "bilinear"}
# megvii's ShuffleNet evaluation: Resize(256) + CenterCrop(224), BGR pixels 0-255.
MEGVII_BGR_224 = {"mode": "bgr", "size": 224, "crop_fraction": 0.875, "resample": "bilinear"}


@dataclasses.dataclass(frozen=True)
class Arch:
    builder: str  # a model builder of keras_lightnets
    namings: tuple  # checkpoint namings (convert.sources) this arch accepts
    preprocessing: dict  # how the PyTorch weights expect their input
    builder_kwargs: dict = dataclasses.field(default_factory=dict)
    reference: str | None = None  # a pip-installable PyTorch implementation, for parity
    options: dict = dataclasses.field(default_factory=dict)  # CLI builder options → default


def _efficientnet_lite(variant):
    size = EFFICIENTNET_LITE_VARIANTS[variant][2]
    return Arch(
        builder=f"EfficientNetLite{variant}",
        namings=("efficientnet_lite",),
        # The TF reference's evaluation: bicubic resize of a center crop of
        # size / (size + 32), (x - 127) / 128. These weights were ported from
        # TF; on real photos this input gives the confident, right classes
        # (espresso 0.95 vs 0.78 with ImageNet mean/std).
        preprocessing={
            "mode": "lite",
            "size": size,
            "crop_fraction": size / (size + 32),
            "resample": "bicubic",
        },
        reference=f"efficientnet_lite_pytorch:efficientnet-lite{variant}",
    )


# DeepLab weights: ImageNet mean/std at the photo's own size (no crop, no resize).
TORCH_IMAGENET_FULL_SIZE = {"mode": "torch", "size": None, "crop_fraction": None, "resample": "bilinear"}


def _deeplab(backbone, namings):
    return Arch(
        "DeepLabV3Plus", namings, TORCH_IMAGENET_FULL_SIZE,
        {"style": "torch", "input_shape": (None, None, 3), "backbone": backbone},
        # a state_dict does not record the output stride: --output-stride, 16 by default
        options={"output_stride": 16},
    )


ARCHS = {
    "mobilenet_v1": Arch("MobileNet", ("seed_v1",), TORCH_IMAGENET_224, {"style": "torch"}),
    "mobilenet_v2": Arch(
        "MobileNetV2", ("torchvision", "seed_v2", "seed_v2_layers"), TORCH_IMAGENET_224,
        {"style": "torch"},
    ),
    **{f"efficientnet_lite{v}": _efficientnet_lite(v) for v in EFFICIENTNET_LITE_VARIANTS},
    **{
        f"squeezenet{version}": Arch(
            "SqueezeNet", ("torchvision_squeezenet",), TORCH_IMAGENET_224, {"version": version}
        )
        for version in ("1_0", "1_1")
    },
    **{
        shufflenet_v2_name(width): Arch(
            "ShuffleNetV2", ("torchvision_shufflenet_v2",), TORCH_IMAGENET_224, {"width": width}
        )
        for width in SHUFFLENET_V2_CHANNELS
    },
    **{
        f"shufflenet_v1_g{groups}": Arch(
            "ShuffleNetV1", ("megvii_shufflenet_v1",), MEGVII_BGR_224, {"groups": groups}
        )
        for groups in SHUFFLENET_V1_STAGE2_CHANNELS
    },
    "deeplabv3plus_mobilenetv2": _deeplab("mobilenetv2", ("vainf", "vainf_separable", "jfzhang95", "seed_v2")),
    "deeplabv3plus_resnet50": _deeplab("resnet50", ("vainf", "vainf_separable", "jfzhang95", "seed_deeplab")),
    "deeplabv3plus_resnet101": _deeplab("resnet101", ("vainf", "vainf_separable", "jfzhang95", "seed_deeplab")),
}
