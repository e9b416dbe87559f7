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
        if [tuple(v.shape) for v in variables] != [tuple(a.shape) for a in arrays]:
            raise _mismatch(model, layer, variables, saved_name, arrays, source)
    if len(ours) != len(saved):
        if len(ours) > len(saved):
            detail = f"the model's layer '{ours[len(saved)][0].name}' has no weights in the file"
        else:
            detail = f"the file's layer '{saved[len(ours)][0]}' has no layer in the model"
        raise WeightsMismatchError(
            f"{source} does not fit model '{model.name}': the model has {len(ours)} "
            f"layers with weights, the file {len(saved)}; {detail}"
        )


def _mismatch(model, layer, variables, saved_name, weights, source):
    return WeightsMismatchError(
        f"{source} does not fit model '{model.name}': layer '{layer.name}' "
        f"expects {_shapes(variables)}, the file's layer '{saved_name}' has {_shapes(weights)}"
    )


def load_by_name(model, path, replaceable=()):
    """Loads the file's layers into the model's layers of the same name; file
    layers the model lacks are ignored, and not read. A layer named in
    `replaceable` (a classifier of another class count) that the file cannot
    fill keeps its own initialisation. Returns the names of those layers.

    Every layer is checked against the file's structure before any weight is read.
    """
    with open_weights(path) as file:
        return _load_by_name(model, file, replaceable)


def _load_by_name(model, file, replaceable=()):
    saved = dict(file.layers or [])
    fitting, replaced = [], []
    for layer, variables in _model_layers(model):
        found = saved.get(layer.name)
        if found is not None and [tuple(w.shape) for w in found] == [tuple(v.shape) for v in variables]:
            fitting.append((layer, variables))
        elif layer.name in replaceable:
            replaced.append(layer.name)
        elif found is None:
            raise WeightsMismatchError(
                f"{file.label} does not fit model '{model.name}': no weights for layer '{layer.name}'"
            )
        else:
            raise _mismatch(model, layer, variables, layer.name, found, file.label)
    for layer, variables in fitting:
        for variable, array in zip(variables, file.arrays(layer.name)):
            variable.assign(array)
    return replaced


def load_weights(model, weights, by_name=False):
    """Loads `weights` into `model` and returns the model.

    Args:
        weights: `None` (nothing to do) or the path of a weights file
            (pretrained names are resolved by the builders).
        by_name: match layers by name rather than by order; file layers the
            model lacks (e.g. the classifier of a no-top model) are ignored,
            and not read.

    Legacy Keras .h5 files (keras.applications' official files and the
    converter's output) are checked against the model before anything is
    read or assigned. Other HDF5 files (Keras 3 `.weights.h5`) go to
    `model.load_weights` once every dataset in them has passed the same checks.
    """
    if weights is None:
        return model
    with open_weights(weights) as file:
        if file.layers is None:
            file.check_all_datasets()
            model.load_weights(file.path)
            return model
        if by_name:
            _load_by_name(model, file)
            return model
        check_fits(model, file.layers, source=file.label)
        for (_, variables), (name, _) in zip(_model_layers(model), file.layers):
            for variable, array in zip(variables, file.arrays(name)):
                variable.assign(array)
    return model
