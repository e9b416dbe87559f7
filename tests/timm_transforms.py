"""timm's eval transform, written out from timm 1.0's code.

`resolve_data_config` (data/config.py: a pretrained_cfg's keys, else timm's
defaults; `use_test_size=False`), `create_transform` and
`transforms_imagenet_eval` (data/transforms_factory.py: `img_size =
input_size[-2:]`, `scale_size = floor(size / crop_pct)`, then for crop_mode
"center" torchvision's `Resize(scale_size)` on the shorter side and
`CenterCrop(img_size)`, for "squash" `Resize((h, w))` and `CenterCrop`;
`ToTensor`, `Normalize(mean, std)`), with `str_to_interp_mode`'s PIL filters.
timm composes torchvision's transforms: those come from
tests/torchvision_transforms.py (written from torchvision's code). Shares no
code with `keras_lightnets`.
"""

import math

from PIL import Image

from tests import torchvision_transforms as torchvision

DEFAULT_CROP_PCT = 0.875
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
# str_to_interp_mode → torchvision's InterpolationMode → the PIL filter of F.resize on a PIL image
INTERPOLATION = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def resolve_data_config(pretrained_cfg):
    """`timm.data.resolve_data_config(pretrained_cfg=...)` without args or a model."""
    return {
        "input_size": tuple(pretrained_cfg.get("input_size") or (3, 224, 224)),
        "interpolation": pretrained_cfg.get("interpolation") or "bicubic",
        "mean": pretrained_cfg.get("mean") or IMAGENET_DEFAULT_MEAN,
        "std": pretrained_cfg.get("std") or IMAGENET_DEFAULT_STD,
        "crop_pct": pretrained_cfg.get("crop_pct") or DEFAULT_CROP_PCT,
        "crop_mode": pretrained_cfg.get("crop_mode") or "center",
    }


def eval_pixels(img, pretrained_cfg):
    """The geometric part (resize and crop) as a PIL image."""
    config = resolve_data_config(pretrained_cfg)
    height, width = config["input_size"][-2:]
    scale = tuple(math.floor(side / config["crop_pct"]) for side in (height, width))
    interpolation = INTERPOLATION[config["interpolation"]]
    img = img.convert("RGB")
    if config["crop_mode"] == "squash":
        if img.size != (scale[1], scale[0]):  # Resize((h, w)): both sides, aspect not kept
            img = img.resize((scale[1], scale[0]), interpolation)
    elif config["crop_mode"] == "center" and scale[0] == scale[1]:
        img = torchvision.resize(img, scale[0], interpolation)
    else:
        raise NotImplementedError(f"crop_mode {config['crop_mode']!r} with input_size {config['input_size']}")
    assert height == width  # torchvision.center_crop here takes a square
    return torchvision.center_crop(img, height)


def eval_tensor(img, pretrained_cfg):
    """The whole eval transform: the normalised CHW tensor timm feeds the model."""
    config = resolve_data_config(pretrained_cfg)
    return torchvision.normalize(torchvision.to_tensor(eval_pixels(img, pretrained_cfg)), config["mean"], config["std"])
