"""Input preprocessing: the modes of every weights source."""

import functools

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype="float32")
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype="float32")
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype="float32")

PREPROCESSING_MODES = {
    "tf": "x / 127.5 - 1 (scales to [-1, 1])",
    "torch": "x / 255, then ImageNet mean/std per channel",
    "caffe": "RGB to BGR, then minus the ImageNet BGR mean",
    "lite": "(x - 127) / 128 (EfficientNet-Lite, TFLite models)",
    "bgr": "RGB to BGR, values kept in 0-255 (megvii's ShuffleNet models)",
    "unit": "x / 255, no mean/std (bubbliiiing's DeepLabV3+ models)",
}


def preprocess_input(x, mode="tf"):
    """Preprocesses RGB images with values in [0, 255] for a model.

    Args:
        x: array of shape `(..., height, width, 3)`, RGB, values 0-255.
        mode: one of `"tf"` (x / 127.5 - 1), `"torch"` (x / 255 then ImageNet
            mean/std), `"caffe"` (BGR, mean subtracted, not scaled), `"lite"`
            ((x - 127) / 128), `"bgr"` (BGR, not scaled), `"unit"` (x / 255).

    Returns:
        A float32 array of the same shape (a new array; `x` is not modified).
    """
    x = np.asarray(x, dtype="float32")
    if x.shape[-1:] != (3,):
        raise ValueError(f"expected RGB images with 3 channels last, got shape {x.shape}")
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "torch":
        return (x / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    if mode == "caffe":
        return x[..., ::-1] - CAFFE_MEAN_BGR
    if mode == "lite":
        return (x - 127.0) / 128.0
    if mode == "bgr":
        return x[..., ::-1].copy()
    if mode == "unit":
        return x / 255.0
    raise ValueError(f"mode must be one of {sorted(PREPROCESSING_MODES)}, got {mode!r}")


@functools.lru_cache(maxsize=None)
def _lookup_table(mode):
    """`preprocess_input` of 8-bit images as a table: `(source channel of
    each output channel, (3, 256) float32 values)`."""
    grey = np.repeat(np.arange(256, dtype="float32")[:, None], 3, axis=1)
    table = np.ascontiguousarray(preprocess_input(grey, mode).T)
    # which input channel moves each output channel ("caffe" and "bgr" swap R and B)
    moved = preprocess_input(255 * np.eye(3, dtype="float32"), mode) != preprocess_input(np.zeros((3, 3)), mode)
    return tuple(int(channel) for channel in moved.argmax(axis=0)), table


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
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[-1:] != (3,):
        raise ValueError(f"expected uint8 RGB images with 3 channels last, got {images.dtype} {images.shape}")
    if mode not in PREPROCESSING_MODES:
        raise ValueError(f"mode must be one of {sorted(PREPROCESSING_MODES)}, got {mode!r}")
    sources, table = _lookup_table(mode)
    if out is None:
        out = np.empty(images.shape, dtype="float32")
    for channel, source in enumerate(sources):
        out[..., channel] = table[channel].take(images[..., source])
    return out
