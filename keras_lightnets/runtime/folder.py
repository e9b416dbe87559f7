"""Prediction over a folder of photos (`lightnets predict`).

    lightnets predict DIR --weights W.h5 --out results.jsonl

Every image under DIR (recursively) is read as the demo reads it (the safe
reader, the weights' own eval transform and preprocessing; a batch at a time,
decoded in threads: `keras_lightnets.training.data.prediction_batches`) and goes
through `keras_lightnets.runtime.folding.Predictor`. Each image gives one JSON line:

- classification: `{"file": "a/b.jpg", "top": [[class id, label, probability], ...]}`;
- segmentation: `{"file": ..., "mask": "results_masks/a/b.png", "pixels": {class id: fraction}}`,
  with the class map written as a palette PNG (Pascal VOC colours) in a
  folder beside the output (`<out stem>_masks/`), at the image's size; each
  photo is segmented as the demo does it (`keras_lightnets.runtime.segmentation`,
  letterbox included).

The run is resumable: files already in the output are skipped, and a
line cut short by an interrupted run is dropped. Unreadable files are
reported on stderr, one line each, and skipped.
"""

import json
import os
import sys

from keras_lightnets.errors import LightnetsError
from keras_lightnets.files import check_output_path
from keras_lightnets.training.data import list_images


class PredictError(LightnetsError, ValueError):
    """A user mistake (arguments, files); the message is one line."""


def done_files(out):
    """Files already in `out`; drops a last line cut short by an interrupted run
    (any line without its newline: a file counts as done only if its line is kept)."""
    if not os.path.exists(out):
        return set()
    done, keep = set(), 0
    with open(out, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break  # even if complete: it is cut away below, so its image is predicted again
            try:
                done.add(json.loads(line)["file"])
            except (ValueError, KeyError, TypeError):
                break
            keep += len(line)
    if keep != os.path.getsize(out):
        with open(out, "r+b") as f:
            f.truncate(keep)
    return done


def predict_folder(folder, weights, out, batch_size=32, top=5, progress=True, errors=None):
    """Predicts every image under `folder` and appends JSON lines to `out`.

    Returns `(predicted, skipped as [(path, message)])`.
    """
    import keras_lightnets as kl
    from keras_lightnets import registry

    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise PredictError(f"{folder}: no such folder")
    paths = list_images(folder)
    if not paths:
        raise PredictError(f"{folder}: no images")
    out = check_output_path(out)
    record = kl.weights_info(weights)
    done = done_files(out)
    names = {path: os.path.relpath(path, folder).replace(os.sep, "/") for path in paths}
    todo = [path for path in paths if names[path] not in done]

    import keras

    from keras_lightnets.labels import labels_for
    from keras_lightnets.runtime.folding import Predictor

    model = kl.from_h5(weights)
    predictor = Predictor(model)
    labels = labels_for(record, model.output_shape[-1])
    bar = keras.utils.Progbar(len(paths), unit_name="image") if progress else None
    if bar is not None and len(paths) - len(todo):
        bar.update(len(paths) - len(todo))
    if registry.task_of(record) == "segmentation":
        mask_root = os.path.splitext(out)[0] + "_masks"
        lines = _segmentation_lines(todo, names, predictor, record, mask_root, out)
    else:
        lines = _classification_lines(todo, names, predictor, model, record, labels, top, batch_size)
    skipped, predicted = [], 0
    errors = errors or sys.stderr
    with open(out, "a", encoding="utf8") as results:
        for path, line, message in lines:
            if message:
                skipped.append((path, message))
                print(f"skipped: {message}", file=errors, flush=True)
            else:
                results.write(json.dumps(line) + "\n")
                results.flush()
                predicted += 1
            if bar is not None:
                bar.add(1)
    return predicted, skipped


def _classification_lines(paths, names, predictor, model, record, labels, top, batch_size):
    """Yields `(path, result line or None, error message or "")`, a batch at a time."""
    import numpy as np

    from keras_lightnets.training.data import prediction_batches

    preprocessing = record.get("preprocessing") or {}
    size = tuple(model.input_shape[1:3])
    if None in size:
        size = (preprocessing["size"],) * 2 if preprocessing.get("size") else None
    activation = record.get("builder_kwargs", {}).get("classifier_activation", "softmax")
    position = 0
    for images, _, messages in prediction_batches(paths, preprocessing, size, batch_size):
        batch_paths = paths[position : position + len(messages)]
        position += len(messages)
        good = [i for i, message in enumerate(messages) if not message]
        outputs = iter(predictor(images if len(good) == len(images) else images[good]) if good else ())
        for path, message in zip(batch_paths, messages):
            if message:
                yield path, None, message
                continue
            output = next(outputs)
            probabilities = _softmax(output) if activation is None else output
            order = np.argsort(-probabilities, kind="stable")[:top]
            top_classes = [[int(c), labels[c], round(float(probabilities[c]), 6)] for c in order]
            yield path, {"file": names[path], "top": top_classes}, ""


def _segmentation_lines(paths, names, predictor, record, mask_root, out):
    """Yields `(path, result line or None, error message or "")`, one photo at a
    time, segmented as the demo segments (`keras_lightnets.runtime.segmentation`)."""
    import numpy as np
    from PIL import Image

    from keras_lightnets.files import write_atomically
    from keras_lightnets.labels import voc_palette
    from keras_lightnets.preprocessing.image import ImageError, read_image
    from keras_lightnets.runtime.segmentation import segment

    palette = voc_palette().reshape(-1).tolist()
    for path in paths:
        try:
            img = read_image(path)
        except ImageError as err:
            yield path, None, str(err)
            continue
        class_map = segment(img, predictor, record["preprocessing"]).astype("uint8")
        mask = Image.fromarray(class_map, "L").convert("P")
        mask.putpalette(palette)
        mask_path = os.path.join(mask_root, os.path.splitext(names[path])[0] + ".png")
        os.makedirs(os.path.dirname(mask_path), exist_ok=True)
        write_atomically(mask_path, lambda temp, mask=mask: mask.save(temp, format="PNG"))
        ids, counts = np.unique(class_map, return_counts=True)
        line = {
            "file": names[path],
            "mask": os.path.relpath(mask_path, os.path.dirname(out)).replace(os.sep, "/"),
            "pixels": {str(int(c)): round(float(n / counts.sum()), 6) for c, n in zip(ids, counts)},
        }
        yield path, line, ""


def _softmax(logits):
    import numpy as np

    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


