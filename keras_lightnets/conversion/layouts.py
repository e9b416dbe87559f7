"""PyTorch → Keras tensor layouts, one function per Keras layer class.

Each function receives the Keras layer and `fetch(name)`, which returns the
PyTorch tensor `<module prefix>.<name>` as a numpy array, and returns the
arrays in the order of `layer.trainable_weights + layer.non_trainable_weights`.
"""

import numpy as np

from keras_lightnets.errors import LightnetsError


class LayoutError(LightnetsError, ValueError):
    """A checkpoint tensor cannot take the shape of its Keras weight."""


def conv2d(layer, fetch):
    """nn.Conv2d (out, in/groups, kh, kw) → Conv2D (kh, kw, in/groups, out).

    A 2-D weight is an nn.Linear feeding a 1x1 Conv2D classifier (Keras'
    MobileNet `conv_preds`).
    """
    weight = fetch("weight")
    if weight.ndim == 2:
        weight = weight[:, :, None, None]
    arrays = [weight.transpose(2, 3, 1, 0)]
    if layer.use_bias:
        arrays.append(fetch("bias"))
    return arrays


def depthwise_conv2d(layer, fetch):
    """nn.Conv2d with groups=C, weight (C·m, 1, kh, kw) → DepthwiseConv2D (kh, kw, C, m).

    PyTorch orders output channel c·m + j as the j-th filter of input
    channel c, hence the reshape before the transpose.
    """
    weight = fetch("weight")
    if weight.ndim != 4 or weight.shape[1] != 1:
        raise LayoutError(f"expected a depthwise weight (C*m, 1, kh, kw), got {weight.shape}")
    multiplier = layer.depth_multiplier
    channels = weight.shape[0] // multiplier
    kernel = weight.reshape(channels, multiplier, *weight.shape[2:]).transpose(2, 3, 0, 1)
    arrays = [kernel]
    if layer.use_bias:
        arrays.append(fetch("bias"))
    return arrays


def dense(layer, fetch):
    """nn.Linear (out, in) → Dense (in, out); a 1x1 nn.Conv2d classifier too."""
    weight = fetch("weight")
    if weight.ndim == 4:
        if weight.shape[2:] != (1, 1):
            raise LayoutError(f"only a 1x1 convolution can become a Dense layer, got {weight.shape}")
        weight = weight[:, :, 0, 0]
    arrays = [weight.T]
    if layer.use_bias:
        arrays.append(fetch("bias"))
    return arrays


def batch_normalization(layer, fetch):
    """nn.BatchNorm2d → BatchNormalization (gamma, beta, moving mean, moving variance)."""
    return [fetch("weight"), fetch("bias"), fetch("running_mean"), fetch("running_var")]


LAYOUTS = {
    "Conv2D": conv2d,
    "DepthwiseConv2D": depthwise_conv2d,
    "Dense": dense,
    "BatchNormalization": batch_normalization,
}


def keras_arrays(layer, fetch):
    """Converts the PyTorch tensors of one module for the Keras `layer`."""
    kind = type(layer).__name__
    if kind not in LAYOUTS:
        raise LayoutError(f"no PyTorch layout for Keras layer class {kind}")
    return [np.ascontiguousarray(a, dtype="float32") for a in LAYOUTS[kind](layer, fetch)]
