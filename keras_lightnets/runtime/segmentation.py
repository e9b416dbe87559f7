"""Segmenting one photo as its weights' record prescribes (the demo, predict and evaluate share it)."""

import numpy as np

from keras_lightnets.preprocessing import preprocess_input
from keras_lightnets.preprocessing.image import letterbox, transform_for

# output rows interpolated at a time: a 12-megapixel photo's 21 class scores
# at full size would take a gigabyte
_ROWS_PER_BAND = 128


def _softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def _bilinear_taps(source, target):
    """`(lower, upper, upper weight)` index arrays that resize an axis of
    `source` samples to `target` with half-pixel centres and no antialiasing
    (`torch.nn.functional.interpolate(..., "bilinear", align_corners=False)`)."""
    position = np.maximum((np.arange(target) + 0.5) * (source / target) - 0.5, 0.0)
    lower = np.minimum(np.floor(position).astype("int64"), source - 1)
    upper = np.minimum(lower + 1, source - 1)
    return lower, upper, (position - lower).astype("float32")


def resized_argmax(scores, height, width):
    """The argmax over classes of `scores` `(h, w, classes)` resized bilinearly
    (half-pixel centres, no antialiasing) to `(height, width)`, computed a band
    of rows at a time: an int array `(height, width)`."""
    rows, (left, right, right_weight) = _bilinear_taps(scores.shape[0], height), _bilinear_taps(scores.shape[1], width)
    right_weight = right_weight[None, :, None]
    class_map = np.empty((height, width), "int64")
    for start in range(0, height, _ROWS_PER_BAND):
        band = slice(start, start + _ROWS_PER_BAND)
        lower, upper, weight = (taps[band] for taps in rows)
        # a + w (b - a), in place: the band's arrays are the large ones
        band_rows = scores[upper] - scores[lower]
        band_rows *= weight[:, None, None]
        band_rows += scores[lower]
        interpolated, step = band_rows[:, left], band_rows[:, right]
        step -= interpolated
        step *= right_weight
        interpolated += step
        class_map[band] = interpolated.argmax(-1)
    return class_map


def segment(img, predict, preprocessing):
    """The class map (`(height, width)` int array) of a Pillow RGB photo at its own size.

    Args:
        img: the photo (`keras_lightnets.preprocessing.image.read_image`).
        predict: a callable from a preprocessed batch to logits, e.g. a `Predictor`.
        preprocessing: the weights record's `preprocessing`.

    How the photo meets the network follows the record:
    `"resize": "letterbox"` (bubbliiiing's `detect_image`): the photo is
    letterboxed to the recorded size; the class probabilities are cropped
    back to the photo's box and resized to the photo before the argmax.
    `"resize": N` without a `size` (torchvision's segmentation weights,
    `SemanticSegmentation(resize_size=520)`): the photo's shorter side is
    resized to N; the logits are resized to the photo before the argmax, as
    the network resizes its own. Otherwise the photo goes in at its own size.
    Resizing back is bilinear with half-pixel centres.
    """
    resize = preprocessing.get("resize")
    if resize == "letterbox":
        boxed, (top, left, height, width) = letterbox(
            img, preprocessing["size"], preprocessing.get("resample", "bicubic"), preprocessing.get("fill", 128)
        )
        logits = np.asarray(predict(preprocess_input(boxed[None], preprocessing)))[0]
        return resized_argmax(_softmax(logits[top : top + height, left : left + width]), img.height, img.width)
    pixels = transform_for(img, preprocessing, preprocessing.get("size"))
    logits = np.asarray(predict(preprocess_input(pixels[None], preprocessing)))[0]
    if logits.shape[:2] == (img.height, img.width):
        return logits.argmax(-1)
    return resized_argmax(logits, img.height, img.width)
