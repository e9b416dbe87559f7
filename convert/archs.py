"""The architectures the converter knows: Keras builder, namings, preprocessing."""

import dataclasses

from keras_lightnets.efficientnet_lite import EFFICIENTNET_LITE_VARIANTS

# torchvision's ImageNet evaluation: Resize(256) + CenterCrop(224), mean/std.
TORCH_IMAGENET_224 = {"mode": "torch", "size": 224, "crop_fraction": 0.875, "resample": "bilinear"}


@dataclasses.dataclass(frozen=True)
class Arch:
    builder: str  # a model builder of keras_lightnets
    namings: tuple  # checkpoint namings (convert.sources) this arch accepts
    preprocessing: dict  # how the PyTorch weights expect their input
    builder_kwargs: dict = dataclasses.field(default_factory=dict)
    reference: str | None = None  # a pip-installable PyTorch implementation, for parity


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


ARCHS = {
    "mobilenet_v1": Arch("MobileNet", ("seed_v1",), TORCH_IMAGENET_224, {"style": "torch"}),
    "mobilenet_v2": Arch(
        "MobileNetV2", ("torchvision", "seed_v2", "seed_v2_layers"), TORCH_IMAGENET_224,
        {"style": "torch"},
    ),
    **{f"efficientnet_lite{v}": _efficientnet_lite(v) for v in EFFICIENTNET_LITE_VARIANTS},
}
