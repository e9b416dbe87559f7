"""Layers Keras lacks for PyTorch-trained networks, in `keras.ops` only."""

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="keras_lightnets")
class ChannelShuffle(layers.Layer):
    """ShuffleNet's channel shuffle, in torchvision's channel order.

    PyTorch's `x.view(b, g, c // g, h, w).transpose(1, 2).flatten(1, 2)`:
    channel `i * (c // g) + j` moves to `j * g + i`. Spatial sizes may be
    unknown (`None`).
    """

    def __init__(self, groups, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def build(self, input_shape):
        if input_shape[-1] % self.groups:
            raise ValueError(
                f"{self.name}: {input_shape[-1]} channels do not split into {self.groups} groups"
            )

    def call(self, x):
        shape = ops.shape(x)
        grouped = ops.reshape(x, (*shape[:-1], self.groups, x.shape[-1] // self.groups))
        return ops.reshape(ops.swapaxes(grouped, -1, -2), shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package="keras_lightnets")
class ChannelSplit(layers.Layer):
    """Splits the channels into two halves, first half first (`x.chunk(2, dim=1)`)."""

    def build(self, input_shape):
        if input_shape[-1] % 2:
            raise ValueError(f"{self.name}: cannot halve {input_shape[-1]} channels")

    def call(self, x):
        return ops.split(x, 2, axis=-1)

    def compute_output_shape(self, input_shape):
        half = (*input_shape[:-1], input_shape[-1] // 2)
        return [half, half]


@keras.saving.register_keras_serializable(package="keras_lightnets")
class NegInfPadding2D(layers.Layer):
    """Pads height and width with -inf, so that a following max pooling
    ignores the padding as PyTorch's MaxPool2d does.

    Args:
        padding: `((top, bottom), (left, right))`.
    """

    def __init__(self, padding, **kwargs):
        super().__init__(**kwargs)
        self.padding = tuple(tuple(int(p) for p in side) for side in padding)

    def call(self, x):
        pad = [(0, 0), *self.padding, (0, 0)]
        return ops.pad(x, pad, constant_values=float("-inf"))

    def compute_output_shape(self, input_shape):
        (top, bottom), (left, right) = self.padding
        rows, cols = input_shape[1], input_shape[2]
        return (
            input_shape[0],
            None if rows is None else rows + top + bottom,
            None if cols is None else cols + left + right,
            input_shape[3],
        )

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


@keras.saving.register_keras_serializable(package="keras_lightnets")
class HardSigmoid(layers.Layer):
    """Hard sigmoid `relu6(x + 3) / 6`, rounded as the weights' framework rounds it.

    `form="torch"` divides by 6, as PyTorch's `nn.Hardsigmoid` (and Keras'
    own `hard_sigmoid` activation on TensorFlow); `form="keras"` multiplies
    by 1 / 6, as keras.applications' MobileNetV3 writes its gate. The two
    differ in the last bit of some values; each reproduces its source bit
    for bit.
    """

    FORMS = ("torch", "keras")

    def __init__(self, form="torch", **kwargs):
        super().__init__(**kwargs)
        if form not in self.FORMS:
            raise ValueError(f"form must be one of {self.FORMS}, got {form!r}")
        self.form = form

    def call(self, x):
        gate = ops.relu6(x + 3.0)
        return gate / 6.0 if self.form == "torch" else gate * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "form": self.form}


@keras.saving.register_keras_serializable(package="keras_lightnets")
class HardSwish(layers.Layer):
    """PyTorch's `nn.Hardswish`: `(x * relu6(x + 3)) / 6`, in that order.

    Keras' `Activation("hard_swish")` (keras.applications' MobileNetV3)
    computes `x * (relu6(x + 3) / 6)`, which differs in the last bit of some
    values.
    """

    def call(self, x):
        return x * ops.relu6(x + 3.0) / 6.0

    def compute_output_shape(self, input_shape):
        return input_shape


def torch_max_pool(x, pool_size=3, strides=2, padding=0, ceil_mode=False, name=None):
    """PyTorch's `MaxPool2d(pool_size, strides, padding, ceil_mode)`.

    The padding is -inf (`NegInfPadding2D`, named `{name}_pad`). PyTorch's
    ceil mode adds a last window that may run past the bottom/right edge,
    but only one that starts inside the input or its left padding; `strides
    - 1` extra rows/columns of -inf at the bottom/right give exactly those
    windows whatever the input size, as long as `padding + strides <=
    pool_size` (always true for SqueezeNet's and ShuffleNet's pools).
    """
    extra = strides - 1 if ceil_mode else 0
    if ceil_mode and padding + strides > pool_size:
        raise ValueError(
            f"ceil_mode with padding {padding}, stride {strides} and pool size {pool_size} is "
            "not supported (windows could start in the padding)"
        )
    if padding or extra:
        sides = ((padding, padding + extra), (padding, padding + extra))
        x = NegInfPadding2D(sides, name=f"{name}_pad")(x)
    return layers.MaxPooling2D(pool_size, strides, padding="valid", name=name)(x)

