"""What every builder shares: input handling, the classifier or pooling top,
weights loading, the options every model has (`include_preprocessing`,
`feature_extractor`), and the argument documentation (as keras.applications
shares its own).
"""

import functools
import inspect
import textwrap

import keras
from keras import layers

from keras_lightnets.models.tables import FEATURE_TAPS
from keras_lightnets.preprocessing import preprocessing_layer
from keras_lightnets.weights import pretrained
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
    "include_preprocessing": "whether the model takes RGB pixels 0-255 and preprocesses them\n"
    "itself (a `Preprocess` layer in front; the other layers and their names unchanged).\n"
    '`True`: the preprocessing of the weights of `style` (`"tf"`: keras.applications\'\n'
    "x / 127.5 - 1, EfficientNet-Lite's (x - 127) / 128; `\"torch\"`: ImageNet mean/std,\n"
    "BGR 0-255 for megvii's ShuffleNet v1); or a mode of `preprocess_input`, or a\n"
    "weights record's `preprocessing` dict (what `from_h5` passes).",
    "feature_extractor": "return a model whose output is a dict of the last feature map\n"
    "at each stride: `P1` (stride 2) to `P5` (stride 32), the layers of\n"
    "`keras_lightnets.models.tables.FEATURE_TAPS`.",
    "feature_keys": "the levels the feature extractor outputs (default: all of them).",
}
# The preprocessing of `include_preprocessing=True` by style, unless a builder says otherwise.
STYLE_PREPROCESSING = {"tf": "tf", "torch": "torch"}


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


def loads_without_random_values(builder):
    """Decorator for builders: loads `weights` (a path, `"imagenet"` or a
    weights tag) without random initial values.

    The model is built inside a `keras.StatelessScope`, where Keras defers
    creating variables and records what loading assigns; each variable is
    then created once, from the loaded value, instead of from a random draw
    that loading would overwrite (about half of the time,
    `bench/load_speed.py`). Pretrained weights are resolved here, for every
    builder alike, once the model is built: from the builder's name, its
    arguments and the model's input size (`keras_lightnets.weights.pretrained`).
    """
    signature = inspect.signature(builder)

    @functools.wraps(builder)
    def build(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        weights = bound.arguments.get("weights")
        if weights is None:
            return builder(*args, **kwargs)
        tag = pretrained.is_tag(weights)
        if tag:
            bound.arguments["weights"] = None
        with keras.StatelessScope(initialize_variables=False) as scope:
            model = builder(*bound.args, **bound.kwargs)
        if tag:
            options = {**bound.arguments, "rows": model.input_shape[1]}
            path, by_name = pretrained.resolve_tag(builder.__name__, weights, options, build)
            with keras.StatelessScope(initialize_variables=False) as scope:
                load_weights(model, path, by_name=by_name)
        loaded = ((variable, scope.get_current_value(variable)) for variable in model.variables)
        create_from_arrays((variable, value) for variable, value in loaded if value is not None)
        return model

    return build


def resolve_input_shape(input_shape, input_tensor, include_top, default_size=224):
    """keras.applications' rule: `input_shape`, else `input_tensor`'s shape,
    else `(default_size, default_size, 3)` with the classifier and
    `(None, None, 3)` without."""
    if input_shape is not None:
        return tuple(input_shape)
    if input_tensor is not None and input_tensor.shape[1:] is not None:
        return tuple(input_tensor.shape[1:])
    return (default_size, default_size, 3) if include_top else (None, None, 3)


def image_input(input_shape, input_tensor, include_top, default_size=224, min_size=32):
    """Returns `(img_input, model_inputs)` like keras.applications' models
    (the input shape by `resolve_input_shape`)."""
    input_shape = resolve_input_shape(input_shape, input_tensor, include_top, default_size)
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


def finish_model(inputs, x, name, weights, include_top, pooling, top):
    """Adds the classifier (`top(x)`) or the pooling option, makes the model
    and loads `weights` (a path; `loads_without_random_values` resolves tags).

    Args:
        top: a callable that adds the classifier to `x`.
    """
    x = top(x) if include_top else pooling_head(x, pooling)
    model = keras.Model(inputs, x, name=name)
    return load_weights(model, weights)


def feature_outputs(model, taps, keys=None):
    """`{level: output}` of `model`'s layers named by `taps` (a row of `FEATURE_TAPS`), in level order.

    Args:
        keys: the levels to return (default: all of the row's).
    """
    keys = list(taps) if keys is None else list(keys)
    unknown = [key for key in keys if key not in taps]
    if unknown or not keys:
        raise ValueError(f"feature_keys must be some of {list(taps)}, got {keys!r}")
    return {key: model.get_layer(taps[key]).output for key in taps if key in keys}


def model_options(taps, preprocessing=None, default_size=224):
    """Decorator giving a builder the options `include_preprocessing`,
    `feature_extractor` and `feature_keys` (keras.applications', kimm's),
    implemented here once for every builder.

    `include_preprocessing` builds the model on `Preprocess(pixels)` through
    the builder's own `input_tensor` argument, so every layer keeps its name
    and weights files load as into the plain model. `feature_extractor`
    builds the whole model (loading `weights` as usual), then returns the
    Functional model from its input to the `FEATURE_TAPS` layers.

    Args:
        taps: the builder's feature taps: the name of its `FEATURE_TAPS` row,
            formatted with the builder's arguments (`"efficientnet_lite{variant}"`),
            or a function of the arguments (a dict) returning `{level: layer name}`.
        preprocessing: `{style: mode}` of `include_preprocessing=True`,
            over `STYLE_PREPROCESSING`.
        default_size: the builder's input size with the classifier: an int
            or a function of the arguments.

    The decorated builder has `feature_taps(**builder_kwargs)`: the
    `{level: layer name}` of the model those arguments build.
    """
    modes = {**STYLE_PREPROCESSING, **(preprocessing or {})}

    def decorate(builder):
        signature = inspect.signature(builder)

        def arguments(args, kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return bound

        def feature_taps(**kwargs):
            values = arguments((), kwargs).arguments
            return taps(values) if callable(taps) else FEATURE_TAPS[taps.format(**values)]

        own_preprocessing = "include_preprocessing" in signature.parameters  # keras.applications' MobileNetV3

        @functools.wraps(builder)
        def build(*args, feature_extractor=False, feature_keys=None, **kwargs):
            if feature_keys is not None and not feature_extractor:
                raise ValueError("feature_keys applies with feature_extractor=True")
            include_preprocessing = False if own_preprocessing else kwargs.pop("include_preprocessing", False)
            bound = arguments(args, kwargs)
            if include_preprocessing not in (False, None):
                values = bound.arguments
                style = getattr(values.get("style"), "name", values.get("style")) or "tf"
                size = default_size(values) if callable(default_size) else default_size
                shape = resolve_input_shape(
                    values["input_shape"], values["input_tensor"], values.get("include_top", False), size
                )
                pixels = values["input_tensor"]
                if pixels is None or not keras.backend.is_keras_tensor(pixels):
                    pixels = layers.Input(shape=shape, tensor=pixels)
                mode = modes[style] if include_preprocessing is True else include_preprocessing
                values["input_tensor"] = preprocessing_layer(mode)(pixels)
                values["input_shape"] = shape
            model = builder(*bound.args, **bound.kwargs)
            if not feature_extractor:
                return model
            outputs = feature_outputs(model, feature_taps(**bound.arguments), feature_keys)
            return keras.Model(model.input, outputs, name=f"{model.name}_features")

        options = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
            for name, default in (("include_preprocessing", False), ("feature_extractor", False), ("feature_keys", None))
            if name not in signature.parameters
        ]
        build.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *options])
        build.feature_taps = feature_taps
        return build

    return decorate
