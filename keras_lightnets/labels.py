"""Class names: ImageNet's, Pascal VOC's, and the one rule that picks a model's labels.

The class index `data/imagenet_class_index.json` is the ILSVRC-2012 synset
list in the order every ImageNet model uses, in the format of Keras'
`imagenet_class_index.json` (`{"0": ["n01440764", "tench"], ...}`). It ships
with the package, so nothing is downloaded.
"""

import functools
import json
import os

import numpy as np


@functools.lru_cache(maxsize=1)
def class_index():
    """Returns the 1000 `(wnid, label)` pairs, indexed by class id."""
    path = os.path.join(os.path.dirname(__file__), "data", "imagenet_class_index.json")
    with open(path, encoding="utf8") as f:
        raw = json.load(f)
    return tuple(tuple(raw[str(i)]) for i in range(len(raw)))


def decode_predictions(preds, top=5):
    """Decodes a batch of ImageNet predictions, like keras.applications.

    Args:
        preds: array of shape `(batch, 1000)` (probabilities or logits).
        top: how many classes to return per image.

    Returns:
        A list (one per image) of lists of `(wnid, label, score)` tuples,
        highest score first.
    """
    preds = np.asarray(preds)
    classes = class_index()
    if preds.ndim != 2 or preds.shape[1] != len(classes):
        raise ValueError(
            f"decode_predictions expects a batch of shape (samples, {len(classes)}), "
            f"got {preds.shape}"
        )
    results = []
    for row in preds:
        order = np.argsort(-row, kind="stable")[:top]
        results.append([(*classes[i], float(row[i])) for i in order])
    return results


VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def voc_palette(classes=256):
    """Pascal VOC's colour map: `(classes, 3)` uint8, class c coloured by its bits."""
    palette = []
    for index in range(classes):
        colour, c = [0, 0, 0], index
        for shift in range(7, -1, -1):
            for channel in range(3):
                colour[channel] |= ((c >> channel) & 1) << shift
            c >>= 3
        palette.append(colour)
    return np.array(palette, dtype="uint8")


def labels_for(record, classes):
    """The class names of a model with `classes` outputs and weights record
    `record`: the record's own (fine-tuned files), Pascal VOC's for a
    21-class segmenter, ImageNet's for 1000 classes, else `class 0`, `class 1`, ..."""
    from keras_lightnets import registry

    names = record.get("class_names")
    if names and len(names) == classes:
        return list(names)
    if classes == len(VOC_CLASSES) and registry.task_of(record) == "segmentation":
        return list(VOC_CLASSES)
    if classes == 1000:
        return [label for _, label in class_index()]
    return [f"class {i}" for i in range(classes)]


def top_classes(scores, record, top=5):
    """`[(class id, label, score)]` of one image's scores, best first: the
    ImageNet synset id (`n07920052`) for ImageNet's 1000 classes, else the
    class index; labels from `labels_for`."""
    scores = np.asarray(scores)
    labels = labels_for(record, scores.shape[-1])
    imagenet = scores.shape[-1] == len(class_index()) and not record.get("class_names")
    order = np.argsort(-scores, kind="stable")[:top]
    return [(class_index()[i][0] if imagenet else str(int(i)), labels[i], float(scores[i])) for i in order]
