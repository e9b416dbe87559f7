"""Reading photos into RGB arrays, safely and the same way every time."""

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


class ImageError(ValueError):
    """A file that cannot be read as a photo; the message is one line."""


def _to_rgb(img, background=(255, 255, 255)):
    """Converts any Pillow mode to 8-bit RGB.

    Transparent pixels are composited on `background` (white by default);
    16-bit images are scaled from 0-65535 to 0-255; CMYK, palette and
    greyscale images go through Pillow's conversions.
    """
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(img, dtype="float64")
        if values.max(initial=0) > 255:
            values = values / 257.0
        grey = np.clip(np.rint(values), 0, 255).astype("uint8")
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=-1), "RGB")
    if img.mode == "F":
        values = np.asarray(img, dtype="float64")
        grey = np.clip(np.rint(values * 255.0 if values.max(initial=0) <= 1.0 else values), 0, 255)
        return Image.fromarray(np.repeat(grey.astype("uint8")[..., None], 3, axis=-1), "RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        img = img.convert("RGBA")
        canvas = Image.new("RGBA", img.size, background + (255,))
        return Image.alpha_composite(canvas, img).convert("RGB")
    return img.convert("RGB")


def read_image(path):
    """Opens an image file and returns it as an 8-bit RGB Pillow image.

    JPEG, PNG, BMP, GIF (first frame), WebP and TIFF only; EXIF orientation
    applied; Pillow's decompression-bomb limit and truncated files are errors.

    Raises:
        ImageError: with a one-line message, for anything that is not a
            readable image of an allowed format.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ImageError(f"{path} is a directory, not an image")
    if not os.path.exists(path):
        raise ImageError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=ALLOWED_FORMATS) as img:
                img.seek(0)
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except UnidentifiedImageError:
        raise ImageError(
            f"{path} is not an image of a supported format ({', '.join(ALLOWED_FORMATS)})"
        ) from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ImageError(f"{path}: refused, too many pixels ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path}: cannot decode image ({err})") from None


def load_image(path, size=224, crop_fraction=1.0, resample="bilinear"):
    """Reads a photo as a float32 `(size, size, 3)` RGB array with values 0-255.

    Args:
        path: image file.
        size: output height and width.
        crop_fraction: side of the central square crop as a fraction of the
            shorter side, taken before resizing (0.875 = torchvision's
            Resize(256) + CenterCrop(224); 1.0 = the whole central square;
            `None` = no crop, the image is squashed to a square as
            `keras.utils.load_img(target_size=...)` does).
        resample: "bilinear", "bicubic" or "nearest".
    """
    img = read_image(path)
    if crop_fraction is not None:
        width, height = img.size
        side = max(1, round(min(width, height) * crop_fraction))
        left = (width - side) // 2
        top = (height - side) // 2
        img = img.crop((left, top, left + side, top + side))
    img = img.resize((size, size), RESAMPLING[resample])
    return np.asarray(img, dtype="float32")
