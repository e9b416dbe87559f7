"""ONNX: Keras models converted by Keras' own `model.export(format="onnx")`, run in ONNX Runtime.

    from keras_lightnets.runtime.onnx_export import OnnxRunner, onnx_bytes

    content = onnx_bytes(model)                                   # the model's own input shape
    content = onnx_bytes(deeplab, input_shape=(None, None, 3))    # free height and width
    OnnxRunner(content)(batch)

On the TensorFlow backend `model.export(..., format="onnx")` traces the
model's call (`training=False`) into a `tf.function` and converts it with
tf2onnx, with the numpy-2 patch Keras applies to tf2onnx. Custom layers
need nothing: what is converted is the TensorFlow graph their keras.ops
lower to. The batch axis is always free. `keras_lightnets.runtime.export`
checks every ONNX file against Keras before writing it.

Needs the `onnx` extra: tf2onnx, onnx and onnxruntime. Importing this
module imports the standard library only.
"""

import importlib.util
import os
import tempfile

from keras_lightnets.errors import LightnetsError

DEFAULT_OPSET = 17
TOOLS = ("tf2onnx", "onnx", "onnxruntime")


class OnnxExportError(LightnetsError, RuntimeError):
    """A model that cannot be exported to ONNX (the conversion failed, or the tools are missing); one line."""


def check_tools():
    """Raises `OnnxExportError` naming the missing tools, without importing any of them."""
    missing = [name for name in TOOLS if importlib.util.find_spec(name) is None]
    if missing:
        raise OnnxExportError(
            f"ONNX export needs tf2onnx, onnx and onnxruntime ({', '.join(missing)} missing): "
            "pip install 'keras-lightnets[onnx]'"
        )


def onnx_bytes(model, input_shape=None, opset=DEFAULT_OPSET):
    """Converts a single-input Keras model (TensorFlow backend) to an ONNX model (bytes), unchecked.

    Args:
        input_shape: the input shape without the batch axis, `None` for free
            height/width (default: the model's own).
        opset: the ONNX opset.

    Raises:
        OnnxExportError: tools missing, or the conversion failed.
    """
    check_tools()
    import keras
    import tensorflow as tf

    from keras_lightnets.quiet import stderr_silenced

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise OnnxExportError(f"{model.name}: one input and one output are supported")
    shape = tuple(input_shape or model.input_shape[1:])
    spec = tf.TensorSpec((None, *shape), keras.backend.standardize_dtype(model.inputs[0].dtype), name="input")
    with tempfile.TemporaryDirectory(prefix="lightnets-onnx-") as folder:
        path = os.path.join(folder, "model.onnx")
        try:
            with stderr_silenced():  # tf2onnx's and TensorFlow's notices; errors are in the exception
                model.export(path, format="onnx", input_signature=[spec], opset_version=opset, verbose=False)
        except Exception as err:  # noqa: BLE001 (tf2onnx raises many kinds)
            raise OnnxExportError(f"ONNX conversion of {model.name} failed: {' '.join(str(err).split())[:500]}") from None
        with open(path, "rb") as f:
            return f.read()


class OnnxRunner:
    """Runs a single-input ONNX model on numpy batches with ONNX Runtime (CPU)."""

    def __init__(self, content, threads=None):
        import onnxruntime as ort

        from keras_lightnets.runtime.tflite import default_threads

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(bytes(content), options, providers=["CPUExecutionProvider"])
        (self.input,) = self.session.get_inputs()

    def __call__(self, batch):
        return self.session.run(None, {self.input.name: batch})[0]
