"""Reading photos into RGB arrays, safely and the same way every time."""

import os
import sys
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from keras_lightnets.errors import LightnetsError
from keras_lightnets.files import NotRegularFileError, open_regular, safe_text

ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


class ImageError(LightnetsError, ValueError):
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
    return img if img.mode == "RGB" else img.convert("RGB")


def _print_warnings(path, caught):
    """Prints the warnings Pillow gave while reading `path` as one line on stderr."""
    messages = list(dict.fromkeys(" ".join(str(w.message).split()) for w in caught))
    if messages:
        more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
        print(safe_text(f"warning: {path}: {messages[0]}{more}"), file=sys.stderr)


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
        file = open_regular(path)  # a FIFO or a device named like a photo: refused, never waited on
    except NotRegularFileError as err:
        raise ImageError(str(err)) from None
    except OSError as err:
        raise ImageError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        # Pillow warns (several lines each) about corrupt EXIF and the like: one line instead.
        with warnings.catch_warnings(record=True) as caught, file:
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file, formats=ALLOWED_FORMATS) as img:
                img.seek(0)
                img.load()
                ImageOps.exif_transpose(img, in_place=True)  # no copy of the photo
                rgb = _to_rgb(img)
        _print_warnings(path, caught)
        return rgb
    except UnidentifiedImageError:
        raise ImageError(
            f"{path} is not an image of a supported format ({', '.join(ALLOWED_FORMATS)})"
        ) from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise ImageError(f"{path}: refused, too many pixels ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path}: cannot decode image ({err})") from None


def shorter_side_size(width, height, shorter):
    """`(width, height)` with the shorter side at `shorter`, the longer side
    truncated as torchvision's `Resize(int)` computes it
    (`_compute_resized_output_size`: `int(shorter * long / short)`)."""
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def center_crop(img, size):
    """torchvision's `CenterCrop(size)` on a Pillow image (`size` an int or
    `(height, width)`): offsets `int(round((side - size) / 2.0))` (round half
    to even), zero padding first when the image is smaller than the crop."""
    crop_height, crop_width = (size, size) if isinstance(size, int) else size
    width, height = img.size
    if crop_width > width or crop_height > height:
        pad_left = (crop_width - width) // 2 if crop_width > width else 0
        pad_top = (crop_height - height) // 2 if crop_height > height else 0
        canvas = Image.new(img.mode, (max(width, crop_width), max(height, crop_height)), 0)
        canvas.paste(img, (pad_left, pad_top))
        img = canvas
        width, height = img.size
        if (width, height) == (crop_width, crop_height):
            return img
    top = round((height - crop_height) / 2.0)  # torchvision: int(round(...)); round() of a float is an int
    left = round((width - crop_width) / 2.0)
    return img.crop((left, top, left + crop_width, top + crop_height))


def load_image(path, size=224, crop_fraction=1.0, resample="bilinear", resize=None):
    """Reads a photo as a float32 RGB array with values 0-255, as an eval
    transform prescribes.

    Args:
        path: image file.
        size: output side, or `(height, width)` (`None`: the photo at its
            own size, or with an int `resize` its shorter side at `resize`;
            nothing cropped).
        crop_fraction: without `resize` (the files written before 0.2 and
            EfficientNet-Lite): side of the central square crop as a fraction
            of the shorter side, taken before resizing to `size` (1.0 = the
            whole central square; `None` = no crop, the image is squashed to
            a square).
        resample: "bilinear", "bicubic" or "nearest" (Pillow's filters,
            antialiased when shrinking, as torchvision on PIL images).
        resize: how the photo meets `size`:
            an int N: torchvision's `Resize(N)` (shorter side to N, longer
            side truncated) then `CenterCrop(size)`;
            `"stretch"`: `keras.utils.load_img(target_size=(size, size))`:
            both sides to `size`, aspect ratio not kept;
            `None`: `crop_fraction` decides (above).
    """
    return eval_transform(read_image(path), size, crop_fraction, resample, resize)


def eval_transform(img, size, crop_fraction=1.0, resample="bilinear", resize=None, dtype="float32"):
    """`load_image`'s transform of a Pillow RGB image: a 0-255 array of
    `dtype` ("uint8": Pillow's own pixels, no copy to float). `size` is an
    int, `(height, width)`, or `None`: the image as it is, or with an int
    `resize` N its shorter side resized to N and nothing cropped (torchvision's
    `SemanticSegmentation(resize_size=N)`)."""
    if size is None:
        if resize is not None and not isinstance(resize, str):
            img = _resize_shorter_side(img, resize, RESAMPLING[resample])
        return np.asarray(img, dtype=dtype)
    height, width = (size, size) if isinstance(size, int) else size
    filter_ = RESAMPLING[resample]
    if resize == "stretch":
        if img.size != (width, height):
            img = img.resize((width, height), filter_)
    elif resize is not None:
        img = center_crop(_resize_shorter_side(img, resize, filter_), (height, width))
    else:
        if crop_fraction is not None:
            # the largest central region of the target's aspect ratio, then the fraction of it
            aspect = width / height
            crop_width = max(1, round(min(img.width, img.height * aspect) * crop_fraction))
            crop_height = max(1, round(min(img.height, img.width / aspect) * crop_fraction))
            left = (img.width - crop_width) // 2
            top = (img.height - crop_height) // 2
            img = img.crop((left, top, left + crop_width, top + crop_height))
        img = img.resize((width, height), filter_)
    return np.asarray(img, dtype=dtype)


def _resize_shorter_side(img, resize, filter_):
    """torchvision's `Resize(resize)` of a Pillow image (`shorter_side_size`)."""
    if isinstance(resize, bool) or not isinstance(resize, int) or resize < 1:
        raise ValueError(f"resize must be a positive int, 'stretch' or None, got {resize!r}")
    target = shorter_side_size(*img.size, resize)
    return img if target == img.size else img.resize(target, filter_)


def load_for(path, preprocessing):
    """`load_image` as a weights record's `preprocessing` prescribes: the
    current keys (`size`, `resize`, `resample`, and `crop_fraction` for
    EfficientNet-Lite) or those of files written before 0.2 (`size`,
    `crop_fraction`, `resample`). The result is 0-255, before
    `preprocess_input(x, preprocessing["mode"])`."""
    return transform_for(read_image(path), preprocessing, preprocessing.get("size"))


def transform_for(img, preprocessing, size, dtype="float32"):
    """`eval_transform` of a Pillow image with a record's `preprocessing` keys,
    to `size` (an int, `(height, width)` or `None`)."""
    return eval_transform(
        img,
        size,
        crop_fraction=preprocessing.get("crop_fraction", 1.0),
        resample=preprocessing.get("resample", "bilinear"),
        resize=preprocessing.get("resize"),
        dtype=dtype,
    )


def letterbox(img, size, resample="bicubic", fill=128):
    """Fits a Pillow image into a `size` (int or `(height, width)`) canvas, aspect kept.

    bubbliiiing's `resize_image`: scale = min(width ratio, height ratio),
    sides truncated to ints, the resized photo pasted centred on a grey
    `(fill, fill, fill)` canvas.

    Returns:
        `(float32 (height, width, 3) array 0-255, (top, left, photo height, photo width))`.
    """
    height, width = (size, size) if isinstance(size, int) else size
    scale = min(width / img.width, height / img.height)
    new_width, new_height = max(1, int(img.width * scale)), max(1, int(img.height * scale))
    canvas = Image.new("RGB", (width, height), (fill, fill, fill))
    left, top = (width - new_width) // 2, (height - new_height) // 2
    canvas.paste(img.resize((new_width, new_height), RESAMPLING[resample]), (left, top))
    return np.asarray(canvas, dtype="float32"), (top, left, new_height, new_width)
