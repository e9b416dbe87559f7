"""torchvision's ImageNet eval transform, written out from torchvision's code.

`Resize(256)`, `CenterCrop(224)`, `ToTensor()`, `Normalize(mean, std)` on a PIL
image, as torchvision/transforms/functional.py (`resize`,
`_compute_resized_output_size`, `center_crop`, `to_tensor`, `normalize`) and
_functional_pil.py (`resize`, `crop`, `pad`) do it. torchvision itself does not
import beside the test suite's torch build, hence this copy; it shares no code
with `keras_lightnets.preprocessing.image`.
"""

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _compute_resized_output_size(image_size, size):
    # functional.py, `len(size) == 1` (the shorter edge), no max_size
    h, w = image_size
    short, long = (w, h) if w <= h else (h, w)
    requested_new_short = size[0]
    new_short, new_long = requested_new_short, int(requested_new_short * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return [new_h, new_w]


def resize(img, size, interpolation=Image.BILINEAR):
    # functional.resize on a PIL image: same size -> unchanged; else
    # _functional_pil.resize: img.resize(size[::-1], interpolation)
    image_width, image_height = img.size
    output_size = _compute_resized_output_size((image_height, image_width), [size])
    if [image_height, image_width] == output_size:
        return img
    return img.resize(tuple(output_size[::-1]), interpolation)


def crop(img, top, left, height, width):
    # _functional_pil.crop
    return img.crop((left, top, left + width, top + height))


def center_crop(img, output_size):
    crop_height, crop_width = output_size, output_size
    image_width, image_height = img.size
    if crop_width > image_width or crop_height > image_height:
        padding_ltrb = [
            (crop_width - image_width) // 2 if crop_width > image_width else 0,
            (crop_height - image_height) // 2 if crop_height > image_height else 0,
            (crop_width - image_width + 1) // 2 if crop_width > image_width else 0,
            (crop_height - image_height + 1) // 2 if crop_height > image_height else 0,
        ]
        img = ImageOps.expand(img, border=tuple(padding_ltrb), fill=0)  # _functional_pil.pad, constant
        image_width, image_height = img.size
        if crop_width == image_width and crop_height == image_height:
            return img
    crop_top = int(round((image_height - crop_height) / 2.0))  # noqa: RUF046 (torchvision's text)
    crop_left = int(round((image_width - crop_width) / 2.0))  # noqa: RUF046
    return crop(img, crop_top, crop_left, crop_height, crop_width)


def to_tensor(img):
    # functional.to_tensor on an RGB PIL image: CHW float in [0, 1]
    array = torch.from_numpy(np.array(img, np.uint8, copy=True))
    return array.permute(2, 0, 1).contiguous().float().div(255)


def normalize(tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    mean = torch.as_tensor(mean, dtype=tensor.dtype).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=tensor.dtype).view(-1, 1, 1)
    return tensor.sub(mean).div(std)


def eval_pixels(img, resize_to=256, crop_to=224):
    """The geometric part (Resize + CenterCrop) as uint8 HWC: to compare grey levels."""
    return np.asarray(center_crop(resize(img.convert("RGB"), resize_to), crop_to))


def eval_tensor(img, resize_to=256, crop_to=224):
    """The whole eval transform: a normalised CHW float tensor, as torchvision feeds the model."""
    return normalize(to_tensor(center_crop(resize(img.convert("RGB"), resize_to), crop_to)))
