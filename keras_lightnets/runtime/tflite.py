"""TFLite: Keras models converted in memory, flatbuffers run on numpy batches.

`tflite_bytes(model)` converts a model (fold it first, `fold_batchnorm`) to a
TFLite flatbuffer without writing a SavedModel. `Runner(content)` runs one
on batches of any size with LiteRT's interpreter (`ai_edge_litert`, which
needs no TensorFlow import; `tf.lite.Interpreter` if it is not installed)
and XNNPACK on every usable core. `Predictor` and the exports use both.

`load_compiled` / `save_compiled` keep the flatbuffer compiled from a
keras-lightnets weights file in the pretrained cache (`<cache>/compiled/`),
bound to the weights file's arch and sha256: the demo's second run needs
neither Keras nor TensorFlow.

Importing this module imports numpy only.
"""

import collections
import hashlib
import os
import sys
import warnings

import numpy as np

from keras_lightnets.errors import LightnetsError
from keras_lightnets.preprocessing.batches import usable_cores


class ConversionError(LightnetsError, RuntimeError):
    """A model the TFLite converter cannot turn into builtin ops; one-line message."""


def default_threads():
    """Interpreter threads when none are asked for: `TF_NUM_INTRAOP_THREADS`
    when it is set (the budget a process gives TensorFlow's kernels), else
    every usable core."""
    budget = os.environ.get("TF_NUM_INTRAOP_THREADS", "")
    return int(budget) if budget.isdigit() and int(budget) > 0 else usable_cores()


def interpreter_class():
    """LiteRT's `Interpreter`, or TensorFlow's deprecated one without `ai_edge_litert`."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter
    return Interpreter


def load_interpreter(content, threads=None, allocate=True, input_shape=None):
    """An interpreter of the flatbuffer `content` (bytes), tensors allocated
    unless `allocate=False`, for its first input resized to `input_shape`
    when given (a model of free input size stores its free sides as 1).

    Raises:
        ValueError: `content` is not a TFLite flatbuffer.
    """
    from keras_lightnets.quiet import stderr_silenced

    # quiet: tf.lite.Interpreter's deprecation warning and XNNPACK's notice on fd 2
    with warnings.catch_warnings(), stderr_silenced():
        warnings.simplefilter("ignore")
        interpreter = interpreter_class()(model_content=bytes(content), num_threads=threads or default_threads())
        if input_shape is not None:
            interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], list(input_shape), strict=True)
        if allocate:
            interpreter.allocate_tensors()
    return interpreter


def operators(content):
    """`[{"op": builtin name, "types": operand and result dtypes, "xnnpack":
    whether XNNPACK runs it}]` of a flatbuffer, in graph order.

    An op is XNNPACK's when it lies inside one of the delegate's partitions
    (the interpreter's DELEGATE nodes): its output is a partition's output,
    or feeds only ops inside partitions without being a partition's input.
    """
    details = load_interpreter(content, 1)._get_ops_details()
    delegates = [d for d in details if d["op_name"] == "DELEGATE"]
    ops = [d for d in details if d["op_name"] != "DELEGATE"]
    partition_inputs = {int(t) for d in delegates for t in d["inputs"]}
    partition_outputs = {int(t) for d in delegates for t in d["outputs"]}
    consumers = {}
    for index, op in enumerate(ops):
        for tensor in op["inputs"]:
            consumers.setdefault(int(tensor), []).append(index)
    inside = [False] * len(ops)
    for index in reversed(range(len(ops))):  # consumers come later in graph order
        outputs = [int(t) for t in ops[index]["outputs"]]
        inside[index] = bool(delegates) and (
            any(t in partition_outputs for t in outputs)
            or all(t not in partition_inputs and consumers.get(t) and all(inside[c] for c in consumers[t])
                   for t in outputs)
        )
    return [
        {
            "op": op["op_name"],
            "types": [np.dtype(t).name for t in (*op["operand_types"], *op["result_types"])],
            "xnnpack": inside[index],
        }
        for index, op in enumerate(ops)
    ]


def tflite_bytes(model, quantize="none", representative=None, input_shape=None, float_fallback=False,
                 options=None, progress=False, ranges="percentile", float_head=None):
    """Converts `model` to a TFLite flatbuffer (bytes), without checking it.

    The model's forward pass at inference is traced with the batch size
    free and its variables frozen into constants, in memory. fp32 and
    dynamic-range flatbuffers hold TFLite builtin ops only. int8: weights
    int8 per output channel, activations int8 with the ranges they take on
    `representative` (`ranges`), float32 input and output (quantized and
    dequantized inside the graph); every op int8 (XNNPACK's QS8 kernels)
    except the network's first `float_head` convolutions and the ops before
    them, or the conversion fails unless `float_fallback`.

    Args:
        model: a single-input Keras model (TensorFlow backend); fold it
            first (`fold_batchnorm`) for the inference graph `Predictor` runs.
        quantize: "none", "dynamic", "int8" or "fp16" (float16 weights,
            dequantized at load; float32 input and output).
        representative: for int8, the model inputs to calibrate on (an
            array, one image per row).
        input_shape: the input shape without the batch axis, for models
            whose own input shape has `None` sides (default: the model's).
        float_fallback: int8 only: ops without an int8 kernel stay float
            (`operators` lists them) instead of failing the conversion.
        options: converter attributes to set (e.g.
            `{"_experimental_disable_per_channel": True}`; bench/int8.py
            measures them).
        progress: print the calibration's progress on stderr.
        ranges: int8 activation ranges: `"percentile"` (default) clips each
            at the `RANGE_QUANTILE` quantiles of its values on
            `representative` (`percentile_ranges`); `"minmax"` is the
            converter's own, the minimum and maximum (a few outliers widen
            the step of every value; bench/int8.py compares them).
        float_head: int8 only: how many of the first convolutions
            (CONV_2D, DEPTHWISE_CONV_2D, in graph order) stay float, with
            the ops before them (default `FLOAT_HEAD`; `options` then act
            only with `float_head=0` and `ranges="minmax"`).

    Raises:
        ConversionError: the converter failed, e.g. on an op TFLite has no builtin for.
    """
    import tensorflow as tf

    from keras_lightnets.quiet import stderr_silenced

    if ranges not in ("percentile", "minmax"):
        raise ValueError(f"ranges must be 'percentile' or 'minmax', got {ranges!r}")
    float_head = FLOAT_HEAD if float_head is None else float_head
    if len(model.inputs) != 1:
        raise ConversionError(f"{model.name} has {len(model.inputs)} inputs; one is supported")
    spec = tf.TensorSpec((None,) + tuple(input_shape or model.input_shape[1:]), model.input.dtype)
    function = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], model)
    # Freeze the variables in memory instead of saving `model` as a SavedModel
    # first (which would not hold a Keras 3 model's variables), and fail
    # rather than leave a variable in the flatbuffer.
    converter.experimental_lower_to_saved_model = False
    converter.experimental_enable_resource_variables = False
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize not in ("none", "dynamic", "int8", "fp16"):
        raise ConversionError(f"quantize must be none, dynamic, int8 or fp16; got {quantize!r}")
    if quantize in ("dynamic", "int8", "fp16"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":

        def representative_dataset():
            for i, image in enumerate(representative, start=1):
                if progress:
                    print(f"\rcalibrating {i}/{len(representative)}", end="", file=sys.stderr)
                yield [image[None]]
            if progress:
                print(file=sys.stderr)

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + (
            [tf.lite.OpsSet.TFLITE_BUILTINS] if float_fallback else []
        )
        calibrate_only = ranges == "percentile" or float_head > 0
        if calibrate_only and options:
            raise ValueError("converter options act on the converter's own int8: ranges='minmax', float_head=0")
        converter._experimental_calibrate_only = calibrate_only  # the float graph and its calibrated min/max
    for name, value in (options or {}).items():
        setattr(converter, name, value)
    try:
        with stderr_silenced(), warnings.catch_warnings():  # MLIR notices; errors are in the exception
            # int8 from a frozen graph: the representative dataset calibrates the input, as from a SavedModel
            warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
            content = converter.convert()
            head = []
            if quantize == "int8" and calibrate_only:
                head = head_nodes(content, float_head)
                if ranges == "percentile":
                    content = percentile_ranges(content, representative)
                content = _quantize_calibrated(content, [name for _, name in head])
    except Exception as err:  # noqa: BLE001 (ConverterError, ValueError, ... depending on the stage)
        raise ConversionError(f"TFLite conversion of {model.name} failed: {' '.join(str(err).split())[:500]}") from None
    if quantize == "int8" and not float_fallback:
        # the head's ops come first, in graph order
        floats = float_operators(content)[sum(op not in _TYPE_CONVERSIONS for op, _ in head):]
        if floats:
            names = ", ".join(sorted({op["op"] for op in floats}))
            raise ConversionError(f"TFLite int8 conversion of {model.name} left ops in float: {names}")
    return content


# int8: the first convolutions kept float. On torchvision's MobileNetV2 the
# first depthwise convolution's int8 weights alone move the logits by a std
# of 0.21 (every layer's int8 weights together: 0.31); Conv1, it and the
# projection after it in float lift the top-1 agreement with fp32 from 80 %
# to 88 % on 300 images of photos not calibrated on, at 1.9x (batch 1) and
# 2.1x (batch 8) the fp32 speed instead of 2.0x and 2.3x (bench/int8.py).
FLOAT_HEAD = 3
_CONVOLUTIONS = ("CONV_2D", "DEPTHWISE_CONV_2D")
_TYPE_CONVERSIONS = ("QUANTIZE", "DEQUANTIZE", "CAST")


def head_nodes(content, count):
    """`[(op, output tensor name)]` of a float flatbuffer's ops up to its
    `count`-th convolution (none when `count` is 0): the nodes to keep float."""
    if count <= 0:
        return []
    interpreter = load_interpreter(content, 1, allocate=False)
    names = {detail["index"]: detail["name"] for detail in interpreter.get_tensor_details()}
    head, seen = [], 0
    for op in interpreter._get_ops_details():
        if seen == count:
            break
        head.append((op["op_name"], names[int(op["outputs"][0])]))
        seen += op["op_name"] in _CONVOLUTIONS
    return head


def _quantize_calibrated(calibrated, float_nodes):
    """int8 flatbuffer of a calibrated float one, the `float_nodes` kept float;
    float input and output. Uses the converter's own quantization pass
    (`tensorflow.lite.python.convert.mlir_quantize`, not public API)."""
    from tensorflow.lite.python import convert

    return convert.mlir_quantize(calibrated, denylisted_nodes=list(float_nodes) or None)


def float_operators(content):
    """The ops of a quantized flatbuffer that compute in float (`operators`),
    type conversions aside (the quantization of a float input, the cast of
    a uint8 one, the dequantization of a float output)."""
    return [
        op for op in operators(content)
        if "float32" in op["types"] and op["op"] not in _TYPE_CONVERSIONS
    ]


# int8 activation ranges: these quantiles of each activation's values on the
# calibration set (bench/int8.py: 99.99 % agrees best with fp32 of 99.9,
# 99.99, 99.999 % and the converter's min/max)
RANGE_QUANTILE = 0.9999
_HISTOGRAM_BINS = 4096


def percentile_ranges(calibrated, representative, quantile=RANGE_QUANTILE):
    """`calibrated` (a float flatbuffer holding each activation's calibrated
    min/max, from the converter's calibrate-only mode) with every
    activation range except the input's and output's
    narrowed to the `quantile` quantiles of its values on `representative`
    (histograms of `_HISTOGRAM_BINS` bins over the min-max range), zero
    kept inside: a calibrated float flatbuffer for `_quantize_calibrated`."""
    from tensorflow.lite.tools import flatbuffer_utils

    graph = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated))
    tensors = graph.subgraphs[0].tensors
    resolver = sys.modules[interpreter_class().__module__].OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "for debugging purposes only": every intermediate tensor kept
        interpreter = interpreter_class()(model_content=bytes(calibrated), experimental_preserve_all_tensors=True,
                                          experimental_op_resolver_type=resolver)
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(source["index"], [1, *representative.shape[1:]], strict=False)
    interpreter.allocate_tensors()
    ranged = {}
    for index, tensor in enumerate(tensors):
        statistics = tensor.quantization
        if index in (source["index"], target["index"]) or statistics is None or statistics.min is None:
            continue
        if len(statistics.min) == 1 and statistics.max[0] > statistics.min[0]:
            ranged[index] = (float(statistics.min[0]), float(statistics.max[0]))
    counts = {index: np.zeros(_HISTOGRAM_BINS, "int64") for index in ranged}
    for image in representative:
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        for index, (low, high) in ranged.items():
            bins = (interpreter.get_tensor(index).ravel() - low) * ((_HISTOGRAM_BINS - 1) / (high - low))
            bins = np.clip(bins.astype("int64"), 0, _HISTOGRAM_BINS - 1)
            counts[index] += np.bincount(bins, minlength=_HISTOGRAM_BINS)
    for index, (low, high) in ranged.items():
        cumulative = np.cumsum(counts[index]) / counts[index].sum()
        width = (high - low) / (_HISTOGRAM_BINS - 1)
        first, last = np.searchsorted(cumulative, [1 - quantile, quantile])
        statistics = tensors[index].quantization
        statistics.min = np.array([min(low + first * width, 0.0)], "float32")
        statistics.max = np.array([max(min(low + (last + 1) * width, high), 0.0)], "float32")
    return bytes(flatbuffer_utils.convert_object_to_bytearray(graph))


class Runner:
    """Runs a single-input, single-output TFLite flatbuffer on numpy batches.

    One interpreter per input shape seen (the flatbuffer's free batch axis
    resized), the `cache_size` most recent kept. A batch is checked against
    the flatbuffer's input shape, then cast into the interpreter's input
    tensor in one pass (no intermediate copy); the output is a copy, never
    a view of the interpreter's memory. Float batches for a quantized input
    are quantized with its scale and zero point; quantized outputs are
    dequantized to float32.

    Args:
        content: the flatbuffer (bytes).
        threads: interpreter threads (default: `default_threads()`).
        cache_size: how many input shapes keep an interpreter.
    """

    def __init__(self, content, threads=None, cache_size=4):
        self.content = bytes(content)
        self.threads = threads or default_threads()
        self.cache_size = cache_size
        self._interpreters = collections.OrderedDict()  # input shape -> (interpreter, input, output)
        interpreter = load_interpreter(self.content, self.threads, allocate=False)
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"one input and one output needed, the flatbuffer has {len(inputs)} and {len(outputs)}")
        (self.input_details,), (self.output_details,) = inputs, outputs
        self.input_shape = tuple(None if side < 0 else int(side) for side in self.input_details["shape_signature"])
        scale, zero = self.output_details["quantization"]
        quantized = scale and self.output_details["dtype"] != np.float32
        self._dequantize = (np.float32(scale), np.float32(zero)) if quantized else None
        scale, zero = self.input_details["quantization"]
        quantized = scale and self.input_details["dtype"] != np.float32
        self._quantize = None
        if quantized:
            self._quantize = (np.float32(scale), np.float32(zero), np.iinfo(self.input_details["dtype"]))
        self._last = None  # (input shape, interpreter, input index, output index) of the last call
        if None not in self.input_shape[1:]:  # a free height or width is stored as 1: resized before allocating
            from keras_lightnets.quiet import stderr_silenced

            with stderr_silenced():  # XNNPACK's notice
                interpreter.allocate_tensors()
            self._keep(tuple(int(side) for side in self.input_details["shape"]), interpreter)

    def _keep(self, shape, interpreter):
        self._interpreters[shape] = (interpreter, self.input_details["index"], self.output_details["index"])
        while len(self._interpreters) > self.cache_size:
            self._interpreters.popitem(last=False)

    def _interpreter_for(self, shape):
        """`(shape, interpreter, input index, output index)` for a batch of `shape`, checked."""
        expected = self.input_shape
        if len(shape) != len(expected) or any(side not in (None, got) for side, got in zip(expected, shape)):
            raise ValueError(f"input of shape {shape}; the flatbuffer takes {expected} (None: any size)")
        if shape in self._interpreters:
            self._interpreters.move_to_end(shape)
        else:
            self._keep(shape, load_interpreter(self.content, self.threads, input_shape=shape))
        return (shape, *self._interpreters[shape])

    def __call__(self, batch):
        batch = np.asarray(batch)
        last = self._last
        if last is None or batch.shape != last[0]:  # the last shape is the most recent: never evicted
            last = self._last = self._interpreter_for(batch.shape)
        _, interpreter, source, target = last
        if self._quantize is not None and batch.dtype.kind == "f":  # float values into an int8/uint8 input
            scale, zero, limits = self._quantize
            batch = np.clip(np.round(batch / scale + zero), limits.min, limits.max)
        # A cast copy into the input tensor; the view is dropped before invoke()
        # (LiteRT refuses to run while one is held).
        interpreter.tensor(source)()[...] = batch
        interpreter.invoke()
        out = interpreter.get_tensor(target)
        if self._dequantize is not None:
            scale, zero = self._dequantize
            out = (out.astype("float32") - zero) * scale
        return out


# ---------------------------------------------------------------- compiled weights files

_DIGEST_HEX = 16
_MAX_COMPILED_EXPANSION, _MAX_COMPILED_SLACK = 4, 64 << 20  # a flatbuffer vs its weights file


def _compiled_prefix(arch, weights_digest, size):
    from keras_lightnets import __version__

    height, width = size
    return f"{arch}-{weights_digest}-{height}x{width}-{__version__}-"


def compiled_folder():
    """`<pretrained cache>/compiled`: flatbuffers compiled from weights files."""
    from keras_lightnets.weights.cache import cache_dir

    return os.path.join(cache_dir(), "compiled")


def _side_record(arch, weights_digest, size, content_digest):
    from keras_lightnets import __version__
    from keras_lightnets.weights.record import COMPILED_FORMAT

    return {"format": COMPILED_FORMAT, "arch": arch, "weights_sha256": weights_digest,
            "size": [int(size[0]), int(size[1])], "version": __version__, "tflite_sha256": content_digest}


def _read_bounded(path, limit):
    from keras_lightnets.files import open_regular

    with open_regular(path) as f:
        content = f.read(limit + 1)
    if len(content) > limit:
        raise ValueError(f"more than {limit} bytes")
    return content


def load_compiled(weights, size, arch, classes=None, threads=None, weights_digest=None):
    """A `Runner` of the flatbuffer compiled from `weights` for input `size`, or None.

    The entry is `<arch>-<sha256 of weights>-<H>x<W>-<package version>-<16 hex
    digits of the flatbuffer's sha256>.tflite` in `compiled_folder()`, with a
    side record (`.json`, `keras_lightnets.weights.record.check_compiled_record`)
    that names the same arch, weights sha256, size and version and the
    flatbuffer's whole sha256. An entry is served only when its name, its
    side record and its bytes all agree with `weights`, TFLite reads it, its
    input is `(batch, H, W, 3)` float32 and it gives `classes` outputs; any
    other entry of that prefix (a swapped, renamed or stale file) is deleted
    and None returned, so the caller compiles again.

    Args:
        weights: a keras-lightnets weights file (.h5).
        size: `(height, width)` of the model input.
        arch: the arch of the weights' record.
        classes: the class count the record gives, checked when not None.
        weights_digest: the weights file's sha256, if already known.
    """
    from keras_lightnets.weights.h5 import sha256_of
    from keras_lightnets.weights.record import check_compiled_record, parse_json

    folder = compiled_folder()
    digest = weights_digest or sha256_of(weights)
    prefix = _compiled_prefix(arch, digest, size)
    limit = _MAX_COMPILED_EXPANSION * os.path.getsize(weights) + _MAX_COMPILED_SLACK
    try:
        names = sorted(n for n in os.listdir(folder) if n.startswith(prefix) and n.endswith(".tflite"))
    except OSError:
        return None
    for name in names:
        path = os.path.join(folder, name)
        side = path[: -len(".tflite")] + ".json"
        try:
            record = check_compiled_record(parse_json(_read_bounded(side, 4096), 4096, max_depth=2))
            if record != _side_record(arch, digest, size, record["tflite_sha256"]):
                raise ValueError("side record made for other weights")
            if record["tflite_sha256"][:_DIGEST_HEX] != name[len(prefix):-len(".tflite")]:
                raise ValueError("name and side record differ")
            content = _read_bounded(path, limit)
            if hashlib.sha256(content).hexdigest() != record["tflite_sha256"]:
                raise ValueError("bytes differ from the side record")
            runner = Runner(content, threads)
            if runner.input_shape != (None, *size, 3) or runner.input_details["dtype"] != np.float32:
                raise ValueError(f"input {runner.input_shape}")
            if classes is not None and tuple(runner.output_details["shape_signature"][1:]) != (classes,):
                raise ValueError("another class count")
            return runner
        except (OSError, ValueError, RuntimeError):  # RecordError is a ValueError
            _remove_quietly(path)
            _remove_quietly(side)
    return None


def save_compiled(weights, size, content, arch, weights_digest=None):
    """Keeps `content` as the flatbuffer compiled from `weights` (of `arch`) for
    `size`, with its side record (see `load_compiled`), written atomically;
    returns its path."""
    import json

    from keras_lightnets.files import write_atomically
    from keras_lightnets.weights.h5 import sha256_of

    folder = compiled_folder()
    os.makedirs(folder, exist_ok=True)
    digest = weights_digest or sha256_of(weights)
    prefix = _compiled_prefix(arch, digest, size)
    content_digest = hashlib.sha256(content).hexdigest()
    path = os.path.join(folder, f"{prefix}{content_digest[:_DIGEST_HEX]}.tflite")
    side = path[: -len(".tflite")] + ".json"

    def write(data):
        def to(temp):
            with open(temp, "wb") as f:
                f.write(data)

        return to

    write_atomically(path, write(content))
    write_atomically(side, write(json.dumps(_side_record(arch, digest, size, content_digest)).encode()))
    kept = (os.path.basename(path), os.path.basename(side))
    for name in os.listdir(folder):  # other compilations of the same file and size
        if name.startswith(prefix) and name.endswith((".tflite", ".json")) and name not in kept:
            _remove_quietly(os.path.join(folder, name))
    return path


def _remove_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass
