"""Photos read in batches exactly as the demo reads them (predict, evaluate, the tf.data map of fine-tuning)."""

import concurrent.futures
import os

import numpy as np

from keras_lightnets.preprocessing.image import ImageError, read_image, transform_for


def usable_cores():
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def read_for_prediction(path, preprocessing, size):
    """`(uint8 image, original (h, w), error message or "")`: the safe reader
    and `load_image`'s eval transform, exactly as the demo reads."""
    try:
        img = read_image(path)
    except ImageError as err:
        return np.zeros((1, 1, 3) if size is None else (*size, 3), "uint8"), (0, 0), str(err)
    return transform_for(img, preprocessing, size, dtype="uint8"), (img.height, img.width), ""


def prediction_batches(paths, preprocessing, size, batch_size, workers=None):
    """Yields `(images, original (h, w) per image, error message per image)`.

    Every image goes through the demo's reader and eval transform
    (`keras_lightnets.preprocessing.image.load_for`), then `preprocess_input` with the
    weights' mode (as the equal, faster `preprocess_uint8`, straight into
    the batch), so predictions equal the demo's. Unreadable files give an
    error message (and a blank image) instead of stopping. `size=None` keeps
    each image's own size (batches of 1).

    A batch is read by `workers` threads (default: one per core; Pillow
    decodes and resizes outside the GIL), and the next one only once it is
    asked for: on a CPU the model's threads then have the cores to themselves.
    Reading alongside TFLite's XNNPACK threads, or through tf.data, left
    0.4-0.7 of `Predictor`'s speed on 2 cores (`bench/predict_speed.py`).
    """
    from keras_lightnets.preprocessing import preprocess_uint8

    size = None if size is None else tuple(int(side) for side in size)
    step = 1 if size is None else batch_size

    def read(path, out):  # Pillow and numpy run outside the GIL
        image, shape, message = read_for_prediction(path, preprocessing, size)
        return preprocess_uint8(image, preprocessing, out), shape, message

    with concurrent.futures.ThreadPoolExecutor(workers or usable_cores()) as pool:
        for start in range(0, len(paths), step):
            chunk = paths[start : start + step]
            batch = [None] if size is None else np.empty((len(chunk), *size, 3), "float32")
            results = list(pool.map(read, chunk, batch))  # each image into its row of the batch
            images = results[0][0][None] if size is None else batch
            yield images, [shape for _, shape, _ in results], [message for _, _, message in results]
