"""Batch prediction over a folder: `python -m keras_lightnets.runtime.folder`.

    python -m keras_lightnets.runtime.folder DIR --weights W.h5 --out results.jsonl

Every image under DIR (recursively) is read as the demo reads it (the safe
reader, the weights' own eval transform and preprocessing; a batch at a time,
decoded in threads: `keras_lightnets.training.data.prediction_batches`) and goes
through `keras_lightnets.runtime.folding.Predictor`. Each image gives one JSON line:

- classification: `{"file": "a/b.jpg", "top": [[class id, label, probability], ...]}`;
- segmentation: `{"file": ..., "mask": "results_masks/a/b.png", "pixels": {class id: fraction}}`,
  with the class map written as a palette PNG (Pascal VOC colours) in a
  folder beside the output (`<out stem>_masks/`), at the image's size.

The run is resumable: files already in the output are skipped, and a
line cut short by an interrupted run is dropped. Unreadable files are
reported on stderr, one line each, and skipped.
"""

import argparse
import json
import os
import sys

from keras_lightnets.training.data import list_images

SEGMENTATION_BUILDERS = ("DeepLabV3Plus",)


class PredictError(ValueError):
    """A user mistake (arguments, files); the message is one line."""


def done_files(out):
    """Files already in `out`; drops a last line cut short by an interrupted run."""
    if not os.path.exists(out):
        return set()
    done, keep = set(), 0
    with open(out, "rb") as f:
        for line in f:
            try:
                done.add(json.loads(line)["file"])
            except (ValueError, KeyError, TypeError):
                break
            if not line.endswith(b"\n"):
                break
            keep += len(line)
    if keep != os.path.getsize(out):
        with open(out, "r+b") as f:
            f.truncate(keep)
    return done


def labels_for(record, classes):
    """Class names: the record's (fine-tuned files), ImageNet's for 1000 classes, else None."""
    names = record.get("class_names")
    if names and len(names) == classes:
        return list(names)
    if record.get("builder") in SEGMENTATION_BUILDERS and classes == 21:
        from keras_lightnets.models.deeplab import VOC_CLASSES

        return list(VOC_CLASSES)
    if classes == 1000:
        from keras_lightnets.labels import class_index

        return [label for _, label in class_index()]
    return None


def _softmax(logits):
    import numpy as np

    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def predict_folder(folder, weights, out, batch_size=32, top=5, progress=True, errors=None):
    """Predicts every image under `folder` and appends JSON lines to `out`.

    Returns `(predicted, skipped as [(path, message)])`.
    """
    import keras_lightnets as kl
    from keras_lightnets.training.data import prediction_batches
    from keras_lightnets.weights.h5 import WeightsMismatchError

    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise PredictError(f"{folder}: no such folder")
    paths = list_images(folder)
    if not paths:
        raise PredictError(f"{folder}: no images")
    out = os.path.abspath(os.fspath(out))
    if not os.path.isdir(os.path.dirname(out)):
        raise PredictError(f"{os.path.dirname(out)}: no such directory")
    try:
        record = kl.weights_info(weights)
    except (WeightsMismatchError, FileNotFoundError) as err:
        raise PredictError(str(err)) from None
    done = done_files(out)
    names = {path: os.path.relpath(path, folder).replace(os.sep, "/") for path in paths}
    todo = [path for path in paths if names[path] not in done]

    import keras

    from keras_lightnets.runtime.folding import Predictor

    model = kl.from_h5(weights)
    segmentation = record.get("builder") in SEGMENTATION_BUILDERS
    preprocessing = record.get("preprocessing") or {}
    size = tuple(model.input_shape[1:3])
    if None in size:
        size = (preprocessing["size"],) * 2 if preprocessing.get("size") else None
    classes = model.output_shape[-1]
    labels = labels_for(record, classes)
    mask_root = os.path.splitext(out)[0] + "_masks"
    palette = None
    if segmentation:
        from keras_lightnets.models.deeplab import voc_palette

        palette = voc_palette().reshape(-1).tolist()
    predictor = Predictor(model)
    bar = keras.utils.Progbar(len(paths), unit_name="image") if progress else None
    if bar is not None and len(paths) - len(todo):
        bar.update(len(paths) - len(todo))
    skipped, predicted, position = [], 0, 0
    errors = errors or sys.stderr
    with open(out, "a", encoding="utf8") as results:
        for images, shapes, messages in prediction_batches(todo, preprocessing, size, batch_size):
            batch_paths = todo[position : position + len(messages)]
            position += len(messages)
            good = [i for i, m in enumerate(messages) if not m]
            for i, message in enumerate(messages):
                if message:
                    skipped.append((batch_paths[i], message))
                    print(f"skipped: {message}", file=errors, flush=True)
            if good:
                outputs = predictor(images if len(good) == len(images) else images[good])  # no copy of a whole batch
                for row, i in enumerate(good):
                    name = names[batch_paths[i]]
                    if segmentation:
                        line = _segmentation_line(name, outputs[row], shapes[i], mask_root, out, palette)
                    else:
                        line = _classification_line(name, outputs[row], labels, top, record)
                    results.write(json.dumps(line) + "\n")
                predicted += len(good)
                results.flush()
            if bar is not None:
                bar.add(len(messages))
    return predicted, skipped


def _classification_line(name, output, labels, top, record):
    import numpy as np

    activation = record.get("builder_kwargs", {}).get("classifier_activation", "softmax")
    probabilities = _softmax(output) if activation is None else output
    order = np.argsort(-probabilities, kind="stable")[:top]
    return {
        "file": name,
        "top": [
            [int(c), labels[c] if labels else str(int(c)), round(float(probabilities[c]), 6)] for c in order
        ],
    }


def _segmentation_line(name, output, shape, mask_root, out, palette):
    import numpy as np
    from PIL import Image

    class_map = np.argmax(output, axis=-1).astype("uint8")
    image = Image.fromarray(class_map, "L").convert("P")
    height, width = int(shape[0]), int(shape[1])
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.NEAREST)
    image.putpalette(palette)
    mask_path = os.path.join(mask_root, os.path.splitext(name)[0] + ".png")
    os.makedirs(os.path.dirname(mask_path), exist_ok=True)
    tmp = mask_path + ".tmp"
    image.save(tmp, format="PNG")
    os.replace(tmp, mask_path)
    ids, counts = np.unique(np.asarray(image), return_counts=True)
    total = counts.sum()
    return {
        "file": name,
        "mask": os.path.relpath(mask_path, os.path.dirname(out)).replace(os.sep, "/"),
        "pixels": {str(int(c)): round(float(n / total), 6) for c, n in zip(ids, counts)},
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_lightnets.runtime.folder",
        description="Predict every image under a folder with a keras-lightnets weights file; "
        "one JSON line per image (class maps as PNGs for segmentation weights).",
    )
    parser.add_argument("folder", help="folder of images (searched recursively)")
    parser.add_argument("--weights", required=True, help="a .h5 file written by the converter or the fine-tuner")
    parser.add_argument("--out", required=True, help="results.jsonl (appended to; files already there are skipped)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--top", type=int, default=5, help="classes per image (classification)")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.top < 1:
        parser.error("--batch-size and --top must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        predicted, skipped = predict_folder(args.folder, args.weights, args.out, args.batch_size, args.top)
    except PredictError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{predicted} images predicted, {len(skipped)} skipped -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
