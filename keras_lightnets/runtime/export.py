"""Export to TFLite (ready for MediaPipe), ONNX and SavedModel, each checked against Keras.

    lightnets export --weights mobilenet_v2.h5 --format tflite mobilenet_v2.tflite
    lightnets export --weights mobilenet_v2.h5 --format onnx mobilenet_v2.onnx
    lightnets export --weights deeplab.h5 --format tflite --free-size deeplab.tflite

TFLite files are written for apps: MediaPipe's ImageClassifier and
ImageSegmenter load them as they are. The labels and the image metadata
are inside the file (`keras_lightnets.runtime.metadata`), and the weights'
own normalisation is either metadata (a float32 input and
NormalizationOptions, when it is one scale and offset for all channels:
x / 127.5 - 1, (x - 127) / 128, x / 255) or, where MediaPipe's metadata
cannot say it (per-channel mean/std, a channel swap), part of the graph
behind a uint8 input of RGB pixels 0-255. MediaPipe reads the input's
stored size: segmenters are exported at a fixed size; `free_size` gives a
free height and width for other runtimes, without MediaPipe's metadata.

ONNX and SavedModel take the same input as the Keras model (the
preprocessed float32 tensor), unless `input_dtype="uint8"` builds the
preprocessing in.

Every export holds the inference graph of `Predictor` (BatchNorm folded
into the convolutions, `keras_lightnets.runtime.folding.fold_batchnorm`)
and is run against the Keras model on the same pixels before anything is
written: an fp32 export whose max |Δ| exceeds 1e-4 is refused (nothing
written, `ExportCheckError`).

int8 (as `Predictor(model, quantize="int8")`): weights per output channel,
the first convolutions in float (`tflite.FLOAT_HEAD`), activation ranges
calibrated on real photos through the weights' own
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
from keras_lightnets.preprocessing import RGB, normalization, preprocess_input
from keras_lightnets.runtime.tflite import Runner, float_operators, tflite_bytes

FORMATS = ("tflite", "onnx", "savedmodel")
QUANTIZATIONS = ("none", "dynamic", "int8", "fp16")
INPUT_DTYPES = ("auto", "float32", "uint8")
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


def mediapipe_normalization(preprocessing):
    """`(mean, std)` in pixel units, MediaPipe's NormalizationOptions for a
    float32 input `(pixel - mean) / std`, when `preprocessing` (a mode name
    or a weights record's `preprocessing`) is one scale and offset for all
    three RGB channels; None otherwise (per-channel mean/std, BGR)."""
    norm = normalization(preprocessing)
    if norm.order != RGB or len(set(norm.mean)) > 1 or len(set(norm.std)) > 1:
        return None
    return norm.mean[0] * norm.divisor, norm.std[0] * norm.divisor


def resolve_input_dtype(input_dtype, fmt, preprocessing, metadata=True):
    """The exported input's dtype: `"auto"` is uint8 for a TFLite file with
    MediaPipe metadata whose normalisation the metadata cannot say, else float32."""
    if input_dtype != "auto":
        return input_dtype
    if fmt == "tflite" and metadata and mediapipe_normalization(preprocessing) is None:
        return "uint8"
    return "float32"


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


def check_request(out, fmt, quantize="none", force=False, input_dtype="auto", preprocessing=None, metadata=True,
                  free_size=False, task=None, diff_layers=False):
    """Raises `ExportError` for a request that cannot be exported, before any work (and without TensorFlow).

    Args:
        task: the weights' task ("classification", "segmentation") when known.
    """
    if diff_layers and fmt != "tflite":
        raise ExportError("--diff-layers compares TFLite tensors: use it with --format tflite")
    check_output_path(out, overwrite=force and fmt != "savedmodel")
    for what, value, choices in (("format", fmt, FORMATS), ("quantization", quantize, QUANTIZATIONS),
                                 ("input dtype", input_dtype, INPUT_DTYPES)):
        if value not in choices:
            raise ExportError(f"unknown {what} {value!r}; choose from {', '.join(choices)}")
    if fmt != "tflite" and quantize != "none":
        raise ExportError("--quantize applies to --format tflite")
    if free_size and task == "classification":
        raise ExportError("--free-size is for segmenters: a classifier is exported at its own size")
    if fmt == "onnx":
        from keras_lightnets.runtime.onnx_export import check_tools

        check_tools()
    if (fmt == "tflite" and metadata and not free_size and input_dtype == "float32"
            and preprocessing is not None and mediapipe_normalization(preprocessing) is None):
        raise ExportError(
            f"MediaPipe's metadata cannot express the {normalization(preprocessing).description} preprocessing "
            "of a float32 input (one mean and std for all channels only): use --input-dtype uint8 (or auto), "
            "or --no-metadata"
        )


def free_check_sizes(size):
    """The sizes a free-size export is checked at: `size` and an odd, non-square one."""
    height, width = size
    return [(height, width), (height // 2 + 1, width * 3 // 4 + 1)]


def export(model, out, fmt="tflite", quantize="none", calibration=None, input_dtype="auto", force=False,
           preprocessing=None, labels=None, free_size=False, check_size=None, seed=0, evaluation=None,
           diff_layers=False):
    """Exports `model` to `out` and checks it; returns a dict of figures.

    Args:
        model: a Keras model (with its weights): a classifier (batch,
            classes) or a segmenter (batch, H, W, classes); with
            `free_size`, built with input `(None, None, 3)`.
        out: output file (TFLite, ONNX) or folder (SavedModel); must not
            exist unless `force` (files only).
        fmt: "tflite", "onnx" or "savedmodel".
        quantize: "none", "dynamic", "int8" or "fp16" (TFLite only).
        calibration: array (n, h, w, 3) of 0-255 photos, for int8
            calibration (`keras_lightnets.runtime.calibration.photo_pixels`).
        input_dtype: "float32" (the preprocessed tensor, as the Keras
            model takes), "uint8" (RGB pixels; the preprocessing built in) or
            "auto" (`resolve_input_dtype`).
        preprocessing: the weights' preprocessing record (`weights_info`),
            or a mode name.
        labels: the class names: a TFLite file gets MediaPipe's metadata
            with them (unless `free_size`); None: a plain flatbuffer.
        free_size: the input's height and width stay free (`model` must
            have them free); checked at the sizes of `free_check_sizes(check_size)`.
        check_size: `(height, width)` of a free-size model's check (default 224 x 224).
        evaluation: array of 0-255 photos the checks run on besides two
            random images (default: the first 16 of `calibration`); the
            top-1 agreement is measured on them: give photos other than
            the calibration's.
        diff_layers: TFLite only: also compare the export with the Keras
            model tensor by tensor (`figures["layer_diff"]`, report lines;
            on a failed check, the ExportCheckError's `details`).

    Returns:
        `{"max_abs_diff", "samples", "bytes", "input_dtype", "input_shape"}`,
        `"top1_agreement"` for classifiers, `"metadata"` (a line) for a
        TFLite file with MediaPipe's metadata, and for quantized exports
        `"float_ops"`: the ops that compute in float besides the input's
        quantization and the output's dequantization.

    Raises:
        ExportError: bad request; ExportCheckError: an fp32 export that does
            not reproduce the Keras model (nothing is written).
    """
    metadata = fmt == "tflite" and labels is not None and not free_size
    check_request(out, fmt, quantize, force, input_dtype, preprocessing, metadata, free_size, diff_layers=diff_layers)
    if quantize == "int8" and calibration is None:
        raise ExportError("int8 needs calibration photos")
    from keras_lightnets.runtime.folding import fold_batchnorm

    mode = preprocessing or "tf"
    input_dtype = resolve_input_dtype(input_dtype, fmt, mode, metadata)
    # The inference graph of `Predictor` (BatchNorm folded), fp32 and int8
    # alike, checked below against `model`.
    # ONNX Runtime folds BatchNorm itself, and tf2onnx would turn the folded constants into inputs
    exported = model if fmt == "onnx" else fold_batchnorm(model)
    if input_dtype == "uint8":
        exported = with_uint8_input(exported, mode)

    def exported_input(pixels):
        return pixels.astype("uint8") if input_dtype == "uint8" else preprocess_input(pixels, mode)

    shape = tuple(model.input_shape[1:])
    sizes = free_check_sizes(check_size or (224, 224)) if free_size else [shape[:2]]
    if (None in shape[:2]) != free_size:
        raise ExportError(f"{model.name}'s input is {shape}: free_size exports models of free height and width "
                          "(None, None), the others a fixed size")
    rng = np.random.default_rng(seed)
    # whole pixel values, so that the uint8 and float paths see the same image
    checks = [rng.integers(0, 256, (2, *size, shape[2])).astype("float32") for size in sizes]
    if evaluation is None and calibration is not None:
        evaluation = calibration[:16]
    if evaluation is not None:
        checks[0] = np.concatenate([checks[0], np.round(evaluation)]).astype("float32")
    expected = [np.asarray(model.predict(preprocess_input(p, mode), verbose=0, batch_size=8)) for p in checks]
    figures = {"input_dtype": input_dtype, "input_shape": (None, None, None, shape[2]) if free_size else (None, *shape)}
    try:
        if fmt == "savedmodel":
            exported.export(out, format="tf_saved_model", verbose=False)
            got = [_run_savedmodel(out, exported_input(p)) for p in checks]
        else:
            content, run = _convert(exported, fmt, quantize, calibration, exported_input, free_size)
            if quantize != "none":
                figures["float_ops"] = [op["op"] for op in float_operators(content)]
            if metadata:
                content, figures["metadata"] = _with_app_metadata(content, model, labels, mode, input_dtype)
                run = Runner(content)
            got = [np.concatenate([run(image[None]) for image in exported_input(p)]) for p in checks]
        figures.update(_agreement(got, expected, evaluation is not None))
        if diff_layers:
            from keras_lightnets.runtime.tflite_diff import folded_pairs, tflite_report

            sample = checks[0][:3]
            figures["layer_diff"] = tflite_report(
                model, content, preprocess_input(sample, mode), exported_input(sample), quantize, folded_pairs(exported)
            )
        if quantize == "none" and not figures["max_abs_diff"] <= FP32_ATOL:  # also refuses NaN
            error = ExportCheckError(
                f"the export does not reproduce the Keras model: max |Δ| {figures['max_abs_diff']:.2e} > "
                f"{FP32_ATOL}; nothing written" + (" (--diff-layers shows where)" if fmt == "tflite" and not diff_layers else "")
            )
            error.details = figures.get("layer_diff", [])
            raise error
        if fmt != "savedmodel":  # written only once checked
            write_atomically(out, lambda temp: _write_bytes(temp, content))
    except BaseException:
        if fmt == "savedmodel":
            _remove(out)
        raise
    figures["bytes"] = _size(out)
    return figures


def _convert(exported, fmt, quantize, calibration, exported_input, free_size):
    """`(bytes, run)`: the flatbuffer or ONNX model of `exported` and a function running it on a batch."""
    input_shape = (None, None, exported.input_shape[-1]) if free_size else None
    if fmt == "onnx":
        from keras_lightnets.runtime.onnx_export import OnnxRunner, onnx_bytes

        content = onnx_bytes(exported, input_shape)
        return content, OnnxRunner(content)
    representative = None if calibration is None else exported_input(np.round(calibration))
    content = tflite_bytes(exported, quantize, representative, input_shape, progress=True)
    return content, Runner(content)


def _with_app_metadata(content, model, labels, mode, input_dtype):
    """MediaPipe's metadata for `content`: `(bytes, a one-line description of the input)`."""
    from keras_lightnets.runtime.metadata import add_image_metadata

    task = "classifier" if len(model.output_shape) == 2 else "segmenter"
    activation = None
    if task == "segmenter":  # MediaPipe's confidence masks are probabilities once softmax is applied
        last = model.layers[-1]
        activation = "none" if getattr(getattr(last, "activation", None), "__name__", "") == "softmax" else "softmax"
    norm = None if input_dtype == "uint8" else mediapipe_normalization(mode)
    mean, std = (None, None) if norm is None else norm
    content = add_image_metadata(content, task, labels, mean, std, activation=activation)
    if norm is None:
        how = f"uint8 RGB pixels; {normalization(mode).description} inside the model"
    else:
        how = f"float32, NormalizationOptions mean {mean:g} std {std:g} ({normalization(mode).description})"
    return content, f"MediaPipe {task}, {len(labels)} labels, input {how}"


def _agreement(got, expected, calibrated):
    """max |Δ| over every checked batch, and for classifiers the top-1 agreement (on the photos when given)."""
    figures = {
        "max_abs_diff": max(float(np.abs(g - e).max()) for g, e in zip(got, expected)),
        "samples": sum(len(e) for e in expected),
    }
    if expected[0].ndim == 2:
        agree = got[0].argmax(-1) == expected[0].argmax(-1)
        figures["top1_agreement"] = float(agree[2:].mean() if calibrated else agree.mean())
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
