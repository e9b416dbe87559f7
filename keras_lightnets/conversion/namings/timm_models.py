"""timm's mobile networks as data: their architecture, their Keras arch, their eval transform.

timm (pytorch-image-models) builds MobileNet v1 and V2, EfficientNet-Lite and
MobileNetV3 with one EfficientNet builder from tables of block strings
(`ir_r2_k3_s2_e6_c24`: inverted residual, 2 repeats, kernel 3, stride 2,
expansion 6, 24 channels). `TIMM_MODELS` holds each supported model's
table and scaling as timm 1.0 registers them; `resolve_blocks` turns one into
concrete widths, `state_shapes` into the shapes of its state_dict, and
`identify` finds the models whose state_dict a checkpoint is.

`timm_arch` maps timm's `architecture` (a snapshot's config.json) to the
registry arch and builder arguments that rebuild it in Keras, and
`preprocessing_from_timm_cfg` turns a `pretrained_cfg` into the eval
transform of a weights record.

Plain data and functions: neither Keras nor torch is imported.
"""

import dataclasses
import math
import re

from keras_lightnets import registry
from keras_lightnets.models.tables import make_divisible

# ---------------------------------------------------------------- architectures

MOBILENET_V1 = (("dsa_r1_k3_s1_c64",), ("dsa_r2_k3_s2_c128",), ("dsa_r2_k3_s2_c256",),
                ("dsa_r6_k3_s2_c512",), ("dsa_r2_k3_s2_c1024",))
MOBILENET_V2 = (("ds_r1_k3_s1_c16",), ("ir_r2_k3_s2_e6_c24",), ("ir_r3_k3_s2_e6_c32",), ("ir_r4_k3_s2_e6_c64",),
                ("ir_r3_k3_s1_e6_c96",), ("ir_r3_k3_s2_e6_c160",), ("ir_r1_k3_s1_e6_c320",))
EFFICIENTNET_LITE = (("ds_r1_k3_s1_e1_c16",), ("ir_r2_k3_s2_e6_c24",), ("ir_r2_k5_s2_e6_c40",),
                     ("ir_r3_k3_s2_e6_c80",), ("ir_r3_k5_s1_e6_c112",), ("ir_r4_k5_s2_e6_c192",),
                     ("ir_r1_k3_s1_e6_c320",))
MOBILENET_V3_LARGE = (
    ("ds_r1_k3_s1_e1_c16_nre",),
    ("ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"),
    ("ir_r3_k5_s2_e3_c40_se0.25_nre",),
    ("ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e2.5_c80", "ir_r2_k3_s1_e2.3_c80"),
    ("ir_r2_k3_s1_e6_c112_se0.25",),
    ("ir_r3_k5_s2_e6_c160_se0.25",),
    ("cn_r1_k1_s1_c960",),
)
MOBILENET_V3_SMALL = (
    ("ds_r1_k3_s2_e1_c16_se0.25_nre",),
    ("ir_r1_k3_s2_e4.5_c24_nre", "ir_r1_k3_s1_e3.67_c24_nre"),
    ("ir_r1_k5_s2_e4_c40_se0.25", "ir_r2_k5_s1_e6_c40_se0.25"),
    ("ir_r2_k5_s1_e3_c48_se0.25",),
    ("ir_r3_k5_s2_e6_c96_se0.25",),
    ("cn_r1_k1_s1_c576",),
)


def minimal(arch):
    """timm's `minimal` MobileNetV3 tables: every kernel 3, no squeeze-excite, no activation overrides."""
    strip = re.compile(r"_(se[\d.]+|nre|nhs)")
    return tuple(tuple(strip.sub("", re.sub(r"_k5_", "_k3_", row)) for row in stage) for stage in arch)


@dataclasses.dataclass(frozen=True)
class TimmConfig:
    """One timm model: its table and how timm scales and builds it.

    Attributes:
        family: `"mobilenet_v1"`, `"mobilenet_v2"`, `"efficientnet_lite"` or `"mobilenet_v3"`.
        arch: stages of block strings.
        act: the default activation (`"relu6"`, `"hard_swish"`, `"relu"`).
        multiplier: width multiplier (`make_divisible(c * multiplier)`).
        depth: depth multiplier of each stage's block count (`ceil`).
        fix_first_last: the first and last stages keep their depth.
        stem, fix_stem: stem channels, and whether the multiplier leaves them.
        head: head conv channels (0: none), `max(head, scaled)` if `scale_head`.
        head_kind: `"efficientnet"` (conv + BN + act on the map, then pooling)
            or `"mobilenetv3"` (pooling, then a conv with bias + act, no BN).
        tf: timm's `tf_` port: TF "same" padding and BN eps 1e-3 (else
            PyTorch's symmetric padding and eps 1e-5).
        size: MobileNetV3's `"large"` or `"small"`.
    """

    family: str
    arch: tuple
    act: str = "relu6"
    multiplier: float = 1.0
    depth: float = 1.0
    fix_first_last: bool = False
    stem: int = 32
    fix_stem: bool = False
    head: int = 1280
    scale_head: bool = False
    head_kind: str = "efficientnet"
    tf: bool = False
    size: str = ""


def _mobilenet_v1(multiplier, head=0):
    return TimmConfig("mobilenet_v1", MOBILENET_V1, multiplier=multiplier, head=head, scale_head=True)


def _mobilenet_v2(multiplier, depth=1.0, fix_stem_head=False):
    return TimmConfig("mobilenet_v2", MOBILENET_V2, multiplier=multiplier, depth=depth,
                      fix_first_last=fix_stem_head, fix_stem=fix_stem_head, scale_head=not fix_stem_head)


def _efficientnet_lite(size, tf):
    multiplier, depth = {0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2), 3: (1.2, 1.4), 4: (1.4, 1.8)}[size]
    return TimmConfig("efficientnet_lite", EFFICIENTNET_LITE, multiplier=multiplier, depth=depth,
                      fix_first_last=True, fix_stem=True, tf=tf)


def _mobilenet_v3(size, multiplier, tf=False, is_minimal=False):
    arch = MOBILENET_V3_LARGE if size == "large" else MOBILENET_V3_SMALL
    return TimmConfig("mobilenet_v3", minimal(arch) if is_minimal else arch,
                      act="relu" if is_minimal else "hard_swish", multiplier=multiplier, stem=16,
                      fix_stem=multiplier < 0.75, head=1280 if size == "large" else 1024,
                      head_kind="mobilenetv3", tf=tf, size=size)


# `TIMM_MODELS`, for one-line messages
SUPPORTED = (
    "mobilenetv1_100/100h/125, mobilenetv2_035/050/075/100/110d/120d/140, (tf_)efficientnet_lite0-4, "
    "(tf_)mobilenetv3_large_075/100, mobilenetv3_small_050/075/100, tf_mobilenetv3_small_075/100, "
    "tf_mobilenetv3_large/small_minimal_100"
)
TIMM_MODELS = {
    "mobilenetv1_100": _mobilenet_v1(1.0),
    "mobilenetv1_100h": _mobilenet_v1(1.0, head=1024),
    "mobilenetv1_125": _mobilenet_v1(1.25),
    **{f"mobilenetv2_{int(m * 100):03d}": _mobilenet_v2(m) for m in (0.35, 0.5, 0.75, 1.0, 1.4)},
    "mobilenetv2_110d": _mobilenet_v2(1.1, 1.2, fix_stem_head=True),
    "mobilenetv2_120d": _mobilenet_v2(1.2, 1.4, fix_stem_head=True),
    **{f"efficientnet_lite{i}": _efficientnet_lite(i, tf=False) for i in range(5)},
    **{f"tf_efficientnet_lite{i}": _efficientnet_lite(i, tf=True) for i in range(5)},
    "mobilenetv3_large_075": _mobilenet_v3("large", 0.75),
    "mobilenetv3_large_100": _mobilenet_v3("large", 1.0),
    "mobilenetv3_small_050": _mobilenet_v3("small", 0.5),
    "mobilenetv3_small_075": _mobilenet_v3("small", 0.75),
    "mobilenetv3_small_100": _mobilenet_v3("small", 1.0),
    "tf_mobilenetv3_large_075": _mobilenet_v3("large", 0.75, tf=True),
    "tf_mobilenetv3_large_100": _mobilenet_v3("large", 1.0, tf=True),
    "tf_mobilenetv3_large_minimal_100": _mobilenet_v3("large", 1.0, tf=True, is_minimal=True),
    "tf_mobilenetv3_small_075": _mobilenet_v3("small", 0.75, tf=True),
    "tf_mobilenetv3_small_100": _mobilenet_v3("small", 1.0, tf=True),
    "tf_mobilenetv3_small_minimal_100": _mobilenet_v3("small", 1.0, tf=True, is_minimal=True),
}

# ---------------------------------------------------------------- widths and depths


@dataclasses.dataclass(frozen=True)
class Block:
    """One block with concrete widths; timm's module is `blocks.{stage}.{index}`.

    `kind`: `"ds"` (depthwise, pointwise), `"dsa"` (the same with an
    activation after the pointwise conv, never a residual: MobileNet v1),
    `"ir"` (inverted residual) or `"cn"` (conv + BN + act). `se`: squeeze
    channels (0: no squeeze-excite).
    """

    stage: int
    index: int
    kind: str
    in_channels: int
    mid_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    act: str
    se: int
    has_skip: bool


_ACTIVATIONS = {"re": "relu", "r6": "relu6", "hs": "hard_swish"}


def decode_row(text):
    """`(options, repeats)` of a block string: options `kind`, `k`, `s`, `e`, `c`, `se`, `act`, `noskip`."""
    kind, *codes = text.split("_")
    row = {"kind": kind, "e": 1.0, "se": 0.0, "act": None, "noskip": False}
    for code in codes:
        if code == "noskip":
            row["noskip"] = True
        elif code[0] == "n":
            row["act"] = _ACTIVATIONS[code[1:]]
        else:
            key, value = re.match(r"([a-z]+)([\d.]+)$", code).groups()
            row[key] = float(value) if key in ("e", "se") else int(value)
    return row, row.pop("r")


def stage_rows(config):
    """The stages as lists of decoded rows, one per block, depth-scaled as timm does:
    a stage's total `ceil(n * depth)`, handed back to its rows last to first."""
    stages = []
    for index, stage in enumerate(config.arch):
        rows, repeats = zip(*(decode_row(text) for text in stage))
        fixed = config.fix_first_last and index in (0, len(config.arch) - 1)
        total, scaled_total = sum(repeats), math.ceil(sum(repeats) * (1.0 if fixed else config.depth))
        scaled = []
        for count in reversed(repeats):
            share = max(1, round(count / total * scaled_total))
            scaled.append(share)
            total, scaled_total = total - count, scaled_total - share
        stages.append([row for row, count in zip(rows, reversed(scaled)) for _ in range(count)])
    return stages


def resolve_blocks(config):
    """`(stem channels, [Block], head channels)` of a `TimmConfig` (or a `TIMM_MODELS` name)."""
    if isinstance(config, str):
        config = TIMM_MODELS[config]

    def scale(channels):
        return make_divisible(channels * config.multiplier)

    stem = config.stem if config.fix_stem else scale(config.stem)
    blocks, in_channels = [], stem
    for stage, rows in enumerate(stage_rows(config)):
        for index, row in enumerate(rows):
            out, stride = scale(row["c"]), row["s"] if index == 0 else 1
            mid = {"ir": make_divisible(in_channels * row["e"]), "cn": out}.get(row["kind"], in_channels)
            skip = row["kind"] in ("ds", "ir") and not row["noskip"]
            blocks.append(Block(
                stage, index, row["kind"], in_channels, mid, out, row["k"], stride, row["act"] or config.act,
                make_divisible((mid if row["kind"] == "ir" else in_channels) * row["se"]) if row["se"] else 0,
                skip and stride == 1 and in_channels == out,
            ))
            in_channels = out
    head = config.head
    if head and config.scale_head:
        head = max(head, scale(head))
    return stem, blocks, head


# the modules of each block kind and the output width of each: "in", "mid" or "out"
BLOCK_MODULES = {
    "ds": (("conv_dw", "in"), ("bn1", "in"), ("conv_pw", "out"), ("bn2", "out")),
    "dsa": (("conv_dw", "in"), ("bn1", "in"), ("conv_pw", "out"), ("bn2", "out")),
    "ir": (("conv_pw", "mid"), ("bn1", "mid"), ("conv_dw", "mid"), ("bn2", "mid"), ("conv_pwl", "out"),
           ("bn3", "out")),
    "cn": (("conv", "out"), ("bn1", "out")),
}
BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def state_shapes(name, num_classes=1000):
    """`{state_dict key: shape}` of timm's model `name` (no `num_batches_tracked`;
    no classifier when `num_classes` is 0)."""
    config = TIMM_MODELS[name]
    stem, blocks, head = resolve_blocks(config)
    shapes = {"conv_stem.weight": (stem, 3, 3, 3), **{f"bn1.{k}": (stem,) for k in BN_KEYS}}
    for block in blocks:
        prefix = f"blocks.{block.stage}.{block.index}"
        widths = {"in": block.in_channels, "mid": block.mid_channels, "out": block.out_channels}
        source = block.in_channels
        for module, width in BLOCK_MODULES[block.kind]:
            channels = widths[width]
            if module.startswith("bn"):
                shapes.update({f"{prefix}.{module}.{k}": (channels,) for k in BN_KEYS})
                continue
            depthwise = module == "conv_dw"
            kernel = block.kernel_size if depthwise or module == "conv" else 1
            shapes[f"{prefix}.{module}.weight"] = (channels, 1 if depthwise else source, kernel, kernel)
            source = channels
        if block.se:
            width = block.mid_channels if block.kind == "ir" else block.in_channels
            shapes.update({
                f"{prefix}.se.conv_reduce.weight": (block.se, width, 1, 1), f"{prefix}.se.conv_reduce.bias": (block.se,),
                f"{prefix}.se.conv_expand.weight": (width, block.se, 1, 1), f"{prefix}.se.conv_expand.bias": (width,),
            })
    features = blocks[-1].out_channels
    if head:
        shapes["conv_head.weight"] = (head, features, 1, 1)
        if config.head_kind == "mobilenetv3":
            shapes["conv_head.bias"] = (head,)
        else:
            shapes.update({f"bn2.{k}": (head,) for k in BN_KEYS})
        features = head
    if num_classes:
        shapes.update({"classifier.weight": (num_classes, features), "classifier.bias": (num_classes,)})
    return shapes


def checkpoint_classes(tensors):
    """The classifier's class count (0 without a classifier)."""
    weight = tensors.get("classifier.weight")
    return weight.shape[0] if weight is not None and len(weight.shape) == 2 else 0


def identify(tensors, family=None):
    """The `TIMM_MODELS` names whose state_dict has exactly these keys and
    shapes (`tensors`: `{key: array}`; `num_batches_tracked` ignored). A
    `tf_` port and its PyTorch-trained namesake have the same state_dict, so
    both are listed."""
    shapes = {k: tuple(v.shape) for k, v in tensors.items() if not k.endswith("num_batches_tracked")}
    classes = checkpoint_classes(tensors)
    return [
        name for name, config in TIMM_MODELS.items()
        if family in (None, config.family) and state_shapes(name, classes) == shapes
    ]


def has_keys_of(keys, family, tf=False):
    """Whether `keys` are the state_dict keys of a timm model of `family` (a `tf_` port if `tf`)."""
    keys = {k for k in keys if not k.endswith("num_batches_tracked")}
    return any(
        set(state_shapes(name, 1 if "classifier.weight" in keys else 0)) == keys
        for name, config in TIMM_MODELS.items()
        if config.family == family and config.tf == tf
    )


# ---------------------------------------------------------------- Keras archs


def keras_arch(name):
    """`(registry arch, builder kwargs)` that build timm's model `name` in Keras (without `classes`)."""
    config = TIMM_MODELS[name]
    style = "tf" if config.tf else "torch"
    kwargs = {"alpha": config.multiplier, "style": style}
    if config.family == "mobilenet_v1":
        if config.head:
            kwargs["head_filters"] = config.head
        return "mobilenet_v1", kwargs
    if config.family == "mobilenet_v2":
        if config.fix_stem:
            kwargs.update(depth_coefficient=config.depth, stem_filters=config.stem, last_filters=config.head)
        return "mobilenet_v2", kwargs
    if config.family == "efficientnet_lite":
        return name.removeprefix("tf_"), {"style": style}
    if config.act == "relu":
        kwargs["minimalistic"] = True
    # timm's widths are keras.applications'; the tf_ ports take [-1, 1] input, not 0-255
    kwargs.update({"include_preprocessing": False} if config.tf else {"width_rule": "keras", "bn_epsilon": 1e-5})
    return f"mobilenet_v3_{config.size}", kwargs


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
# timm 1.0's default pretrained_cfg of each model (`timm.models.get_pretrained_cfg`):
# name: (default tag, input size, interpolation, crop_pct, (mean, std)); crop_mode is "center".
DEFAULT_CFGS = {
    "mobilenetv1_100": ("ra4_e3600_r224_in1k", 224, "bicubic", 0.875, INCEPTION),
    "mobilenetv1_100h": ("ra4_e3600_r224_in1k", 224, "bicubic", 0.875, INCEPTION),
    "mobilenetv1_125": ("ra4_e3600_r224_in1k", 224, "bicubic", 0.9, INCEPTION),
    "mobilenetv2_035": ("untrained", 224, "bicubic", 0.875, IMAGENET),
    "mobilenetv2_050": ("lamb_in1k", 224, "bicubic", 0.875, IMAGENET),
    "mobilenetv2_075": ("untrained", 224, "bicubic", 0.875, IMAGENET),
    "mobilenetv2_100": ("ra_in1k", 224, "bicubic", 0.875, IMAGENET),
    "mobilenetv2_110d": ("ra_in1k", 224, "bicubic", 0.875, IMAGENET),
    "mobilenetv2_120d": ("ra_in1k", 224, "bicubic", 0.875, IMAGENET),
    "mobilenetv2_140": ("ra_in1k", 224, "bicubic", 0.875, IMAGENET),
    "efficientnet_lite0": ("ra_in1k", 224, "bicubic", 0.875, IMAGENET),
    "efficientnet_lite1": ("untrained", 240, "bicubic", 0.882, IMAGENET),
    "efficientnet_lite2": ("untrained", 260, "bicubic", 0.89, IMAGENET),
    "efficientnet_lite3": ("untrained", 300, "bicubic", 0.904, IMAGENET),
    "efficientnet_lite4": ("untrained", 380, "bicubic", 0.922, IMAGENET),
    "tf_efficientnet_lite0": ("in1k", 224, "bicubic", 0.875, INCEPTION),
    "tf_efficientnet_lite1": ("in1k", 240, "bicubic", 0.882, INCEPTION),
    "tf_efficientnet_lite2": ("in1k", 260, "bicubic", 0.89, INCEPTION),
    "tf_efficientnet_lite3": ("in1k", 300, "bilinear", 0.904, INCEPTION),
    "tf_efficientnet_lite4": ("in1k", 380, "bilinear", 0.92, INCEPTION),
    "mobilenetv3_large_075": ("untrained", 224, "bilinear", 0.875, IMAGENET),
    "mobilenetv3_large_100": ("ra_in1k", 224, "bicubic", 0.875, IMAGENET),
    "mobilenetv3_small_050": ("lamb_in1k", 224, "bicubic", 0.875, IMAGENET),
    "mobilenetv3_small_075": ("lamb_in1k", 224, "bicubic", 0.875, IMAGENET),
    "mobilenetv3_small_100": ("lamb_in1k", 224, "bicubic", 0.875, IMAGENET),
    "tf_mobilenetv3_large_075": ("in1k", 224, "bilinear", 0.875, INCEPTION),
    "tf_mobilenetv3_large_100": ("in1k", 224, "bilinear", 0.875, INCEPTION),
    "tf_mobilenetv3_large_minimal_100": ("in1k", 224, "bilinear", 0.875, INCEPTION),
    "tf_mobilenetv3_small_075": ("in1k", 224, "bilinear", 0.875, INCEPTION),
    "tf_mobilenetv3_small_100": ("in1k", 224, "bilinear", 0.875, INCEPTION),
    "tf_mobilenetv3_small_minimal_100": ("in1k", 224, "bilinear", 0.875, INCEPTION),
}


def default_pretrained_cfg(name):
    """The eval keys of timm's default `pretrained_cfg` of model `name`."""
    tag, size, interpolation, crop_pct, (mean, std) = DEFAULT_CFGS[name]
    return {"tag": tag, "input_size": [3, size, size], "interpolation": interpolation, "crop_pct": crop_pct,
            "crop_mode": "center", "mean": list(mean), "std": list(std)}


# ---------------------------------------------------------------- eval transform

# timm's `resolve_data_config` defaults for keys a pretrained_cfg lacks
DEFAULT_CROP_PCT = 0.875
MAX_INPUT_SIZE = 4096


def _number_list(cfg, key, default, positive=False):
    values = cfg.get(key) or default
    if (
        not isinstance(values, (list, tuple)) or len(values) != 3
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
        or (positive and min(values) <= 0)
    ):
        raise ValueError(f"pretrained_cfg {key} must be 3 finite numbers{' above 0' if positive else ''}")
    return [float(v) for v in values]


def preprocessing_from_timm_cfg(cfg):
    """The weights record's `preprocessing` for timm's eval transform of `cfg`.

    timm evaluates (`resolve_data_config`, then `transforms_imagenet_eval`
    with crop_mode "center") by resizing the shorter side to
    `floor(size / crop_pct)` with the cfg's interpolation, center-cropping
    `size` (`input_size`; `test_input_size` only when asked for), then
    `(x / 255 - mean) / std`. Keys the cfg lacks take timm's defaults.
    crop_mode "squash" is the same as a plain resize when `crop_pct` is 1;
    otherwise "squash" and "border" are refused.

    Returns:
        `{"mode", "size", "resize", "resample"}`, with `"mean"` and `"std"`
        (0-1 units) for mode "meanstd". Mean/std of ImageNet give mode
        "torch"; 0.5/0.5 "tf"; 0/1 "unit" (the same arithmetic).

    Raises:
        ValueError: a cfg this package cannot reproduce; one line.
    """
    if not isinstance(cfg, dict):
        raise ValueError("pretrained_cfg must be a JSON object")
    input_size = cfg.get("input_size") or (3, 224, 224)
    if (
        not isinstance(input_size, (list, tuple)) or len(input_size) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in input_size)
    ):
        raise ValueError(f"pretrained_cfg input_size must be [channels, height, width], got {input_size!r}")
    channels, height, width = input_size
    if channels != 3 or height != width or not 32 <= height <= MAX_INPUT_SIZE:
        raise ValueError(f"pretrained_cfg input_size {list(input_size)}: only square RGB inputs of 32 to "
                         f"{MAX_INPUT_SIZE} pixels are supported")
    crop_pct = cfg.get("crop_pct") or DEFAULT_CROP_PCT
    if not isinstance(crop_pct, (int, float)) or isinstance(crop_pct, bool) or not 0.1 <= crop_pct <= 1.0:
        raise ValueError(f"pretrained_cfg crop_pct must be a number from 0.1 to 1, got {crop_pct!r}")
    interpolation = cfg.get("interpolation") or "bicubic"
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        raise ValueError(f"pretrained_cfg interpolation {interpolation!r} is not supported "
                         "(bilinear, bicubic, nearest)")
    resize = math.floor(height / crop_pct)
    crop_mode = cfg.get("crop_mode") or "center"
    if crop_mode == "squash" and resize == height:
        resize = "stretch"
    elif crop_mode != "center":
        raise ValueError(f"pretrained_cfg crop_mode {crop_mode!r} (crop_pct {crop_pct}) is not supported; "
                         "timm's crop_mode 'center' is")
    mean = _number_list(cfg, "mean", IMAGENET[0])
    std = _number_list(cfg, "std", IMAGENET[1], positive=True)
    normalisation = {"mode": "meanstd", "mean": mean, "std": std}
    for mode, (known_mean, known_std) in {"torch": IMAGENET, "tf": INCEPTION, "unit": ((0,) * 3, (1,) * 3)}.items():
        if all(abs(a - b) < 1e-6 for a, b in zip(mean + std, known_mean + known_std)):
            normalisation = {"mode": mode}
    return {**normalisation, "size": height, "resize": resize, "resample": interpolation}


def timm_arch(architecture, num_classes, pretrained_cfg=None):
    """timm's `architecture` (config.json's, optionally `name.tag`) as this package's.

    Args:
        architecture: a timm model name such as `"mobilenetv3_large_100"` or
            `"tf_efficientnet_lite0.in1k"`.
        num_classes: the classifier's classes (0: none).
        pretrained_cfg: the snapshot's `pretrained_cfg`; None for the
            default one of the model (known for default tags only).

    Returns:
        `(registry arch, builder kwargs, preprocessing record)`; the builder
        kwargs are those the arch's timm naming reads from such a checkpoint.

    Raises:
        ValueError: an architecture that is not supported, or a cfg that
            cannot be reproduced; one line.
    """
    if not isinstance(architecture, str):
        raise ValueError(f"timm architecture must be a string, got {type(architecture).__name__}")
    name, _, tag = architecture.partition(".")
    if name not in TIMM_MODELS:
        raise ValueError(f"timm architecture {architecture[:80]!r} is not supported; supported: {SUPPORTED}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be a whole number >= 0, got {num_classes!r}")
    if pretrained_cfg is None:
        if tag and tag != DEFAULT_CFGS[name][0]:
            raise ValueError(f"no pretrained_cfg for {architecture}: only the default tag "
                             f"{DEFAULT_CFGS[name][0]!r} is known without one")
        pretrained_cfg = default_pretrained_cfg(name)
    arch, kwargs = keras_arch(name)
    preprocessing = preprocessing_from_timm_cfg(pretrained_cfg)
    if preprocessing["size"] != registry.get_spec(arch).input_size:
        kwargs["input_shape"] = (preprocessing["size"],) * 2 + (3,)
    if num_classes:
        kwargs["classes"] = num_classes
    return arch, kwargs, preprocessing


def naming_source(architecture):
    """The converter's `--source` for timm's `architecture`: `"timm_tf"` for
    its TF ports, else `"timm"` (the two share their keys and shapes)."""
    name = str(architecture).partition(".")[0]
    if name not in TIMM_MODELS:
        raise ValueError(f"timm architecture {name[:80]!r} is not supported; supported: {SUPPORTED}")
    return "timm_tf" if TIMM_MODELS[name].tf else "timm"


def supported_models():
    """The timm model names `timm_arch` accepts."""
    return list(TIMM_MODELS)


def timm_name(arch, kwargs):
    """The timm model that `keras_arch` builds as `arch` with these builder kwargs."""
    candidates = {name: keras_arch(name) for name in TIMM_MODELS}
    relevant = {key for built, keys in candidates.values() if built == arch for key in keys}
    given = {key: value for key, value in kwargs.items() if key in relevant}
    for name, (built, keys) in candidates.items():
        if built == arch and keys == given:
            return name
    raise ValueError(f"no timm model is {arch} with {given}")
