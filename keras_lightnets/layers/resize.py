"""Bilinear resizing with PyTorch's `F.interpolate` semantics, in keras.ops only."""

import keras
import numpy as np
from keras import ops


def interpolation_matrix(in_size, out_size, align_corners):
    """The `(out_size, in_size)` float64 matrix `M` of one axis of the resize:
    `resize(x) = M @ x` along that axis, with `_resize_axis`'s rule."""
    dst = np.arange(out_size, dtype="float64")
    if align_corners:
        src = dst * ((in_size - 1) / max(out_size - 1, 1))
    else:
        src = np.maximum((dst + 0.5) * (in_size / out_size) - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype("int64"), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    matrix = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, low), 1.0 - (src - low))
    np.add.at(matrix, (rows, high), src - low)
    return matrix


def _resize_axis(x, out_size, axis, align_corners):
    """Linear interpolation of `x` (NHWC) along `axis` (1 or 2) to `out_size`.

    `align_corners=True` maps the corner pixel centres onto each other
    (src = dst * (in - 1) / (out - 1)); `False` is the half-pixel rule
    (src = (dst + 0.5) * in / out - 0.5, clamped at 0), as
    `torch.nn.functional.interpolate(mode="bilinear")` computes them.
    """
    in_size = ops.shape(x)[axis]
    in_f = ops.cast(in_size, "float32")
    out_f = ops.cast(out_size, "float32")
    dst = ops.cast(ops.arange(out_size), "float32")
    if align_corners:
        src = dst * ((in_f - 1.0) / ops.maximum(out_f - 1.0, 1.0))
    else:
        src = ops.maximum((dst + 0.5) * (in_f / out_f) - 0.5, 0.0)
    low = ops.minimum(ops.cast(ops.floor(src), "int32"), in_size - 1)
    high = ops.minimum(low + 1, in_size - 1)
    weight = src - ops.cast(low, "float32")
    weight = ops.reshape(weight, (1, -1, 1, 1) if axis == 1 else (1, 1, -1, 1))
    below = ops.take(x, low, axis=axis)
    above = ops.take(x, high, axis=axis)
    return below + (above - below) * ops.cast(weight, x.dtype)


@keras.saving.register_keras_serializable(package="keras_lightnets")
class BilinearResize(keras.layers.Layer):
    """Resizes the first input to the height and width of the second.

    `BilinearResize(align_corners=True)([features, reference])` is PyTorch's
    `F.interpolate(features, size=reference.shape[2:], mode="bilinear",
    align_corners=True)`; `align_corners=False` is the half-pixel resize of
    `keras.ops.image.resize` (without antialiasing). Works with unknown
    (None) spatial sizes.
    """

    def __init__(self, align_corners=False, **kwargs):
        super().__init__(**kwargs)
        self.align_corners = bool(align_corners)

    def call(self, inputs):
        x, reference = inputs
        height, width = ops.shape(reference)[1], ops.shape(reference)[2]
        if x.shape[1] == 1 and x.shape[2] == 1:
            # one source pixel (DeepLab's image pooling): both rules copy it
            return ops.broadcast_to(x, (ops.shape(x)[0], height, width, ops.shape(x)[3]))
        if not self.align_corners and isinstance(height, int) and isinstance(width, int):
            # the same half-pixel rule as one native op (2-3x faster than the gathers)
            return ops.image.resize(x, (height, width), interpolation="bilinear", antialias=False)
        x = _resize_axis(x, height, 1, self.align_corners)
        return _resize_axis(x, width, 2, self.align_corners)

    def compute_output_shape(self, input_shape):
        x_shape, reference_shape = input_shape
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])

    def get_config(self):
        return {**super().get_config(), "align_corners": self.align_corners}
