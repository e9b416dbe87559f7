"""Fast inference: a model's inference graph on the fastest exact CPU runtime.

`model.predict(x)` on one image spends most of its time outside the network
(data adapters, callbacks); eager `model(x)` runs op by op; and under
`tf.function` every inference-mode BatchNormalization is still a chain of
elementwise ops over the whole feature map. `Predictor` runs
`fold_batchnorm(model)` (`keras_lightnets.runtime.folding`) on a TFLite
flatbuffer under XNNPACK (`keras_lightnets.runtime.tflite`), or as a
`tf.function` compiled once (spatial size fixed, batch size free). The
SavedModel and TFLite exports use the same graph (bench/run.py measures
the difference).
"""

import collections

import keras
import numpy as np

from keras_lightnets import keras_internals as internals
from keras_lightnets.runtime import tflite
from keras_lightnets.runtime.folding import fold_batchnorm

RUNTIMES = ("auto", "tflite", "tf")
QUANTIZATIONS = ("none", "int8")
# Input sizes a Predictor keeps a TFLite flatbuffer for (models with free input sides).
_INPUT_SIZES_KEPT = 4


def _static_input_shape(model):
    """The input shape without the batch axis if `model` has one input of
    fixed size, else None."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        return None
    shape = tuple(inputs[0].shape[1:])
    return shape if None not in shape else None


def _tensorflow_sees_a_gpu():
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


class Predictor:
    """Calls `model` in inference mode on the fastest exact CPU runtime.

    The model is folded (`fold_batchnorm`) when the `Predictor` is built:
    its weights at that moment are the ones used; `model` itself is not
    changed. Models that are not Functional run unfolded.

    Runtimes: `"tflite"` converts the folded graph to a TFLite flatbuffer in
    memory (`keras_lightnets.runtime.tflite`) and runs it with XNNPACK on every
    usable core, one interpreter per batch size (the last few kept); `"tf"`
    runs it as a `tf.function` (under JAX or torch, the backend's
    `predict_on_batch`). `"auto"` picks `"tflite"` when the backend is
    TensorFlow, TensorFlow sees no GPU, the model has one input and one
    output, its input size is fixed except the batch axis and the
    conversion gives builtin ops only; otherwise `"tf"`. `runtime="tflite"`
    on a model with free input sides converts once per input size.

    `quantize="int8"` runs an int8 flatbuffer on TFLite (XNNPACK's QS8
    kernels): weights per output channel, activation ranges measured on
    `calibration`, float input and output, the first `float_head`
    convolutions in float. Its answers are close to the float model's, not
    equal (bench/int8.py measures the top-1 agreement); it needs the
    TensorFlow backend, one input and output of fixed size.

    Args:
        model: a Keras model.
        fold: whether to fold BatchNormalization (default True).
        runtime: `"auto"` (default), `"tflite"` or `"tf"`.
        threads: TFLite threads (default: `TF_NUM_INTRAOP_THREADS` if set,
            else every usable core).
        quantize: `"none"` (default) or `"int8"`.
        calibration: for int8, model inputs to measure the activation
            ranges on (an array, one input per row, preprocessed as the
            model expects): e.g. `keras_lightnets.runtime.calibration.
            calibration_inputs(weights_info(path)["preprocessing"])`, real
            photos and seeded crops of them.
        float_head: for int8, how many of the first convolutions stay float
            (default `tflite.FLOAT_HEAD`: MobileNetV2's Conv1 and first
            block; 0: every op int8).

    Attributes:
        runtime: the runtime that runs, `"tflite"` or `"tf"`.
        flatbuffer: the TFLite flatbuffer (bytes) of a fixed-size model
            run by TFLite, else None.

    Example:
        predict = Predictor(model)
        probabilities = predict(batch)  # numpy in, numpy out
    """

    def __init__(self, model, fold=True, runtime="auto", threads=None, quantize="none", calibration=None,
                 float_head=None):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        if quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
        if quantize == "int8" and (runtime == "tf" or calibration is None or len(calibration) == 0):
            raise ValueError("quantize='int8' runs on TFLite and needs calibration inputs (an array of model inputs)")
        self.quantize = quantize
        self.float_head = float_head
        self._calibration = None if calibration is None else np.asarray(calibration)
        self.model = model
        foldable = isinstance(model, keras.Sequential) or internals.is_functional(model)
        self.inference_model = fold_batchnorm(model) if fold and foldable else model
        self.threads = threads
        self.flatbuffer = None
        self._function = None
        self._runners = collections.OrderedDict()  # input shape without the batch axis -> tflite.Runner
        self._last = (None, None)  # (input shape without the batch axis, its runner), the last one used
        self._static_runner = None  # the runner of a fixed-size model on TFLite
        self.runtime = self._pick(runtime)

    def _pick(self, runtime):
        """The runtime to use; converts a fixed-size model for TFLite."""
        if runtime == "tf":
            return "tf"
        model = self.inference_model
        tensorflow = keras.backend.backend() == "tensorflow"
        single = len(getattr(model, "inputs", None) or ()) == 1 and len(getattr(model, "outputs", None) or ()) == 1
        if runtime == "tflite" and not (tensorflow and single):
            raise ValueError(
                "runtime='tflite' needs the TensorFlow backend and a model with one input and one output"
            )
        shape = _static_input_shape(model)
        if self.quantize == "int8":
            if not (tensorflow and single and shape is not None):
                raise ValueError("quantize='int8' needs the TensorFlow backend and one input and output of fixed size")
            if self._calibration.shape[1:] != shape:
                raise ValueError(f"calibration inputs of shape {self._calibration.shape[1:]}; the model takes {shape}")
            self._static_runner = self._runner(shape)
            self._calibration = None  # converted: no longer needed
            return "tflite"
        if runtime == "auto" and not (tensorflow and single and shape is not None and not _tensorflow_sees_a_gpu()):
            return "tf"
        if shape is None:
            return "tflite"  # converted per input size on use
        try:
            self._static_runner = self._runner(shape)
        except (tflite.ConversionError, ValueError, RuntimeError):  # not convertible, or not loadable by LiteRT
            if runtime == "tflite":
                raise
            return "tf"
        return "tflite"

    def _runner(self, shape):
        """The TFLite runner of input `shape` (no batch axis), converted on first use."""
        if self._last[0] == shape:
            return self._last[1]
        if shape not in self._runners:
            quantized = {}
            if self.quantize == "int8":
                quantized = {"quantize": "int8", "representative": self._calibration, "float_head": self.float_head}
            content = tflite.tflite_bytes(self.inference_model, input_shape=shape, **quantized)
            self._runners[shape] = tflite.Runner(content, self.threads)
            if shape == _static_input_shape(self.inference_model):
                self.flatbuffer = content
            while len(self._runners) > _INPUT_SIZES_KEPT:
                self._runners.popitem(last=False)
        self._runners.move_to_end(shape)
        self._last = (shape, self._runners[shape])
        return self._last[1]

    def _compile(self):
        model = self.inference_model
        if keras.backend.backend() != "tensorflow":
            return model.predict_on_batch
        import tensorflow as tf

        inputs = getattr(model, "inputs", None)
        if not inputs or len(inputs) != 1:  # subclassed models: traced per input signature seen
            return tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        spec = tf.TensorSpec((None,) + tuple(inputs[0].shape[1:]), inputs[0].dtype)
        return tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def __call__(self, batch):
        if self._static_runner is not None:
            # the runner checks the shape against the flatbuffer's and casts
            # into the interpreter's input tensor: no copy of its own
            return self._static_runner(batch)
        if self.runtime == "tflite":
            batch = np.asarray(batch)
            return self._runner(batch.shape[1:])(batch)
        inputs = getattr(self.inference_model, "inputs", None)
        dtype = inputs[0].dtype if inputs else getattr(self.inference_model, "input_dtype", None)
        batch = np.asarray(batch, dtype=dtype or "float32")
        if self._function is None:
            self._function = self._compile()
        return keras.ops.convert_to_numpy(self._function(batch))
