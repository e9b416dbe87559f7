"""Loading weights files into models, checked layer by layer before anything is read.

Loading compares the file's structure (names, shapes, dtypes: `WeightsFile`)
with the model's variables before reading a single weight, so a file for
another architecture or width fails with an error naming the first
mismatching layer and both shapes, and only the weights the model uses are read.
"""

from keras_lightnets.weights.h5 import (  # noqa: F401  (WeightsMismatchError is part of this module's API)
    WeightsMismatchError,
    layer_variables,
    open_weights,
)


def _shapes(arrays):
    return ", ".join(str(tuple(a.shape)) for a in arrays) or "no weights"


def _model_layers(model):
    """`[(layer, [variables])]` in the order legacy .h5 files store them."""
    result = []
    for layer in model.layers:
        variables = layer_variables(layer)
        if variables:
            result.append((layer, variables))
    return result


def check_fits(model, saved, source="weights file"):
    """Raises WeightsMismatchError naming the first layer that does not fit.

    `saved` is `[(layer name, [weights])]`, each weight anything with a
    `shape` (arrays, or `DatasetInfo` before the data is read).
    """
    ours = _model_layers(model)
    for (layer, variables), (saved_name, arrays) in zip(ours, saved):
        expected = [tuple(v.shape) for v in variables]
        found = [tuple(a.shape) for a in arrays]
        if expected != found:
            raise WeightsMismatchError(
                f"{source} does not fit model '{model.name}': layer '{layer.name}' "
                f"expects {_shapes(variables)}, the file's layer '{saved_name}' has "
                f"{_shapes(arrays)}"
            )
    if len(ours) != len(saved):
        if len(ours) > len(saved):
            detail = f"the model's layer '{ours[len(saved)][0].name}' has no weights in the file"
        else:
            detail = f"the file's layer '{saved[len(ours)][0]}' has no layer in the model"
        raise WeightsMismatchError(
            f"{source} does not fit model '{model.name}': the model has {len(ours)} "
            f"layers with weights, the file {len(saved)}; {detail}"
        )


def _by_name(model, saved, source):
    """Pairs each model layer with the file's layer of the same name."""
    saved = dict(saved)
    ours = _model_layers(model)
    missing = [layer.name for layer, _ in ours if layer.name not in saved]
    if missing:
        raise WeightsMismatchError(
            f"{source} does not fit model '{model.name}': no weights for layer '{missing[0]}'"
        )
    return [(layer.name, saved[layer.name]) for layer, _ in ours]


def load_weights(model, weights, by_name=False, pretrained=None):
    """Loads `weights` into `model` and returns the model.

    Args:
        weights: `None` (nothing to do), a path of a weights file, or
            `"imagenet"` with `pretrained` set.
        by_name: match layers by name rather than by order; file layers the
            model lacks (e.g. the classifier of a no-top model) are ignored,
            and not read.
        pretrained: a zero-argument callable that returns the path of the
            pretrained file `"imagenet"` stands for (see
            `keras_lightnets.weights.pretrained`); None when the model has none.

    Legacy Keras .h5 files (keras.applications' official files and the
    converter's output) are checked against the model before anything is
    read or assigned. Other HDF5 files (Keras 3 `.weights.h5`) go to
    `model.load_weights` once every dataset in them has passed the same checks.
    """
    if weights is None:
        return model
    if isinstance(weights, str) and weights == "imagenet":
        if pretrained is None:
            raise ValueError(
                f"no ImageNet weights for {model.name}; pass weights=PATH to a weights file"
            )
        path, by_name = pretrained()
        return load_weights(model, path, by_name=by_name)
    with open_weights(weights) as file:
        if file.layers is None:
            file.check_all_datasets()
            model.load_weights(file.path)
            return model
        saved = _by_name(model, file.layers, file.label) if by_name else file.layers
        check_fits(model, saved, source=file.label)
        for (_, variables), (name, _) in zip(_model_layers(model), saved):
            for variable, array in zip(variables, file.arrays(name)):
                variable.assign(array)
    return model
