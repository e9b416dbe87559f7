"""Export to SavedModel and TFLite, each checked against the Keras model.

    lightnets export --model efficientnet_lite0 --format tflite lite0.tflite
    lightnets export --weights mobilenet_v2.h5 --format tflite \\
        --quantize int8 [--calibration photos/] --input-dtype uint8 mobilenet_v2_int8.tflite
    lightnets export --weights model.h5 --format savedmodel exported/

Input of the exported model: with `--input-dtype float32` (default) the same
preprocessed float tensor as the Keras model; with `uint8`, RGB pixels 0-255
and the weights' preprocessing (`weights_info(...)["preprocessing"]["mode"]`)
is built into the model. The spatial size is fixed to the weights' size.

Both exports hold the inference graph of `Predictor` (BatchNorm folded into
the convolutions, `keras_lightnets.runtime.folding.fold_batchnorm`). fp32 exports
must reproduce the Keras model (max |Δ| ≤ 1e-4 on random and
photo inputs) or the output is deleted and the command fails.

int8 (as `Predictor(model, quantize="int8")`): weights per output channel,
activation ranges calibrated on real photos through the weights' own
preprocessing (`keras_lightnets.runtime.calibration`): the photos of
`--calibration DIR`, or without it the shipped ones (the checkout's
examples/, scikit-image's and matplotlib's sample photos), each once and
then seeded crops of them. Quantized exports print their top-1 agreement
with the Keras model on other crops of the same photos (not used for
calibration), the ops that compute in float, and the size ratio to fp32.
"""

import os
import shutil

import numpy as np

from keras_lightnets.errors import LightnetsError
from keras_lightnets.files import check_output_path, write_atomically
from keras_lightnets.runtime.tflite import Runner, float_operators, tflite_bytes

FP32_ATOL = 1e-4
# photos (crops not used for calibration) the CLI checks an export on
EVALUATED = 32


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


def run_tflite(content, batch):
    """Runs a TFLite model on each image of `batch`; returns the stacked (dequantized) outputs."""
    runner = Runner(content)
    return np.concatenate([runner(image[None]) for image in batch])


def check_request(out, fmt, quantize, force=False, diff_layers=False):
    """Raises `ExportError` for a request that cannot be exported, before any work."""
    if diff_layers and fmt != "tflite":
        raise ExportError("--diff-layers compares TFLite tensors: use it with --format tflite")
    check_output_path(out, overwrite=force and fmt == "tflite")
    if fmt not in ("savedmodel", "tflite"):
        raise ExportError(f"unknown format {fmt!r}")
    if fmt == "savedmodel" and quantize != "none":
        raise ExportError("--quantize applies to --format tflite")


def export(model, out, fmt="tflite", quantize="none", calibration=None, input_dtype="float32", force=False,
           preprocessing=None, seed=0, evaluation=None, diff_layers=False):
    """Exports `model` to `out` and checks it; returns a dict of figures.

    Args:
        model: a Keras model (with its weights).
        out: output file (TFLite) or folder (SavedModel); must not exist.
        fmt: "savedmodel" or "tflite".
        quantize: "none", "dynamic" or "int8" (TFLite only).
        calibration: array (n, h, w, 3) of 0-255 photos, for int8
            calibration (`keras_lightnets.runtime.calibration.photo_pixels`).
        input_dtype: "float32" (preprocessed input) or "uint8" (pixels; the
            preprocessing `preprocessing["mode"]` is built in).
        preprocessing: the weights' preprocessing record (`weights_info`).
        evaluation: array of 0-255 photos the checks run on besides two
            random images (default: the first 16 of `calibration`); the
            top-1 agreement is measured on them: give photos other than
            the calibration's.
        diff_layers: TFLite only: also compare the export with the Keras
            model tensor by tensor (`figures["layer_diff"]`, report lines;
            on a failed check, the ExportCheckError's `details`).

    Returns:
        `{"max_abs_diff", "samples", "bytes"}`, `"top1_agreement"` for
        classifiers, and for quantized exports `"float_ops"`: the ops that
        compute in float besides the input's quantization and the output's
        dequantization.

    Raises:
        ExportError: bad request; ExportCheckError: an fp32 export that does
            not reproduce the Keras model (nothing is written).
    """
    check_request(out, fmt, quantize, force, diff_layers)
    if quantize == "int8" and calibration is None:
        raise ExportError("int8 needs calibration photos")
    from keras_lightnets.preprocessing import preprocess_input
    from keras_lightnets.runtime.folding import fold_batchnorm

    mode = preprocessing or "tf"
    # The inference graph of `Predictor` (BatchNorm folded), fp32 and int8
    # alike, checked below against `model`.
    exported = fold_batchnorm(model)
    if input_dtype == "uint8":
        exported = with_uint8_input(exported, mode)

    def exported_input(pixels):
        return pixels.astype("uint8") if input_dtype == "uint8" else preprocess_input(pixels, mode)

    # whole pixel values, so that the uint8 and float paths see the same image
    pixels = np.random.default_rng(seed).integers(0, 256, (2,) + tuple(model.input_shape[1:]))
    if evaluation is None and calibration is not None:
        evaluation = calibration[:16]
    if evaluation is not None:
        pixels = np.concatenate([pixels, np.round(evaluation)])
    pixels = pixels.astype("float32")
    expected = np.asarray(model.predict(preprocess_input(pixels, mode), verbose=0, batch_size=8))
    try:
        figures = {}
        if fmt == "savedmodel":
            exported.export(out, format="tf_saved_model", verbose=False)
            got = _run_savedmodel(out, exported_input(pixels))
        else:
            representative = None if calibration is None else exported_input(np.round(calibration))
            content = tflite_bytes(exported, quantize, representative, progress=True)
            got = run_tflite(content, exported_input(pixels))
            if quantize != "none":
                figures["float_ops"] = [op["op"] for op in float_operators(content)]
        figures.update({"max_abs_diff": float(np.abs(got - expected).max()), "samples": len(pixels)})
        if expected.ndim == 2:
            agree = got.argmax(-1) == expected.argmax(-1)
            figures["top1_agreement"] = float(agree[2:].mean() if evaluation is not None else agree.mean())
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


def photo_sets(folder, quantize, preprocessing, size):
    """`(calibration, evaluation)` 0-255 photo arrays for the CLI: int8
    calibration (`calibration.DEFAULT_COUNT` images: the photos of `folder`,
    or the shipped ones, then seeded crops), and `EVALUATED` other crops for
    the checks; `(None, None)` for an fp32 export without `folder`."""
    from keras_lightnets.runtime import calibration as photos

    if folder is None and quantize != "int8":
        return None, None
    found = photos.folder_photos(folder) if folder is not None else photos.shipped_photos()
    if not found:
        raise ExportError("--quantize int8: no shipped photos here (examples/, scikit-image, matplotlib); "
                          "give --calibration DIR")
    calibration = photos.photo_pixels(found, preprocessing, photos.DEFAULT_COUNT, seed=0, size=size)
    evaluation = photos.photo_pixels(found, preprocessing, EVALUATED, seed=1, originals=False, size=size)
    return (calibration if quantize == "int8" else None), evaluation
