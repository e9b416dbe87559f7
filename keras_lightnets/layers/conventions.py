"""How a network's weights were trained: padding and BatchNormalization conventions.

`style` is a `Conventions` object (or its name, `"tf"` or `"torch"`):

- `"tf"`: TensorFlow/keras.applications. Stride-2 convolutions pad
  bottom/right (TF "same"), BatchNormalization epsilon 1e-3, max pools "same".
- `"torch"`: PyTorch. Stride-2 convolutions pad `k // 2` on every side,
  BatchNormalization epsilon 1e-5, max pools padded with -inf.

The two have the same layer names and weight shapes; only padding layers and
BatchNormalization constants differ.
"""

import dataclasses

from keras import layers

from keras_lightnets.layers import custom


@dataclasses.dataclass(frozen=True)
class Conventions:
    """The conventions a network's weights were trained with.

    Attributes:
        name: `"tf"` or `"torch"`, as the builders' `style` argument.
        stride_padding: where strided convolutions pad: `"tf"` (TF "same":
            one less row/column at the top/left for even sizes), `"tf_bottom_right"`
            (always one less at the top/left, keras.applications' MobileNet) or
            `"torch"` (`k // 2` on every side).
        bn_epsilon, bn_momentum: BatchNormalization constants (Keras momentum;
            PyTorch's momentum 0.1 is Keras' 0.9).
    """

    name: str
    stride_padding: str
    bn_epsilon: float
    bn_momentum: float

    @property
    def torch(self):
        return self.name == "torch"

    def batch_norm(self, name):
        """A BatchNormalization layer with these constants."""
        return layers.BatchNormalization(epsilon=self.bn_epsilon, momentum=self.bn_momentum, name=name)

    def pad_for_stride(self, x, kernel_size, strides, dilation=1, name=None, explicit=True):
        """`(x, padding)` for a convolution of `strides`.

        Stride 1 is "same". A strided convolution gets a `ZeroPadding2D`
        (named `name`) and "valid", except with TF conventions and
        `explicit=False`, where Keras' own "same" pads as TF does
        (keras.applications uses both forms, and its layer names show which).
        """
        if strides == 1 or not (self.torch or explicit):
            return x, "same"
        return stride_padding(x, kernel_size, self.stride_padding, dilation, name=name), "valid"

    def avg_pool(self, x, pool_size, strides, padding, name):
        """PyTorch's `AvgPool2d(pool_size, strides, padding)` (the zero padding
        counts in the average) or Keras' "same" pool."""
        if self.torch:
            x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
            return layers.AveragePooling2D(pool_size, strides, name=name)(x)
        return layers.AveragePooling2D(pool_size, strides, padding="same", name=name)(x)

    def max_pool(self, x, pool_size, strides, padding, name):
        """PyTorch's `MaxPool2d(pool_size, strides, padding)` or Keras' "same" pool."""
        if self.torch:
            return custom.torch_max_pool(x, pool_size, strides, padding=padding, name=name)
        return layers.MaxPooling2D(pool_size, strides, padding="same", name=name)(x)


# keras.applications builds its BatchNormalization layers with these constants.
TF = Conventions("tf", "tf", bn_epsilon=1e-3, bn_momentum=0.99)
KERAS_MOBILENET = Conventions("tf", "tf_bottom_right", bn_epsilon=1e-3, bn_momentum=0.99)
KERAS_MOBILENET_V2 = Conventions("tf", "tf", bn_epsilon=1e-3, bn_momentum=0.999)
# PyTorch's BatchNorm2d defaults are eps=1e-5, momentum=0.1 (Keras 0.9).
TORCH = Conventions("torch", "torch", bn_epsilon=1e-5, bn_momentum=0.9)
# torchvision builds MobileNetV3's BatchNorms with eps=0.001, momentum=0.01.
TORCH_MOBILENET_V3 = Conventions("torch", "torch", bn_epsilon=1e-3, bn_momentum=0.99)
STYLES = ("tf", "torch")


def conventions_for(style, tf=TF, torch=TORCH):
    """The `Conventions` of `style` (`"tf"`, `"torch"` or a `Conventions`);
    `tf` and `torch` are the family's TensorFlow and PyTorch variants."""
    if isinstance(style, Conventions):
        return style
    if style == "torch":
        return torch
    if style == "tf":
        return tf
    raise ValueError(f"style must be one of {STYLES}, got {style!r}")


def check_style(style):
    conventions_for(style)


def stride_padding(x, kernel_size, style, dilation=1, name=None):
    """Explicit zero padding in front of a strided `"valid"` convolution.

    Args:
        x: input tensor (channels last).
        kernel_size: int, the convolution's kernel size.
        style: `"torch"` pads `dilation * (kernel_size - 1) // 2` on all four
            sides (PyTorch `padding=k // 2`). `"tf"` reproduces TensorFlow's
            "same" padding, as keras.applications' `correct_pad`: one less
            row/column at the top/left when the input size is even.
            `"tf_bottom_right"` always pads one less at the top/left, as
            keras.applications' MobileNet (v1) does whatever the input size.
        dilation: int, the convolution's dilation rate.
        name: layer name.
    """
    total = dilation * (kernel_size - 1)
    if style == "torch":
        padding = ((total // 2, total // 2), (total // 2, total // 2))
    elif style == "tf_bottom_right":
        padding = ((total // 2 - 1, total // 2), (total // 2 - 1, total // 2))
    elif style == "tf":
        padding = tuple(
            (total // 2 - (1 if size is None or size % 2 == 0 else 0), total // 2)
            for size in x.shape[1:3]
        )
    else:
        raise ValueError(f"unknown padding style {style!r}")
    return layers.ZeroPadding2D(padding, name=name)(x)


