"""`Preprocess`: a weights source's input preprocessing as a Keras layer."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_lightnets")
class Preprocess(keras.layers.Layer):
    """`(x[..., order] / divisor - mean) / std` on RGB pixels 0-255 (any dtype in, float out).

    Built by `keras_lightnets.preprocessing.preprocessing_layer(mode)` from
    the one table of modes, so a model with this layer in front equals the
    plain model on `preprocess_input(x, mode)`.
    """

    def __init__(self, order=(0, 1, 2), divisor=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), **kwargs):
        super().__init__(**kwargs)
        self.order = [int(c) for c in order]
        self.divisor = float(divisor)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.order != [0, 1, 2]:
            x = ops.take(x, self.order, axis=-1)
        mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        std = ops.convert_to_tensor(self.std, dtype=self.compute_dtype)
        return (x / self.divisor - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "order": self.order, "divisor": self.divisor, "mean": self.mean, "std": self.std}
