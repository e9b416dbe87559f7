"""Training and prediction data: folder layouts, checks, and tf.data pipelines.

Layouts (`find_dataset`):
- classification: `DIR/train/<class>/*`, `DIR/val/<class>/*`, the layout of
  `keras.utils.image_dataset_from_directory`;
- segmentation: `DIR/{train,val}/images/NAME.*` with `DIR/{train,val}/masks/NAME.png`;
- Pascal VOC: `JPEGImages/`, `SegmentationClass/`, `ImageSets/Segmentation/{train,val}.txt`.

Masks hold class ids (palette or greyscale PNG); 255 is "ignore". Every file
is read once by `check_dataset` before training starts, so a bad file stops
the run with its name before anything is written.

The training pipelines decode with the project's safe reader
(`keras_lightnets.preprocessing.image`: format allow-list, EXIF orientation, alpha on
white) inside `tf.data`, and preprocess as the weights' record says
(`preprocessing`: `mode`, `size`, `crop_fraction`, `resample`). Training
randomness (shuffle order, flips, scales, crops) is drawn with stateless ops
from `(seed, epoch, index)`, so a run is reproducible and every replica sees
the batch one device would.

Only the tf.data pipeline functions import TensorFlow.
"""

import concurrent.futures
import dataclasses
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from keras_lightnets.errors import LightnetsError
from keras_lightnets.files import list_images, open_regular
from keras_lightnets.preprocessing import tf_preprocess
from keras_lightnets.preprocessing.batches import read_for_prediction
from keras_lightnets.preprocessing.image import ImageError, read_image

IGNORE_LABEL = 255
# DeepLab's training recipe: random scale in [0.5, 2], pad, random crop, flip.
SCALE_RANGE = (0.5, 2.0)


class DataError(LightnetsError, ValueError):
    """A data folder or file that cannot be used; the message is one line."""


@dataclasses.dataclass
class Split:
    images: list  # paths
    labels: list  # class ids (classification) or mask paths (segmentation)


@dataclasses.dataclass
class Dataset:
    task: str  # "classification" or "segmentation"
    layout: str  # "classification", "segmentation" or "voc"
    train: Split
    val: Split | None
    class_names: list | None = None  # classification: folder names, sorted


def _classification_split(folder, class_names=None):
    names = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)) and not d.startswith("."))
    if class_names is None:
        class_names = names
    unknown = [n for n in names if n not in class_names]
    if unknown:
        raise DataError(f"{os.path.join(folder, unknown[0])}: class not in the training classes")
    images, labels = [], []
    for label, name in enumerate(class_names):
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            found = list_images(path)
            images += found
            labels += [label] * len(found)
    if not images:
        raise DataError(f"{folder}: no images (expected {folder}/<class>/*.jpg)")
    return Split(images, labels), class_names


def segmentation_split(folder):
    image_dir, mask_dir = os.path.join(folder, "images"), os.path.join(folder, "masks")
    images = list_images(image_dir)
    if not images:
        raise DataError(f"{image_dir}: no images")
    masks = []
    for path in images:
        stem = os.path.splitext(os.path.relpath(path, image_dir))[0]
        mask = os.path.join(mask_dir, stem + ".png")
        if not os.path.isfile(mask):
            raise DataError(f"{path}: no mask {mask}")
        masks.append(mask)
    return Split(images, masks)


def voc_split(root, split):
    listing = os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt")
    if not os.path.isfile(listing):
        return None
    try:
        with open_regular(listing) as f:
            ids = [line.split()[0] for line in f.read().decode("utf8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{listing}: cannot be read ({err})") from None
    if not ids:
        raise DataError(f"{listing}: no images")
    images, masks = [], []
    for image_id in ids:
        image = os.path.join(root, "JPEGImages", image_id + ".jpg")
        mask = os.path.join(root, "SegmentationClass", image_id + ".png")
        for path in (image, mask):
            if not os.path.isfile(path):
                raise DataError(f"{path}: listed in {listing} but missing")
        images.append(image)
        masks.append(mask)
    return Split(images, masks)


def find_dataset(folder):
    """Detects the layout of `folder` and lists its files.

    Raises:
        DataError: no known layout, or a split without images.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such folder")
    if os.path.isdir(os.path.join(folder, "JPEGImages")) and os.path.isdir(os.path.join(folder, "SegmentationClass")):
        train = voc_split(folder, "train")
        if train is None:
            raise DataError(f"{folder}: Pascal VOC layout without ImageSets/Segmentation/train.txt")
        return Dataset("segmentation", "voc", train, voc_split(folder, "val"))
    train_dir, val_dir = os.path.join(folder, "train"), os.path.join(folder, "val")
    if not os.path.isdir(train_dir):
        raise DataError(f"{folder}: no train/ folder (see `python -m keras_lightnets.training.finetune --help`)")
    if os.path.isdir(os.path.join(train_dir, "images")):
        val = segmentation_split(val_dir) if os.path.isdir(val_dir) else None
        return Dataset("segmentation", "segmentation", segmentation_split(train_dir), val)
    train, class_names = _classification_split(train_dir)
    val = _classification_split(val_dir, class_names)[0] if os.path.isdir(val_dir) else None
    return Dataset("classification", "classification", train, val, class_names)


def read_mask(path):
    """Reads a class-id mask (palette or greyscale PNG) as a uint8 `(h, w)` array."""
    try:
        with open_regular(path) as f, Image.open(f, formats=("PNG",)) as img:
            img.load()
            if img.mode not in ("P", "L"):
                raise DataError(f"{path}: a mask must be a palette or greyscale PNG of class ids, not mode {img.mode}")
            return np.asarray(img, dtype="uint8")
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a PNG mask") from None
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: cannot decode mask ({err})") from None


def _check_pair(image_path, label):
    """Reads one sample; returns the largest class id of a mask (or None)."""
    try:
        image = read_image(image_path)
    except ImageError as err:
        raise DataError(str(err)) from None
    if not isinstance(label, str):
        return None
    mask = read_mask(label)
    if mask.shape != (image.height, image.width):
        raise DataError(
            f"{label}: mask is {mask.shape[1]}x{mask.shape[0]}, its image {image_path} is "
            f"{image.width}x{image.height}"
        )
    ids = np.unique(mask)
    ids = ids[ids != IGNORE_LABEL]
    return (label, int(ids.max()) if ids.size else -1)


def check_dataset(dataset, num_classes=None, workers=8):
    """Reads every file once; returns the largest mask class id (or None).

    Raises:
        DataError: naming the first unreadable image, mask of another size
            than its image, or mask with a class id >= `num_classes` (255 aside).
    """
    pairs = []
    for split in (dataset.train, dataset.val):
        if split is not None:
            pairs += list(zip(split.images, split.labels))
    largest = -1
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for result in pool.map(lambda pair: _check_pair(*pair), pairs):
            if result is None:
                continue
            mask, top = result
            if num_classes is not None and top >= num_classes:
                raise DataError(f"{mask}: class id {top} >= the class count {num_classes} (255 is the ignore label)")
            largest = max(largest, top)
    return None if dataset.task == "classification" else largest


# ---------------------------------------------------------------- tf.data


def _path_text(path):
    """A path given to a `tf.numpy_function` (bytes in a tf.data map, a 0-d array eagerly) as text."""
    if isinstance(path, np.ndarray):
        path = path.item()
    return path.decode("utf8") if isinstance(path, bytes) else str(path)


def _decode_image(path):
    """Safe reader as a numpy function: (uint8 image, error message)."""
    path = _path_text(path)
    try:
        return np.asarray(read_image(path), dtype="uint8"), b""
    except ImageError as err:
        return np.zeros((1, 1, 3), "uint8"), str(err).encode("utf8")


def _decode_mask(path):
    path = _path_text(path)
    return read_mask(path)[..., None]


def tf_image(path):
    """Decodes an image file in a tf.data map: `(uint8 (h, w, 3), error string)`."""
    import tensorflow as tf

    image, error = tf.numpy_function(_decode_image, [path], [tf.uint8, tf.string], stateful=False)
    image.set_shape([None, None, 3])
    error.set_shape([])
    return image, error


def _eval_image(path, preprocessing, size):
    path = _path_text(path)
    image, _, message = read_for_prediction(path, preprocessing, size)
    if message:
        raise DataError(message)
    return image


def tf_eval_image(path, preprocessing, size):
    """The photo at `path` through the demo's reader and eval transform
    (`keras_lightnets.preprocessing.image.transform_for`), in a tf.data map:
    uint8 `(size, 3)`."""
    import tensorflow as tf

    image = tf.numpy_function(lambda p: _eval_image(p, preprocessing, size), [path], tf.uint8, stateful=False)
    image.set_shape([*size, 3])
    return image


def tf_mask(path):
    import tensorflow as tf

    mask = tf.numpy_function(_decode_mask, [path], tf.uint8, stateful=False)
    mask.set_shape([None, None, 1])
    return mask


def resize(image, size, method="bilinear"):
    """Resizes like Pillow (antialiased when shrinking); float32 out."""
    import tensorflow as tf

    antialias = method != "nearest"
    out = tf.image.resize(tf.cast(image, tf.float32), size, method=method, antialias=antialias)
    if method == "bicubic":
        out = tf.clip_by_value(out, 0.0, 255.0)
    return out


def _seeds(seed, epoch, index, count):
    """`count` independent stateless seeds for one sample of one epoch."""
    import tensorflow as tf

    base = tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64), tf.cast(index, tf.int64)])
    return tf.unstack(tf.random.experimental.stateless_split(base, num=count))


def _flip(seed, *images):
    import tensorflow as tf

    flip = tf.random.stateless_uniform([], seed) < 0.5
    return [tf.cond(flip, lambda im=im: tf.reverse(im, axis=[1]), lambda im=im: im) for im in images]


def _scale_crop(image, mask, size, seeds):
    """DeepLab's augmentation: random scale, pad (image 0, mask 255), random crop."""
    import tensorflow as tf

    scale = tf.random.stateless_uniform([], seeds[0], *SCALE_RANGE)
    scaled = tf.cast(tf.round(tf.constant(size, tf.float32) * scale), tf.int32)
    image = tf.image.resize(image, scaled, method="bilinear")
    mask = tf.image.resize(mask, scaled, method="nearest")
    pad_h = tf.maximum(size[0] - scaled[0], 0)
    pad_w = tf.maximum(size[1] - scaled[1], 0)
    paddings = [[0, pad_h], [0, pad_w], [0, 0]]
    image = tf.pad(image, paddings)
    mask = tf.pad(mask, paddings, constant_values=IGNORE_LABEL)
    limit = tf.shape(mask)[:2] - tf.constant(size) + 1
    offset = tf.random.stateless_uniform([2], seeds[1], 0, tf.int32.max, dtype=tf.int32) % limit
    image = image[offset[0] : offset[0] + size[0], offset[1] : offset[1] + size[1]]
    mask = mask[offset[0] : offset[0] + size[0], offset[1] : offset[1] + size[1]]
    return image, mask


def _options(tf):
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def training_dataset(dataset, split, preprocessing, size, batch_size, seed=0, epochs=1, training=True):
    """A batched `tf.data.Dataset` of `(image, label)` for `Model.fit`.

    Args:
        dataset: a `Dataset` from `find_dataset`.
        split: `dataset.train` or `dataset.val`.
        preprocessing: the weights' record `preprocessing` dict.
        size: `(height, width)` of the model input.
        batch_size: global batch size.
        seed: the seed of every random draw.
        epochs: training draws a new order and new augmentation per epoch,
            for this many epochs (repeat the result for more).
        training: augment and shuffle (and drop a last partial batch);
            otherwise the evaluation preprocessing only, in file order.

    Labels are class ids `(batch,)` or masks `(batch, h, w)` (uint8, 255 =
    ignore); images are float32, normalised by the record's `mode`.
    """
    import tensorflow as tf

    size = tuple(int(s) for s in size)
    method = preprocessing.get("resample") or "bilinear"
    segmentation = dataset.task == "segmentation"
    count = len(split.images)
    images = tf.constant(split.images)
    labels = tf.constant(split.labels)

    def load(index, epoch, path, label):
        seeds = _seeds(seed, epoch, index, 3)
        if segmentation:
            image, _ = tf_image(path)
            mask = tf_mask(label)
            image = resize(image, size, method)
            mask = tf.image.resize(mask, size, method="nearest")
            if training:
                image, mask = _scale_crop(image, mask, size, seeds)
                image, mask = _flip(seeds[2], image, mask)
            image = tf_preprocess(image, preprocessing)
            image.set_shape(size + (3,))
            return image, tf.reshape(mask, size)
        image = tf.cast(tf_eval_image(path, preprocessing, size), tf.float32)
        if training:
            (image,) = _flip(seeds[2], image)
        image = tf_preprocess(image, preprocessing)
        image.set_shape(size + (3,))
        return image, label

    def epoch_dataset(epoch):
        indices = tf.range(count, dtype=tf.int64)
        if training:
            indices = tf.random.experimental.stateless_shuffle(indices, seed=_seeds(seed, epoch, -1, 1)[0])
        ds = tf.data.Dataset.from_tensor_slices(indices)
        return ds.map(as_written(lambda i: (i, epoch, images[i], labels[i])))

    # The functions branch on Python values only (tf.cond where a tensor
    # decides): autograph's rewriting of them took 1.3 s of each run's start.
    as_written = tf.autograph.experimental.do_not_convert
    ds = tf.data.Dataset.range(epochs if training else 1).flat_map(as_written(epoch_dataset))
    ds = ds.map(as_written(load), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=training)
    batches = count // batch_size * epochs if training else -(-count // batch_size)
    ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options(tf))
