"""Fast inference: a model call compiled once for its input shape.

`model.predict(x)` on one image spends most of its time outside the network
(data adapters, callbacks); eager `model(x)` runs op by op. `Predictor`
compiles the forward pass once per model, with the spatial size fixed and
the batch size free, which on the TensorFlow backend is as fast as a
hand-written `tf.function` (bench/run.py measures it).
"""

import keras
import numpy as np


class Predictor:
    """Calls `model` in inference mode through a compiled function.

    Args:
        model: a Keras model with a fixed input size.

    Example:
        predict = Predictor(model)
        probabilities = predict(batch)  # numpy in, numpy out
    """

    def __init__(self, model):
        self.model = model
        self._function = None

    def _compile(self):
        if keras.backend.backend() != "tensorflow":
            return self.model.predict_on_batch
        import tensorflow as tf

        spec = tf.TensorSpec((None,) + tuple(self.model.input_shape[1:]), self.model.input.dtype)
        model = self.model
        return tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def __call__(self, batch):
        if self._function is None:
            self._function = self._compile()
        return keras.ops.convert_to_numpy(self._function(np.asarray(batch, dtype=self.model.input.dtype)))
