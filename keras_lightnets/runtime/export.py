"""Export to SavedModel and TFLite, each checked against the Keras model.

    python -m keras_lightnets.runtime.export --model efficientnet_lite0 --format tflite lite0.tflite
    python -m keras_lightnets.runtime.export --weights mobilenet_v2.h5 --format tflite \\
        --quantize int8 --calibration photos/ --input-dtype uint8 mobilenet_v2_int8.tflite
    python -m keras_lightnets.runtime.export --weights model.h5 --format savedmodel exported/

Input of the exported model: with `--input-dtype float32` (default) the same
preprocessed float tensor as the Keras model; with `uint8`, RGB pixels 0-255
and the weights' preprocessing (`weights_info(...)["preprocessing"]["mode"]`)
is built into the model. The spatial size is fixed to the weights' size.

Both exports hold the inference graph of `Predictor` (BatchNorm folded into
the convolutions, `keras_lightnets.runtime.folding.fold_batchnorm`). fp32 exports
must reproduce the Keras model (max |Δ| ≤ 1e-4 on random and
calibration inputs) or the output is deleted and the command fails;
quantized exports print their top-1 agreement with the Keras model on the
calibration images and the size ratio to fp32.
"""

import os
import shutil
import sys

import numpy as np

from keras_lightnets.errors import LightnetsError
from keras_lightnets.files import check_output_path, write_atomically
from keras_lightnets.runtime.tflite import Runner, tflite_bytes

FP32_ATOL = 1e-4


class ExportError(LightnetsError, RuntimeError):
    """A request that cannot be exported; one-line message."""


class ExportCheckError(ExportError):
    """The exported model does not reproduce the Keras model.

    Attributes:
        details: the `--diff-layers` lines, or [].
    """

    exit_status = 1
    details = ()


def with_uint8_input(model, mode):
    """Wraps `model` so that it takes uint8 RGB pixels (`mode`: a mode name or a preprocessing record)."""
    import keras

    from keras_lightnets.preprocessing import preprocessing_layer

    inputs = keras.Input(model.input_shape[1:], dtype="uint8", name="pixels")
    x = preprocessing_layer(mode)(inputs)
    return keras.Model(inputs, model(x), name=f"{model.name}_uint8")


def calibration_images(folder, size, preprocessing, limit=200):
    """Loads up to `limit` photos of `folder` as float32 0-255 arrays."""
    from keras_lightnets.files import list_images
    from keras_lightnets.preprocessing.image import ImageError, load_for

    if not os.path.isdir(folder):
        raise ExportError(f"--calibration {folder}: not a directory")
    paths = list_images(folder, recursive=False)[:limit]  # FIFOs and devices: skipped, one line each
    images = []
    for i, path in enumerate(paths, start=1):
        try:
            images.append(load_for(path, {**preprocessing, "size": size}))
        except ImageError as err:
            print(f"\nskipped: {err}", file=sys.stderr)
        print(f"\rloading calibration images {i}/{len(paths)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    if not images:
        raise ExportError(f"--calibration {folder}: no readable images")
    return np.stack(images)


def run_tflite(content, batch):
    """Runs a TFLite model on each image of `batch`; returns the stacked (dequantized) outputs."""
    runner = Runner(content)
    return np.concatenate([runner(image[None]) for image in batch])


def check_request(out, fmt, quantize, has_calibration, force=False, diff_layers=False):
    """Raises `ExportError` for a request that cannot be exported, before any work."""
    if diff_layers and fmt != "tflite":
        raise ExportError("--diff-layers compares TFLite tensors: use it with --format tflite")
    check_output_path(out, overwrite=force and fmt == "tflite")
    if fmt not in ("savedmodel", "tflite"):
        raise ExportError(f"unknown format {fmt!r}")
    if fmt == "savedmodel" and quantize != "none":
        raise ExportError("--quantize applies to --format tflite")
    if quantize == "int8" and not has_calibration:
        raise ExportError("--quantize int8 needs --calibration DIR (a folder of photos)")


def export(model, out, fmt="tflite", quantize="none", calibration=None, input_dtype="float32", force=False,
           preprocessing=None, seed=0, diff_layers=False):
    """Exports `model` to `out` and checks it; returns a dict of figures.

    Args:
        model: a Keras model (with its weights).
        out: output file (TFLite) or folder (SavedModel); must not exist.
        fmt: "savedmodel" or "tflite".
        quantize: "none", "dynamic" or "int8" (TFLite only).
        calibration: float32 array (n, h, w, 3) of 0-255 photos, for int8
            calibration and for the checks.
        input_dtype: "float32" (preprocessed input) or "uint8" (pixels; the
            preprocessing `preprocessing["mode"]` is built in).
        preprocessing: the weights' preprocessing record (`weights_info`).
        diff_layers: TFLite only: also compare the export with the Keras
            model tensor by tensor (`figures["layer_diff"]`, report lines;
            on a failed check, the ExportCheckError's `details`).

    Raises:
        ExportError: bad request; ExportCheckError: an fp32 export that does
            not reproduce the Keras model (nothing is written).
    """
    check_request(out, fmt, quantize, calibration is not None, force, diff_layers)
    from keras_lightnets.preprocessing import preprocess_input
    from keras_lightnets.runtime.folding import fold_batchnorm

    mode = preprocessing or "tf"
    # The inference graph (BatchNorm folded), checked below against `model`.
    # Quantized TFLite starts from the model itself: the converter folds
    # BatchNorm on its own, and calibrates better on the plain graph (EfficientNet-
    # Lite0 int8: 15 of 16 top-1 agreements vs 14 on our rewritten graph).
    exported = model if quantize != "none" else fold_batchnorm(model)
    if input_dtype == "uint8":
        exported = with_uint8_input(exported, mode)

    def exported_input(pixels):
        return pixels.astype("uint8") if input_dtype == "uint8" else preprocess_input(pixels, mode)

    # whole pixel values, so that the uint8 and float paths see the same image
    pixels = np.random.default_rng(seed).integers(0, 256, (2,) + tuple(model.input_shape[1:]))
    if calibration is not None:
        calibration = np.round(calibration)
        pixels = np.concatenate([pixels, calibration[:16]])
    pixels = pixels.astype("float32")
    expected = np.asarray(model.predict(preprocess_input(pixels, mode), verbose=0, batch_size=8))
    try:
        if fmt == "savedmodel":
            exported.export(out, format="tf_saved_model", verbose=False)
            got = _run_savedmodel(out, exported_input(pixels))
        else:
            representative = None if calibration is None else exported_input(calibration)
            content = tflite_bytes(exported, quantize, representative)
            got = run_tflite(content, exported_input(pixels))
        figures = {"max_abs_diff": float(np.abs(got - expected).max()), "samples": len(pixels)}
        if expected.ndim == 2:
            agree = got.argmax(-1) == expected.argmax(-1)
            figures["top1_agreement"] = float(agree[2:].mean() if calibration is not None else agree.mean())
        if diff_layers:
            from keras_lightnets.runtime.tflite_diff import folded_pairs, tflite_report

            sample = pixels[:3]
            figures["layer_diff"] = tflite_report(
                model, content, preprocess_input(sample, mode), exported_input(sample), quantize, folded_pairs(exported)
            )
        if quantize == "none" and figures["max_abs_diff"] > FP32_ATOL:
            error = ExportCheckError(
                f"the export does not reproduce the Keras model: max |Δ| "
                f"{figures['max_abs_diff']:.2e} > {FP32_ATOL}; nothing written"
                + ("" if diff_layers else " (--diff-layers shows where)")
            )
            error.details = figures.get("layer_diff", [])
            raise error
        if fmt == "tflite":  # written only once checked
            write_atomically(out, lambda temp: _write_bytes(temp, content))
    except BaseException:
        if fmt == "savedmodel":
            _remove(out)
        raise
    figures["bytes"] = _size(out)
    return figures


def _write_bytes(path, content):
    with open(path, "wb") as f:
        f.write(content)


def _run_savedmodel(folder, batch):
    import tensorflow as tf

    loaded = tf.saved_model.load(folder)  # keep a reference: serve() uses its variables
    return np.concatenate(
        [loaded.serve(tf.constant(batch[i : i + 8])).numpy() for i in range(0, len(batch), 8)]
    )


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.unlink(path)


def _size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
    return os.path.getsize(path)
