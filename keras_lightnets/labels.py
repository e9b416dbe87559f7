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
