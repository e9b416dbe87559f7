"""What every builder shares: input handling, the classifier or pooling top,
weights loading, and the argument documentation (as keras.applications
shares its own).
"""

import functools
import inspect
import textwrap
import threading

import keras
from keras import layers

from keras_lightnets.weights.h5 import create_from_arrays
from keras_lightnets.weights.loading import load_weights

COMMON_ARGS = {
    "input_shape": "optional shape tuple, `({size}, {size}, 3)` by default with the\n"
    "classifier, any size >= 32 without it.",
    "include_top": "whether to include the classifier.",
    "weights": "`None`{imagenet} or the path of a weights file (.h5).",
    "input_tensor": "optional Keras tensor to use as the model input.",
    "pooling": '`None`, `"avg"` or `"max"` when `include_top=False`.',
    "classes": "number of classes of the classifier.",
    "classifier_activation": "activation of the classifier, `None` for logits.",
}


def documented(summary, args, size=224, imagenet=""):
    """Decorator that writes a builder's docstring: `summary`, then every
    argument in signature order, described by `args` or, for the arguments
    keras.applications' builders share, by `COMMON_ARGS`."""

    def decorate(builder):
        lines = [summary.strip(), "", "Args:"]
        for name in inspect.signature(builder).parameters:
            text = args.get(name) or COMMON_ARGS[name].format(size=size, imagenet=imagenet)
            wrapped = textwrap.wrap(f"{name}: " + " ".join(text.split()), 84)
            lines += ["    " + wrapped[0], *("        " + line for line in wrapped[1:])]
        lines += ["", "Returns:", "    A `keras.Model`."]
        builder.__doc__ = "\n".join(lines)
        return builder

    return decorate


_loading = threading.local()


def loads_without_random_values(builder):
    """Decorator for builders: given `weights`, the model is built inside a
    `keras.StatelessScope`, where Keras defers creating variables and
    records what loading assigns; each variable is then created once, from
    the loaded value, instead of from a random draw that loading would
    overwrite (about half of the time, `bench/load_speed.py`)."""
    signature = inspect.signature(builder)

    @functools.wraps(builder)
    def build(*args, **kwargs):
        if signature.bind(*args, **kwargs).arguments.get("weights") is None or getattr(_loading, "active", False):
            return builder(*args, **kwargs)
        _loading.active = True  # a builder called while loading (a conversion on first use) builds as usual
        try:
            with keras.StatelessScope(initialize_variables=False) as scope:
                model = builder(*args, **kwargs)
        finally:
            _loading.active = False
        loaded = ((variable, scope.get_current_value(variable)) for variable in model.variables)
        create_from_arrays((variable, value) for variable, value in loaded if value is not None)
        return model

    return build


def image_input(input_shape, input_tensor, include_top, default_size=224, min_size=32):
    """Returns `(img_input, model_inputs)` like keras.applications' models.

    `input_shape=None` means `(default_size, default_size, 3)` with the
    classifier and `(None, None, 3)` without.
    """
    if input_shape is None:
        if input_tensor is not None and input_tensor.shape[1:] is not None:
            input_shape = tuple(input_tensor.shape[1:])
        elif include_top:
            input_shape = (default_size, default_size, 3)
        else:
            input_shape = (None, None, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    for size in input_shape[:2]:
        if size is not None and size < min_size:
            raise ValueError(
                f"input_shape {input_shape}: height and width must be at least {min_size}"
            )
    if input_tensor is None:
        img_input = layers.Input(shape=input_shape)
        return img_input, img_input
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor, keras.utils.get_source_inputs(input_tensor)
    img_input = layers.Input(tensor=input_tensor, shape=input_shape)
    return img_input, img_input


def pooling_head(x, pooling):
    """The `include_top=False` pooling option of keras.applications."""
    if pooling is None:
        return x
    if pooling == "avg":
        return layers.GlobalAveragePooling2D()(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D()(x)
    raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")


def dense_top(x, classes, classifier_activation, dropout=None, pool_name=None, dropout_name="dropout"):
    """Global average pooling → optional dropout → `Dense` named `predictions`."""
    x = layers.GlobalAveragePooling2D(name=pool_name)(x)
    if dropout:
        x = layers.Dropout(dropout, name=dropout_name)(x)
    return layers.Dense(classes, activation=classifier_activation, name="predictions")(x)


def finish_model(inputs, x, name, weights, include_top, pooling, top, imagenet=None):
    """Adds the classifier (`top(x)`) or the pooling option, makes the model
    and loads `weights`.

    Args:
        top: a callable that adds the classifier to `x`.
        imagenet: what `weights="imagenet"` loads: a callable returning
            `(path, by_name)` (`keras_lightnets.weights.pretrained.imagenet_resolver`),
            or None when the model has no pretrained weights.
    """
    x = top(x) if include_top else pooling_head(x, pooling)
    model = keras.Model(inputs, x, name=name)
    return load_weights(model, weights, pretrained=imagenet)
