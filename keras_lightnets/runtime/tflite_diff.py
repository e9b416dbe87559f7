"""Where a TFLite export leaves its Keras model: tensor-by-tensor comparison.

The flatbuffer runs once with every intermediate tensor kept
(`experimental_preserve_all_tensors=True`). Each tensor is matched to the
Keras layer its name comes from (the name scopes of the traced model; in a
tensor of fused ops, `block_1_expand_relu/Relu6;block_1_expand/convolution`,
the last of those layers in the network) and whose output has its shape
(the batch axis included, so weights never match); a convolution whose
BatchNorm was folded into it (`fold_batchnorm`) is compared with that
BatchNorm's output. int8 tensors are dequantized; their tolerance is eight
quantization steps (rounding alone gives half a step per layer; a layer
past eight is where quantization starts to cost), dynamic-range exports'
3 % of the layer's scale, fp32's `keras_lightnets.conversion.diff.RTOL` of it.
"""

import re
import warnings

import numpy as np

from keras_lightnets.conversion.diff import RTOL, compare, keras_outputs, report_lines

QUANTIZED_STEPS = 8
DYNAMIC_RTOL = 3e-2
_SUFFIX = re.compile(r"_\d+$")  # TensorFlow's name-scope uniquifier: "block_1_expand_1"


def folded_pairs(model):
    """`{conv layer: BatchNormalization layer}` folded by `fold_batchnorm` anywhere inside `model`."""
    from keras_lightnets.runtime.folding import InferenceGraph

    pairs = {}
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, InferenceGraph):
            pairs.update(dict(layer.folded))
        elif hasattr(layer, "layers"):
            pairs.update(folded_pairs(layer))
    return pairs


def tensor_layer(name, order):
    """The Keras layer (of `order`: name → position) a TFLite tensor name comes from, or None."""
    found = []
    for part in name.split(";"):
        for segment in part.split("/"):
            for candidate in (segment, _SUFFIX.sub("", segment)):
                if candidate in order:
                    found.append(candidate)
    return max(found, key=order.__getitem__) if found else None


def run_preserving_tensors(content, batch):
    """Runs the flatbuffer on `batch`; returns `[(tensor details, value)]` of every tensor."""
    from keras_lightnets.quiet import stderr_silenced
    from keras_lightnets.runtime.tflite import default_threads, interpreter_class

    with stderr_silenced(), warnings.catch_warnings():  # "for debugging purposes only": this is debugging
        warnings.simplefilter("ignore")
        interpreter = interpreter_class()(
            model_content=bytes(content), num_threads=default_threads(), experimental_preserve_all_tensors=True
        )
    (source,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(source["index"], list(batch.shape), strict=False)
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], np.ascontiguousarray(batch, dtype=source["dtype"]))
    interpreter.invoke()
    tensors = []
    for details in interpreter.get_tensor_details():
        try:
            tensors.append((details, interpreter.get_tensor(details["index"])))
        except ValueError:  # tensors without data (scratch buffers)
            continue
    return tensors


def _dequantized(details, value):
    scale, zero_point = details["quantization"]
    if value.dtype in (np.int8, np.uint8, np.int16, np.int32) and scale:
        return (value.astype("float64") - zero_point) * scale, scale
    return value, 0.0


def tflite_layer_diffs(model, content, keras_inputs, tflite_inputs=None, quantize="none", folded=None):
    """Compares `model` with its TFLite export `content` layer by layer.

    Args:
        model: the Keras model the export was made from.
        content: the TFLite flatbuffer.
        keras_inputs: a batch (at least 2) for the Keras model.
        tflite_inputs: the same photos as the flatbuffer takes them (uint8
            pixels for a uint8 export); default `keras_inputs`.
        quantize: "none", "dynamic" or "int8": the export's tolerances.
        folded: `{conv: BatchNorm}` folded in the export (default: found in
            nothing; pass `folded_pairs(exported_model)`).

    Returns:
        `[LayerDiff]` in the Keras model's layer order.
    """
    keras_inputs = np.asarray(keras_inputs)
    if len(keras_inputs) < 2:
        raise ValueError("compare on a batch of at least 2 inputs (a batch axis of 1 would match weights)")
    order = {layer.name: index for index, layer in enumerate(model.layers)}
    folded = folded or {}
    batch = len(keras_inputs)
    matched = {}
    for details, value in run_preserving_tensors(content, keras_inputs if tflite_inputs is None else tflite_inputs):
        layer = tensor_layer(details["name"], order)
        if layer is None:
            continue
        layer = folded.get(layer, layer)
        try:
            shape = tuple(model.get_layer(layer).output.shape[1:])
        except (AttributeError, ValueError):  # a layer with several outputs or calls
            continue
        if tuple(value.shape) == (batch, *shape):
            matched[layer] = (details, value)  # the last tensor of a layer: its output
    layers = sorted(matched, key=order.__getitem__)
    expected = keras_outputs(model, layers, keras_inputs)
    diffs = []
    for layer in layers:
        details, value = matched[layer]
        value, step = _dequantized(details, value)
        if step:
            diff = compare(layer, details["name"], value, expected[layer], RTOL, QUANTIZED_STEPS * step)
        else:
            diff = compare(layer, details["name"], value, expected[layer], DYNAMIC_RTOL if quantize != "none" else RTOL)
        diff.other = f"tensor {_short(details['name'])}"
        diffs.append(diff)
    return diffs


def _short(name, limit=80):
    """A tensor name cut to its first fused op, without the model prefix."""
    first = name.split(";")[0]
    return first if len(first) <= limit else "..." + first[-limit:]


def tflite_report(model, content, keras_inputs, tflite_inputs=None, quantize="none", folded=None):
    """The `--diff-layers` lines of an export."""
    diffs = tflite_layer_diffs(model, content, keras_inputs, tflite_inputs, quantize, folded)
    scale = "× max(1, max |Keras output|)"
    tolerance = {
        "none": f"{RTOL:g} {scale}",
        "dynamic": f"{DYNAMIC_RTOL:g} {scale} (float tensors)",
    }.get(quantize, f"{QUANTIZED_STEPS} quantization steps + {RTOL:g} {scale}")
    header = (
        f"{len(diffs)} Keras layers ↔ TFLite tensors ({quantize if quantize != 'none' else 'fp32'}) on "
        f"{len(keras_inputs)} inputs, tolerance {tolerance}"
    )
    return [header, *report_lines(diffs)]
