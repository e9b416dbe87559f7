"""Input preprocessing: ONE table of the modes every weights source uses.

Every mode is `(x[..., order] / divisor - mean) / std` on RGB pixels 0-255,
written in the order of operations of the source's own code (torchvision's
`ToTensor` + `Normalize` divides by 255 first; keras.applications'
`x / 127.5 - 1`), so that the float32 results are the source's bit for bit.
The same table gives the numpy function (`preprocess_input`, and
`preprocess_uint8` by table look-up), the TensorFlow ops of the tf.data
pipelines (`tf_preprocess`) and the Keras layer of exports and
`include_preprocessing=True` models (`Preprocess`).

A mode is named by a weights record's `preprocessing` dict (its `"mode"`,
and `"mean"`/`"std"` in 0-1 units for `"meanstd"`, timm's per-weights
normalisation) or by the mode's name.
"""

import dataclasses
import functools

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
RGB, BGR = (0, 1, 2), (2, 1, 0)


@dataclasses.dataclass(frozen=True)
class Normalization:
    """`(x[..., order] / divisor - mean) / std`, per output channel."""

    order: tuple = RGB
    divisor: float = 1.0
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)
    description: str = ""


MODES = {
    "tf": Normalization(RGB, 127.5, (1.0,) * 3, (1.0,) * 3, "x / 127.5 - 1 (scales to [-1, 1])"),
    "torch": Normalization(RGB, 255.0, IMAGENET_MEAN, IMAGENET_STD, "x / 255, then ImageNet mean/std per channel"),
    "caffe": Normalization(BGR, 1.0, CAFFE_MEAN_BGR, (1.0,) * 3, "RGB to BGR, then minus the ImageNet BGR mean"),
    "lite": Normalization(RGB, 1.0, (127.0,) * 3, (128.0,) * 3, "(x - 127) / 128 (EfficientNet-Lite, TFLite models)"),
    "bgr": Normalization(BGR, 1.0, (0.0,) * 3, (1.0,) * 3, "RGB to BGR, values kept in 0-255 (megvii's ShuffleNet)"),
    "unit": Normalization(RGB, 255.0, (0.0,) * 3, (1.0,) * 3, "x / 255, no mean/std (bubbliiiing's DeepLabV3+)"),
    "meanstd": Normalization(RGB, 255.0, description="x / 255, then the record's own mean/std (timm's weights)"),
}
PREPROCESSING_MODES = {name: mode.description for name, mode in MODES.items()}


def normalization(mode):
    """The `Normalization` of a mode name or of a weights record's `preprocessing` dict."""
    record = mode if isinstance(mode, dict) else {"mode": mode}
    name = record.get("mode")
    if not isinstance(name, str) or name not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {name!r}")
    if name != "meanstd":
        return MODES[name]
    mean, std = record.get("mean"), record.get("std")
    values = [v for v in (mean, std) if isinstance(v, (list, tuple)) and len(v) == 3]
    if len(values) != 2 or not all(isinstance(x, (int, float)) for v in values for x in v) or min(std) <= 0:
        raise ValueError(f"mode 'meanstd' needs 3 means and 3 positive stds, got mean={mean!r}, std={std!r}")
    return dataclasses.replace(MODES["meanstd"], mean=tuple(map(float, mean)), std=tuple(map(float, std)))


def _constants(norm):
    return (
        np.float32(norm.divisor),
        np.asarray(norm.mean, dtype="float32"),
        np.asarray(norm.std, dtype="float32"),
    )


def preprocess_input(x, mode="tf"):
    """Preprocesses RGB images with values in [0, 255] for a model.

    Args:
        x: array of shape `(..., height, width, 3)`, RGB, values 0-255.
        mode: a mode name — `"tf"` (x / 127.5 - 1), `"torch"` (x / 255 then
            ImageNet mean/std), `"caffe"` (BGR, mean subtracted, not scaled),
            `"lite"` ((x - 127) / 128), `"bgr"` (BGR, not scaled), `"unit"`
            (x / 255) — or a weights record's `preprocessing` dict (for
            `"meanstd"`, timm's per-weights mean/std).

    Returns:
        A float32 array of the same shape (a new array; `x` is not modified).
    """
    norm = normalization(mode)
    x = np.asarray(x, dtype="float32")
    if x.shape[-1:] != (3,):
        raise ValueError(f"expected RGB images with 3 channels last, got shape {x.shape}")
    divisor, mean, std = _constants(norm)
    if norm.order != RGB:
        x = x[..., list(norm.order)]
    return (x / divisor - mean) / std


@functools.lru_cache(maxsize=None)
def _lookup_table(norm):
    """`preprocess_input` of 8-bit values as a `(3, 256)` float32 table, one row per output channel."""
    grey = np.repeat(np.arange(256, dtype="float32")[:, None], 3, axis=1)
    divisor, mean, std = _constants(norm)
    return np.ascontiguousarray(((grey / divisor - mean) / std).T)


def preprocess_uint8(images, mode="tf", out=None):
    """`preprocess_input` of uint8 images, equal to it bit for bit, by table
    look-up: one pass over the pixels instead of three or four float passes
    (the batch reader's normalisation).

    Args:
        images: uint8 array `(..., height, width, 3)`, RGB.
        mode: as for `preprocess_input`.
        out: optional float32 array of the same shape to write into (e.g.
            one image of a preallocated batch).

    Returns:
        `out`, or a new float32 array.
    """
    norm = normalization(mode)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[-1:] != (3,):
        raise ValueError(f"expected uint8 RGB images with 3 channels last, got {images.dtype} {images.shape}")
    table = _lookup_table(norm)
    if out is None:
        out = np.empty(images.shape, dtype="float32")
    for channel, source in enumerate(norm.order):
        out[..., channel] = table[channel].take(images[..., source])
    return out


def tf_preprocess(x, mode):
    """`preprocess_input(x, mode)` in TensorFlow ops (float32 in and out), for tf.data."""
    import tensorflow as tf

    norm = normalization(mode)
    divisor, mean, std = _constants(norm)
    if norm.order != RGB:
        x = tf.gather(x, list(norm.order), axis=-1)
    return (x / divisor - tf.constant(mean)) / tf.constant(std)


def preprocessing_layer(mode, name="preprocess"):
    """The Keras layer applying `preprocess_input(x, mode)` inside a model."""
    norm = normalization(mode)
    from keras_lightnets.preprocessing.layer import Preprocess

    return Preprocess(list(norm.order), norm.divisor, list(norm.mean), list(norm.std), name=name)
