"""The one module that touches Keras' private API.

keras-lightnets needs a few things Keras does not make public: the node graph
of a Functional model (to fold BatchNorm and rewrite the inference graph),
deferred variable initialisers (to create each variable once, from the loaded
array), BatchNormalization's moments (synchronized BatchNorm with a stable
variance) and the trainer's symbolic build (multi-worker training). Every use goes through a function here, and `check()` says
clearly which one a Keras release no longer has (`tests/test_keras_internals.py`).
The install requirement bounds Keras to the releases the suite has run on.
"""

import keras

TESTED_KERAS = ("3.15",)


class KerasInternalsChanged(RuntimeError):
    """The installed Keras lacks a private attribute keras-lightnets relies on."""


# ---------------------------------------------------------------- the Functional graph


def nodes_by_depth(model):
    """`{depth: [Node]}` of a Functional model (depth 0: the output nodes)."""
    return model._nodes_by_depth


def is_functional(model):
    return isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth")


def inbound_nodes(layer):
    """The nodes at which `layer` was called."""
    return layer._inbound_nodes


def producer(tensor):
    """The layer (operation) whose output `tensor` is."""
    return tensor._keras_history.operation


# ---------------------------------------------------------------- deferred variables


def is_deferred(variable):
    """Whether `variable` was made inside `keras.StatelessScope(initialize_variables=False)`
    and has not been created yet (it keeps its initializer until then)."""
    return getattr(variable, "_initializer", None) is not None


def set_initializer(variable, initializer):
    """Replaces a deferred variable's initializer (called when it is created)."""
    variable._initializer = initializer


# ---------------------------------------------------------------- BatchNormalization


def batch_normalization_with_moments(moments, name="BatchNormalizationWithMoments"):
    """A `keras.layers.BatchNormalization` subclass (class name `name`) whose
    training statistics come from `moments(inputs, reduction_axes)`, which
    returns `(mean, variance)` or None for Keras' own computation."""

    class BatchNormalizationWithMoments(keras.layers.BatchNormalization):
        def _moments(self, inputs, mask):
            if mask is None:
                found = moments(inputs, self._reduction_axes)
                if found is not None:
                    return found
            return super()._moments(inputs, mask)

    BatchNormalizationWithMoments.__name__ = BatchNormalizationWithMoments.__qualname__ = name
    return BatchNormalizationWithMoments


# ---------------------------------------------------------------- the trainer


def symbolic_build(model_class):
    """The trainer's `_maybe_symbolic_build(model, data_batch=...)`, or None."""
    return getattr(model_class, "_maybe_symbolic_build", None)


def replace_symbolic_build(model, build):
    """Makes `model` build its metrics and optimizer with `build(iterator=None, data_batch=None)`."""
    model._maybe_symbolic_build = build


# ---------------------------------------------------------------- check


def check():
    """Raises KerasInternalsChanged naming each private attribute this Keras lacks."""
    inputs = keras.Input((4, 4, 3))
    outputs = keras.layers.BatchNormalization()(keras.layers.Conv2D(2, 1)(inputs))
    model = keras.Model(inputs, outputs)
    with keras.StatelessScope(initialize_variables=False):
        deferred = keras.Variable(initializer="zeros", shape=(1,))
    missing = [
        name
        for name, present in (
            ("Functional._nodes_by_depth", hasattr(model, "_nodes_by_depth")),
            ("Layer._inbound_nodes", hasattr(model.layers[1], "_inbound_nodes")),
            ("KerasTensor._keras_history", hasattr(outputs, "_keras_history")),
            ("Variable._initializer", hasattr(deferred, "_initializer")),
            ("BatchNormalization._moments", hasattr(keras.layers.BatchNormalization, "_moments")),
            ("BatchNormalization._reduction_axes", hasattr(model.layers[-1], "_reduction_axes")),
            ("Trainer._maybe_symbolic_build", symbolic_build(keras.Model) is not None),
        )
        if not present
    ]
    if missing:
        raise KerasInternalsChanged(
            f"Keras {keras.__version__} lacks {', '.join(missing)}; keras-lightnets was tested with "
            f"Keras {', '.join(TESTED_KERAS)}: pip install 'keras>={TESTED_KERAS[0]},<3.16'"
        )
