"""Calibration inputs for int8: real photos through the weights' own preprocessing.

An int8 model's activation ranges are measured on inputs like the ones it
will see. `calibration_inputs(preprocessing)` makes them from real photos:
the ones at hand (`shipped_photos`: the checkout's examples/, scikit-image's
and matplotlib's sample photos) or a user's folder (`folder_photos`), each
photo once as it is and then seeded random crops (a quarter of the photo to
all of it, aspect 3:4 to 4:3, mirrored half of the time), every image through
the eval transform and `preprocess_input` mode of the weights' record.
"""

import os
import sys

import numpy as np

from keras_lightnets.files import list_images, safe_text
from keras_lightnets.preprocessing import preprocess_input
from keras_lightnets.preprocessing.image import ImageError, read_image, transform_for

# scikit-image's and matplotlib's photos (colour and greyscale) among their sample files
SKIMAGE_PHOTOS = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg",
    "ihc.png", "retina.jpg", "camera.png", "moon.png", "coins.png", "brick.png", "grass.png", "gravel.png",
    "clock_motion.png", "text.png", "cell.png", "microaneurysms.png",
)
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "examples")
# Calibration images when none are asked for: enough crops that their min/max
# ranges settle (bench/int8.py measures the agreement against the count).
DEFAULT_COUNT = 200


def _sample_folders():
    """`[(folder, file names)]` of the photo collections installed here."""
    folders = [(EXAMPLES, sorted(n for n in _listdir(EXAMPLES) if n.lower().endswith(".jpg")))]
    try:
        import skimage.data
    except ImportError:
        pass
    else:
        folders.append((os.path.dirname(skimage.data.__file__), SKIMAGE_PHOTOS))
    try:
        import matplotlib
    except ImportError:
        pass
    else:
        folders.append((os.path.join(matplotlib.get_data_path(), "sample_data"), MATPLOTLIB_PHOTOS))
    return folders


def _listdir(folder):
    try:
        return os.listdir(folder)
    except OSError:
        return []


def shipped_photos():
    """`[(name, Pillow RGB image)]`: the real photos at hand, the checkout's
    examples/*.jpg, then scikit-image's and matplotlib's sample photos
    (each collection when installed), in a fixed order, each photo once
    (examples/cat.jpg and coffee.jpg are scikit-image's chelsea and coffee
    saved as JPEG: the later copy is left out, `_same_photo`)."""
    photos, seen = [], []
    for folder, names in _sample_folders():
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                img = read_image(path)
                looks = _looks(img)
                if not any(_same_photo(looks, earlier) for earlier in seen):
                    seen.append(looks)
                    photos.append((name, img))
    return photos


def _looks(img):
    """`(size, 16x16 grey thumbnail)` of a Pillow image, for `_same_photo`."""
    return img.size, np.asarray(img.convert("L").resize((16, 16)), "float32")


def _same_photo(looks, earlier):
    """Whether two photos' `_looks` are one photo saved twice (a JPEG of a PNG):
    the same size, thumbnails within 4 grey levels on average."""
    return looks[0] == earlier[0] and np.abs(looks[1] - earlier[1]).mean() < 4


def folder_photos(folder, limit=None):
    """`[(name, Pillow RGB image)]` of the images in `folder` (sorted by name,
    at most `limit`); unreadable files are skipped with a line on stderr.

    Raises:
        ImageError: `folder` is not a directory or holds no readable image.
    """
    if not os.path.isdir(folder):
        raise ImageError(f"{folder}: not a directory")
    photos = []
    for path in list_images(folder, recursive=False)[:limit]:  # regular files only: a FIFO is skipped
        try:
            photos.append((os.path.basename(path), read_image(path)))
        except ImageError as err:
            print(safe_text(f"skipped: {err}"), file=sys.stderr)
    if not photos:
        raise ImageError(f"{folder}: no readable images")
    return photos


def random_crop(img, rng, min_area=0.25):
    """A crop of a Pillow image covering `min_area` to all of it, aspect ratio
    3:4 to 4:3 (as far as the photo allows), mirrored with probability 1/2."""
    from PIL import Image

    width, height = img.size
    area = width * height * rng.uniform(min_area, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    crop_width = int(min(width, max(1, round(np.sqrt(area * aspect)))))
    crop_height = int(min(height, max(1, round(np.sqrt(area / aspect)))))
    left = int(rng.integers(0, width - crop_width + 1))
    top = int(rng.integers(0, height - crop_height + 1))
    img = img.crop((left, top, left + crop_width, top + crop_height))
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.uniform() < 0.5 else img


def photo_pixels(photos, preprocessing, count, seed=0, originals=True, size=None):
    """`count` uint8 images `(count, H, W, 3)` from `photos` through the eval
    transform of `preprocessing`: each photo as it is first (`originals`),
    then seeded random crops (`random_crop`) of the photos in turn."""
    rng = np.random.default_rng(seed)
    size = size or preprocessing.get("size")
    images = []
    if originals:
        images += [transform_for(img, preprocessing, size, dtype="uint8") for _, img in photos[:count]]
    while len(images) < count:
        _, img = photos[len(images) % len(photos)]
        images.append(transform_for(random_crop(img, rng), preprocessing, size, dtype="uint8"))
    return np.stack(images)


def calibration_inputs(preprocessing, count=DEFAULT_COUNT, folder=None, seed=0, size=None):
    """Model inputs for int8 calibration: `photo_pixels` of the photos of
    `folder` (default: `shipped_photos()`) after `preprocess_input` in the
    weights' mode.

    Args:
        preprocessing: the weights' preprocessing record (`weights_info(path)
            ["preprocessing"]`: `mode`, `size`, `resize`, ...).
        count: how many images.
        folder: a folder of the user's photos.
        seed: the crops' seed.
        size: the input side or `(height, width)` (default: the record's).

    Returns:
        float32 array `(count, H, W, 3)`.
    """
    photos = folder_photos(folder) if folder is not None else shipped_photos()
    if not photos:
        raise ImageError("no calibration photos: pass a folder of photos")
    pixels = photo_pixels(photos, preprocessing, count, seed, size=size)
    return preprocess_input(pixels, preprocessing.get("mode", "tf"))
