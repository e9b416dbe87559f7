"""The converter's error: a checkpoint that cannot become the requested Keras weights."""

from keras_lightnets.errors import LightnetsError


class ConversionError(LightnetsError, ValueError):
    """The checkpoint cannot become the requested Keras weights; one-line message."""
