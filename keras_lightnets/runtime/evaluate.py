"""Accuracy on labelled photos: top-1/top-5 (classification) or mIoU (segmentation).

    lightnets evaluate DIR --weights W.h5 [--runtimes keras,tflite,int8] [--limit N]

Layouts of DIR (`find_samples`):
- class sub-folders, `DIR/<class>/*.jpg`, each named by ImageNet synset id
  (`n01440764`), class name (`tench`, `Egyptian_cat` or `Egyptian cat`) or
  class index (`0`); for fine-tuned weights, by the record's class names;
- ImageNet-val: a flat folder of photos and a labels file (`--labels`, or
  the one .txt/.csv file in DIR): one label per line in sorted file order
  (the ILSVRC2012 validation ground-truth format), or `filename label`
  lines (a header line is skipped). A label is a synset id, a class name
  or a 0-based class index in the model's order (the devkit's 1-based
  ILSVRC2012 IDs are not: give synset ids instead);
- segmentation weights: `DIR/images/NAME.*` + `DIR/masks/NAME.png`, or
  `DIR/val/` (or `DIR/train/`) of that layout, or a Pascal VOC root (its
  val list): class-id masks, 255 ignored (`keras_lightnets.training.data`).

Each photo is read exactly as the weights' record says, by the reader the
demo and folder prediction use (`keras_lightnets.preprocessing.batches.prediction_batches`).
Runtimes: `keras` (the Keras model), `tflite` (`Predictor`'s fp32 TFLite,
BatchNorm folded), `int8` (an int8 TFLite calibrated on a held-out tenth of
the folder, at most 100 photos, which then none of the runtimes is scored on).
"""

import dataclasses
import os
import re

import numpy as np

from keras_lightnets.errors import LightnetsError
from keras_lightnets.files import is_image_name, list_images, open_regular
from keras_lightnets.training.data import IGNORE_LABEL

RUNTIMES = ("keras", "tflite", "int8")
LABEL_FILE_SUFFIXES = (".txt", ".csv")
CALIBRATION_SHARE, CALIBRATION_MAX = 10, 100  # int8: a tenth of the photos, at most 100


class EvaluateError(LightnetsError, ValueError):
    """A folder, labels file or request that cannot be evaluated; one-line message."""


@dataclasses.dataclass
class Samples:
    """The labelled photos of a folder.

    Attributes:
        task: "classification" or "segmentation".
        layout: "folders", "labels-file" or the segmentation layout.
        paths: image files.
        labels: class ids (classification) or mask files (segmentation).
    """

    task: str
    layout: str
    paths: list
    labels: list


@dataclasses.dataclass
class Result:
    """One runtime's scores (the table row and JSON line)."""

    runtime: str
    images: int
    scores: dict  # top1/top5, or miou/pixel_accuracy

    def json(self, weights, skipped):
        return {"runtime": self.runtime, "images": self.images, **self.scores, "skipped": skipped, "weights": weights}


# ---------------------------------------------------------------- class names


def _normal(name):
    return re.sub(r"[\s\-]+", "_", name.strip()).lower()


def class_lookup(record, classes):
    """`{name: class id}` for labels: the class names (`labels_for`: the
    record's for fine-tuned files, ImageNet's for 1000 classes), ImageNet's
    synset ids, and indices. A name two classes share maps to None (ambiguous)."""
    from keras_lightnets.labels import class_index, labels_for

    lookup = {str(i): i for i in range(classes)}
    pairs = list((name, i) for i, name in enumerate(labels_for(record, classes)))
    if classes == len(class_index()) and not record.get("class_names"):
        pairs += [(wnid, i) for i, (wnid, _) in enumerate(class_index())]
    for name, index in pairs:
        for key in {name, _normal(name)}:
            lookup[key] = index if lookup.get(key, index) == index else None
    return lookup


def resolve_label(lookup, label, where):
    """The class id of `label` (a folder name or a labels-file entry)."""
    index = lookup.get(label, lookup.get(_normal(label), "missing"))
    if index is None:
        raise EvaluateError(f"{where}: {label!r} names two classes; use the synset id or class index")
    if index == "missing":
        classes = sum(key.isdigit() for key in lookup)
        raise EvaluateError(
            f"{where}: {label!r} is no class of these weights "
            f"(a synset id, a class name or an index 0-{classes - 1})"
        )
    return index


# ---------------------------------------------------------------- layouts


def _class_folders(folder):
    names = sorted(n for n in os.listdir(folder) if not n.startswith(".") and os.path.isdir(os.path.join(folder, n)))
    return [n for n in names if list_images(os.path.join(folder, n), on_skip=lambda path, message: None)]


def _label_file(folder, labels):
    if labels is not None:
        if not os.path.isfile(labels):
            raise EvaluateError(f"--labels {labels}: no such file")
        return labels
    found = sorted(n for n in os.listdir(folder) if n.lower().endswith(LABEL_FILE_SUFFIXES) and not n.startswith("."))
    if len(found) != 1:
        what = "no labels file" if not found else f"{len(found)} possible labels files ({', '.join(found[:3])})"
        raise EvaluateError(f"{folder}: no class sub-folders and {what}; give --labels FILE")
    return os.path.join(folder, found[0])


def _read_label_lines(path):
    try:
        with open_regular(path) as f:  # a FIFO named labels.txt: refused, never waited on
            text = f.read(64 << 20).decode("utf8")
    except (OSError, UnicodeDecodeError) as err:
        raise EvaluateError(f"{path}: cannot read it ({err})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append((number, [field for field in re.split(r"[,\s]+", line) if field]))
    if not rows:
        raise EvaluateError(f"{path}: no labels")
    return rows


def labels_from_file(path, images, lookup, classes):
    """`(paths, class ids)` of the images the labels file `path` labels."""
    rows = _read_label_lines(path)
    if all(len(fields) == 1 for _, fields in rows):  # one label per image, in sorted file order
        if len(rows) != len(images):
            raise EvaluateError(f"{path}: {len(rows)} labels for {len(images)} images (one per line, in file order)")
        labelled = list(zip(images, (fields[0] for _, fields in rows), (n for n, _ in rows)))
    else:
        by_name = {}
        for image in images:
            name = os.path.basename(image)
            by_name.setdefault(name, image)
            by_name.setdefault(os.path.splitext(name)[0], image)
        if rows[0][1][0] not in by_name:  # a header such as "ImageId,PredictionString"
            rows = rows[1:]
        labelled = [(by_name[f[0]], f[1], n) for n, f in rows if f[0] in by_name and len(f) > 1]
        unlabelled = sorted(set(images) - {image for image, _, _ in labelled})
        if unlabelled:
            first = os.path.basename(unlabelled[0])
            raise EvaluateError(f"{path}: no label for {len(unlabelled)} images (first: {first})")
    numbers = [int(label) for _, label, _ in labelled if label.isdigit()]
    if classes == 1000 and numbers and min(numbers) >= 1 and max(numbers) == 1000:
        raise EvaluateError(
            f"{path}: labels run 1-1000, the ILSVRC2012 devkit's IDs (not class indices 0-999 in the "
            "model's order); give synset ids instead (e.g. 'ILSVRC2012_val_00000001.JPEG n01751748')"
        )
    ids = [resolve_label(lookup, label, f"{path} line {number}") for _, label, number in labelled]
    return [image for image, _, _ in labelled], ids


def _segmentation_samples(folder):
    from keras_lightnets.training.data import DataError, segmentation_split, voc_split

    try:
        if all(os.path.isdir(os.path.join(folder, sub)) for sub in ("JPEGImages", "SegmentationClass")):
            split = voc_split(folder, "val") or voc_split(folder, "train")
            if split is None:
                raise EvaluateError(f"{folder}: Pascal VOC layout without ImageSets/Segmentation/val.txt")
            return Samples("segmentation", "voc", split.images, split.labels)
        for sub in ("", "val", "train"):
            root = os.path.join(folder, sub)
            if os.path.isdir(os.path.join(root, "images")):
                split = segmentation_split(root)
                return Samples("segmentation", "images+masks", split.images, split.labels)
    except DataError as err:
        raise EvaluateError(str(err)) from None
    raise EvaluateError(f"{folder}: no images/ and masks/ folders (nor val/images, nor a Pascal VOC root)")


def find_samples(folder, record, labels=None):
    """The labelled photos of `folder` for the weights' `record` (see the module's layouts)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise EvaluateError(f"{folder}: no such folder")
    from keras_lightnets.registry import task_of

    if task_of(record) == "segmentation":
        return _segmentation_samples(folder)
    classes = int(record.get("builder_kwargs", {}).get("classes", 1000))
    lookup = class_lookup(record, classes)
    class_folders = _class_folders(folder)
    loose = [n for n in os.listdir(folder) if is_image_name(n) and os.path.isfile(os.path.join(folder, n))]
    if class_folders and loose:
        raise EvaluateError(f"{folder}: both class sub-folders and loose images ({loose[0]}); keep one layout")
    if class_folders:
        if labels is not None:
            raise EvaluateError("--labels applies to a flat folder of images, not to class sub-folders")
        paths, ids = [], []
        for name in class_folders:
            index = resolve_label(lookup, name, os.path.join(folder, name))
            found = list_images(os.path.join(folder, name))
            paths += found
            ids += [index] * len(found)
        return Samples("classification", "folders", paths, ids)
    images = list_images(folder, recursive=False)
    if not images:
        raise EvaluateError(f"{folder}: no images (class sub-folders, or photos with a labels file)")
    paths, ids = labels_from_file(_label_file(folder, labels), images, lookup, classes)
    return Samples("classification", "labels-file", paths, ids)


def split_calibration(count, limit=None, calibrate=False, seed=0):
    """`(indices scored, indices calibrating int8)`: a held-out spread of a
    tenth (at most 100) for int8, and of the rest at most `limit`, spread
    over the folder (not its first classes), in file order."""
    order = np.random.default_rng(seed).permutation(count)
    held = min(CALIBRATION_MAX, max(1, count // CALIBRATION_SHARE)) if calibrate else 0
    if calibrate and count < 2:
        raise EvaluateError("--runtimes int8 holds out photos to calibrate on: at least 2 images needed")
    calibration, scored = order[:held], order[held:]
    if limit is not None:
        scored = scored[:limit]
    return sorted(scored.tolist()), sorted(calibration.tolist())


# ---------------------------------------------------------------- scoring


def topk_hits(outputs, labels, k):
    """How many rows of `outputs` have their label among their `k` highest."""
    k = min(k, outputs.shape[-1])
    top = np.argpartition(-outputs, k - 1, axis=-1)[:, :k]
    return int((top == np.asarray(labels)[:, None]).any(axis=-1).sum())


def confusion(class_map, mask, classes):
    """`(classes, classes)` counts of (true, predicted) over the mask's labelled pixels."""
    keep = mask != IGNORE_LABEL
    truth, predicted = mask[keep].astype("int64"), class_map[keep].astype("int64")
    if truth.size and truth.max() >= classes:
        raise EvaluateError(f"a mask holds class id {int(truth.max())}, but the weights have {classes} classes")
    return np.bincount(truth * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def miou(matrix):
    """`(mean IoU over the classes present in masks or predictions, pixel accuracy)`."""
    intersection = np.diag(matrix).astype("float64")
    union = matrix.sum(0) + matrix.sum(1) - intersection
    present = union > 0
    mean = float((intersection[present] / union[present]).mean()) if present.any() else 0.0
    total = matrix.sum()
    return mean, float(intersection.sum() / total) if total else 0.0


# ---------------------------------------------------------------- runtimes


def predictors(model, runtimes, calibration=None):
    """`{runtime: predict}`, each mapping a preprocessed batch to class scores.

    `calibration`: preprocessed photos for the int8 model (int8 only).
    """
    from keras_lightnets.runtime.predictor import Predictor
    from keras_lightnets.runtime.tflite import Runner, tflite_bytes

    found = {}
    for runtime in runtimes:
        if runtime == "keras":
            found[runtime] = model.predict_on_batch
        elif runtime == "tflite":
            found[runtime] = Predictor(model, runtime="tflite")
        elif runtime == "int8":  # runtime/export.py's int8 path: the plain graph, calibrated
            found[runtime] = Runner(tflite_bytes(model, "int8", calibration))
    return found


def _progress(total):
    import keras

    return keras.utils.Progbar(total, unit_name="image")


def _advance(bar, count):
    """Progbar writes to stdout; the bar goes to stderr, stdout keeps the results."""
    import contextlib
    import sys

    with contextlib.redirect_stdout(sys.stderr):
        bar.add(count)


def input_size(model, preprocessing):
    """The `(height, width)` photos are read at, or None (each at its own size)."""
    size = tuple(model.input_shape[1:3])
    if None in size:
        return (preprocessing["size"],) * 2 if preprocessing.get("size") else None
    return size


def _read_batches(paths, preprocessing, size, batch_size, skipped, on_skip):
    """`prediction_batches` without the unreadable photos: `(images, indices into paths)`."""
    from keras_lightnets.preprocessing.batches import prediction_batches

    start = 0
    for images, _, messages in prediction_batches(paths, preprocessing, size, batch_size):
        good = [i for i, message in enumerate(messages) if not message]
        for i, message in enumerate(messages):
            if message:
                skipped.append((paths[start + i], message))
                on_skip(message)
        yield (images if len(good) == len(images) else images[good]), [start + i for i in good], len(messages)
        start += len(messages)


def evaluate_classification(model, preprocessing, samples, scored, calibration, runtimes, batch_size=32,
                            progress=True, on_skip=None):
    """Top-1 and top-5 of each runtime on `samples` at the indices `scored`;
    int8 is calibrated on those at `calibration`. Returns `(results, skipped)`."""
    size = input_size(model, preprocessing)
    skipped, on_skip = [], on_skip or (lambda message: None)
    representative = None
    if "int8" in runtimes:
        paths = [samples.paths[i] for i in calibration]
        batches = [images for images, _, _ in _read_batches(paths, preprocessing, size, batch_size, skipped, on_skip)]
        if not any(len(images) for images in batches):
            raise EvaluateError("--runtimes int8: none of the held-out calibration photos could be read")
        representative = np.concatenate(batches)
    predict = predictors(model, runtimes, representative)
    paths = [samples.paths[i] for i in scored]
    labels = np.asarray([samples.labels[i] for i in scored])
    hits = {runtime: [0, 0] for runtime in predict}
    count = 0
    bar = _progress(len(paths)) if progress else None
    for images, indices, read in _read_batches(paths, preprocessing, size, batch_size, skipped, on_skip):
        if indices:
            for runtime, run in predict.items():
                outputs = np.asarray(run(images))
                hits[runtime][0] += topk_hits(outputs, labels[indices], 1)
                hits[runtime][1] += topk_hits(outputs, labels[indices], 5)
            count += len(indices)
        if bar is not None:
            _advance(bar, read)
    if not count:
        raise EvaluateError("none of the photos could be read")
    return [Result(r, count, {"top1": h[0] / count, "top5": h[1] / count}) for r, h in hits.items()], skipped


def evaluate_segmentation(model, preprocessing, samples, scored, runtimes, progress=True, on_skip=None):
    """mIoU and pixel accuracy of each runtime on the image/mask pairs at `scored`.
    Returns `(results, skipped)`."""
    from keras_lightnets.preprocessing.image import ImageError, read_image
    from keras_lightnets.runtime.segmentation import segment
    from keras_lightnets.training.data import DataError, read_mask

    classes = model.output_shape[-1]
    predict = predictors(model, runtimes)
    matrices = {runtime: np.zeros((classes, classes), "int64") for runtime in predict}
    skipped, count, on_skip = [], 0, on_skip or (lambda message: None)
    bar = _progress(len(scored)) if progress else None
    for index in scored:
        path, mask_path = samples.paths[index], samples.labels[index]
        try:
            img, mask = read_image(path), read_mask(mask_path)
            if mask.shape != (img.height, img.width):
                raise DataError(
                    f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]}, its image {img.width}x{img.height}"
                )
        except (ImageError, DataError) as err:
            skipped.append((path, str(err)))
            on_skip(str(err))
        else:
            for runtime, run in predict.items():
                matrices[runtime] += confusion(segment(img, run, preprocessing), mask, classes)
            count += 1
        if bar is not None:
            _advance(bar, 1)
    if not count:
        raise EvaluateError("none of the image/mask pairs could be read")
    results = []
    for runtime, matrix in matrices.items():
        mean, accuracy = miou(matrix)
        results.append(Result(runtime, count, {"miou": mean, "pixel_accuracy": accuracy}))
    return results, skipped


def table(results, task):
    """The results as a text table, one row per runtime."""
    if task == "segmentation":
        header, row, keys = "runtime   images     mIoU   pixel accuracy", "{:<8} {:>7} {:>8.2%} {:>16.2%}", ("miou", "pixel_accuracy")
    else:
        header, row, keys = "runtime   images    top-1    top-5", "{:<8} {:>7} {:>8.2%} {:>8.2%}", ("top1", "top5")
    return [header, *(row.format(r.runtime, r.images, *(r.scores[key] for key in keys)) for r in results)]
