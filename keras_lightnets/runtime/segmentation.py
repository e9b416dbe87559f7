"""Segmenting one photo as its weights' record prescribes (the demo and predict share it)."""

import numpy as np

from keras_lightnets.preprocessing import preprocess_input
from keras_lightnets.preprocessing.image import letterbox


def _softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def segment(img, predict, preprocessing):
    """The class map (`(height, width)` int array) of a Pillow RGB photo at its own size.

    Args:
        img: the photo (`keras_lightnets.preprocessing.image.read_image`).
        predict: a callable from a preprocessed batch to logits, e.g. a `Predictor`.
        preprocessing: the weights record's `preprocessing`.

    `"resize": "letterbox"` (bubbliiiing's `detect_image`): the photo is
    letterboxed to the recorded size; the class probabilities are cropped
    back to the photo's box and resized (bilinear, half-pixel) to the photo
    before the argmax. Otherwise the photo goes in at its own size.
    """
    if preprocessing.get("resize") != "letterbox":
        pixels = np.asarray(img, dtype="float32")
        return np.asarray(predict(preprocess_input(pixels[None], preprocessing)))[0].argmax(-1)
    import keras

    boxed, (top, left, height, width) = letterbox(
        img, preprocessing["size"], preprocessing.get("resample", "bicubic"), preprocessing.get("fill", 128)
    )
    logits = np.asarray(predict(preprocess_input(boxed[None], preprocessing)))[0]
    probabilities = _softmax(logits[top : top + height, left : left + width])
    probabilities = keras.ops.image.resize(
        probabilities, (img.height, img.width), interpolation="bilinear", antialias=False
    )
    return np.asarray(probabilities).argmax(-1)
