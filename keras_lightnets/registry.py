"""The one registry of model specs.

Every model the package offers is one `ModelSpec`: its name (the converter's
`--arch`, the demo's `--model`, the `arch` of a weights record), the Keras
builder that makes it, the input size, the eval preprocessing its weights
expect, the checkpoint namings the converter reads for it, and where its
pretrained weights come from. The public API, the converter's choices, the
demo's choices and pretrained resolution are all derived from `SPECS`.

Adding a model is one spec here, one builder module and its namings.

This module is plain data: it imports neither Keras nor the builders (they
are named as `"module:function"` and imported by `keras_lightnets.catalog`).
"""

import dataclasses

from keras_lightnets.errors import UsageError
from keras_lightnets.models.tables import (
    EFFICIENTNET_LITE_VARIANTS,
    SHUFFLENET_V1_STAGE2_CHANNELS,
    SHUFFLENET_V2_CHANNELS,
    shufflenet_v2_name,
)

# Eval transforms, as each source's own evaluation code does it (see
# `keras_lightnets.preprocessing.image.load_image` for the keys).
# torchvision: Resize(256) (shorter side, bilinear) + CenterCrop(224), ImageNet mean/std.
TORCHVISION_EVAL = {"mode": "torch", "size": 224, "resize": 256, "resample": "bilinear"}
# torchvision's IMAGENET1K_V2 weights (its default MobileNetV3-Large): Resize(232).
TORCHVISION_V2_EVAL = {**TORCHVISION_EVAL, "resize": 232}
# megvii's ShuffleNet: the same geometry, BGR pixels 0-255.
MEGVII_EVAL = {"mode": "bgr", "size": 224, "resize": 256, "resample": "bilinear"}
# keras.applications (seed 004): `load_img(target_size=(224, 224))` (nearest,
# aspect ratio not kept), then `preprocess_input`.
KERAS_EVAL = {"mode": "tf", "size": 224, "resize": "stretch", "resample": "nearest"}
# DeepLab weights (VainF's and jfzhang95's predict): ImageNet mean/std at the
# photo's own size (no crop, no resize).
DEEPLAB_EVAL = {"mode": "torch", "size": None, "resize": None, "resample": "bilinear"}
# torchvision's segmentation weights: SemanticSegmentation(resize_size=520),
# the shorter side resized to 520 (bilinear), nothing cropped.
TORCHVISION_SEGMENTATION_EVAL = {**DEEPLAB_EVAL, "resize": 520}


def _lite_eval(size):
    # The TF reference's evaluation: bicubic resize of a center crop of
    # size / (size + 32), (x - 127) / 128. These weights were ported from TF;
    # on real photos this input gives the confident, right classes
    # (espresso 0.95 vs 0.78 with ImageNet mean/std).
    return {"mode": "lite", "size": size, "crop_fraction": size / (size + 32), "resample": "bicubic"}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model the package builds, converts and can load weights for.

    Attributes:
        name: the arch name (`--arch`, `--model`, the weights record's `arch`).
        builder: `"module:function"` of the Keras builder.
        builder_kwargs: arguments that make the builder build this arch.
        preprocessing: the eval transform of weights converted for this arch.
        namings: checkpoint namings (`keras_lightnets.conversion.namings`)
            the converter accepts for it, tried in this order.
        input_size: default square input size (None: any size).
        task: `"classification"` or `"segmentation"`.
        options: converter options that apply, with their defaults.
        pretrained: names of `keras_lightnets.weights.pretrained.SOURCES` that give
            `weights="imagenet"` for this arch.
    """

    name: str
    builder: str
    builder_kwargs: dict = dataclasses.field(default_factory=dict)
    preprocessing: dict = dataclasses.field(default_factory=lambda: dict(TORCHVISION_EVAL))
    namings: tuple = ()
    input_size: int | None = 224
    task: str = "classification"
    options: dict = dataclasses.field(default_factory=dict)
    pretrained: tuple = ()
    head_layers: tuple = ("predictions",)

    @property
    def builder_module(self):
        return self.builder.split(":")[0]

    @property
    def builder_name(self):
        return self.builder.split(":")[1]


def _deeplab(backbone, namings):
    return ModelSpec(
        f"deeplabv3plus_{backbone}",
        "keras_lightnets.models.deeplab:DeepLabV3Plus",
        {"style": "torch", "input_shape": (None, None, 3), "backbone": backbone},
        DEEPLAB_EVAL,
        tuple(n if "/" in n else f"deeplab/{n}" for n in namings),
        input_size=None,
        task="segmentation",
        # a state_dict does not record the output stride: --output-stride, 16 by default
        options={"output_stride": 16},
        head_layers=("logits",),
    )


_SPECS = (
    ModelSpec(
        "mobilenet_v1",
        "keras_lightnets.models.mobilenet:MobileNet",
        {"style": "torch"},
        namings=("mobilenet_v1/marvis", "mobilenet_v1/timm"),
        pretrained=("keras_mobilenet",),
        head_layers=("conv_preds",),
    ),
    ModelSpec(
        "mobilenet_v2",
        "keras_lightnets.models.mobilenet_v2:MobileNetV2",
        {"style": "torch"},
        namings=(
            "mobilenet_v2/torchvision", "mobilenet_v2/tonylins", "mobilenet_v2/c1_bottleneck", "mobilenet_v2/timm"
        ),
        pretrained=("torchvision_mobilenet_v2", "keras_mobilenet_v2"),
    ),
    *(
        ModelSpec(
            f"efficientnet_lite{variant}",
            f"keras_lightnets.models.efficientnet_lite:EfficientNetLite{variant}",
            preprocessing=_lite_eval(size),
            namings=(
                "efficientnet_lite/efficientnet_lite_pytorch", "efficientnet_lite/timm", "efficientnet_lite/timm_tf"
            ),
            input_size=size,
            pretrained=(f"efficientnet_lite{variant}",) if variant < 3 else (),
        )
        for variant, (_, _, size, _) in EFFICIENTNET_LITE_VARIANTS.items()
    ),
    *(
        ModelSpec(
            f"squeezenet{version}",
            "keras_lightnets.models.squeezenet:SqueezeNet",
            {"version": version},
            namings=("squeezenet/torchvision",),
            head_layers=("conv10",),
        )
        for version in ("1_0", "1_1")
    ),
    *(
        ModelSpec(
            shufflenet_v2_name(width),
            "keras_lightnets.models.shufflenet:ShuffleNetV2",
            {"width": width},
            namings=("shufflenet/torchvision",),
        )
        for width in SHUFFLENET_V2_CHANNELS
    ),
    *(
        ModelSpec(
            f"shufflenet_v1_g{groups}",
            "keras_lightnets.models.shufflenet:ShuffleNetV1",
            {"groups": groups},
            MEGVII_EVAL,
            namings=("shufflenet/megvii",),
        )
        for groups in SHUFFLENET_V1_STAGE2_CHANNELS
    ),
    *(
        ModelSpec(
            f"mobilenet_v3_{size}",
            f"keras_lightnets.models.mobilenet_v3:MobileNetV3{size.title()}",
            {"style": "torch"},
            # torchvision's default weights: IMAGENET1K_V2 for Large, V1 for Small
            TORCHVISION_V2_EVAL if size == "large" else TORCHVISION_EVAL,
            namings=("mobilenet_v3/torchvision", "mobilenet_v3/timm", "mobilenet_v3/timm_tf"),
            pretrained=sources,
            head_layers=("logits",),
        )
        for size, sources in (
            ("large", ("torchvision_mobilenet_v3_large", "torchvision_mobilenet_v3_large_v1",
                       "keras_mobilenet_v3_large")),
            ("small", ("torchvision_mobilenet_v3_small", "keras_mobilenet_v3_small")),
        )
    ),
    *(
        ModelSpec(
            f"{head}_mobilenet_v3_large",
            f"keras_lightnets.models.mobilenet_v3_segmentation:{builder}",
            {"input_shape": (None, None, 3)},
            TORCHVISION_SEGMENTATION_EVAL,
            namings=(f"mobilenet_v3/torchvision_{head}",),
            input_size=None,
            task="segmentation",
            # the layers whose width is the class count (LR-ASPP has two: stride 8 and 16)
            head_layers=("low_classifier", "high_classifier") if head == "lraspp" else ("logits",),
        )
        for head, builder in (("lraspp", "LRASPPMobileNetV3Large"), ("deeplabv3", "DeepLabV3MobileNetV3Large"))
    ),
    _deeplab("mobilenetv2", ("vainf", "vainf_separable", "jfzhang95", "bubbliiiing", "smp", "mobilenet_v2/tonylins")),
    _deeplab("resnet50", ("vainf", "vainf_separable", "jfzhang95", "jfzhang95_legacy", "smp")),
    _deeplab("resnet101", ("vainf", "vainf_separable", "jfzhang95", "jfzhang95_legacy", "smp")),
    _deeplab("xception", ("bubbliiiing", "jfzhang95")),
)

SPECS = {spec.name: spec for spec in _SPECS}

# Builders that are not one arch but a family (their variants are specs).
FAMILY_BUILDERS = {"EfficientNetLite": "keras_lightnets.models.efficientnet_lite"}
# The arch a family builder's arguments select.
FAMILY_ARCHS = {"EfficientNetLite": "efficientnet_lite{variant}"}


def get_spec(name):
    """The spec of arch `name`; a one-line error listing the choices otherwise."""
    try:
        return SPECS[name]
    except (KeyError, TypeError):
        raise UsageError(f"unknown arch {name!r}; choose from {', '.join(SPECS)}") from None


def spec_of(record):
    """The spec of a weights record's arch (a one-line error for an unknown arch)."""
    return get_spec(record.get("arch"))


def task_of(record):
    """`"classification"` or `"segmentation"`: the task of a weights record's arch."""
    return spec_of(record).task


def builder_modules():
    """`{builder function name: module}` for every builder the package exports."""
    modules = {spec.builder_name: spec.builder_module for spec in SPECS.values()}
    return {**modules, **FAMILY_BUILDERS}


def specs_for_builder(builder_name, arguments=None):
    """The specs built by the builder function `builder_name` (for a family
    builder, the one its `arguments` select)."""
    if builder_name in FAMILY_ARCHS:
        arch = FAMILY_ARCHS[builder_name].format(**(arguments or {}))
        return [SPECS[arch]] if arch in SPECS else []
    return [spec for spec in SPECS.values() if spec.builder_name == builder_name]
