"""Where a converted model leaves its PyTorch reference: layer-by-layer comparison.

`torch_layer_diffs` runs the Keras model and the PyTorch reference once on
the same input and compares, in network order, each Keras layer of the
naming's layer map with its PyTorch module (forward hooks; NCHW turned
NHWC). Where a torch Sequential ends with the activation that Keras writes
as a layer of its own (torchvision's `Conv2dNormActivation`: conv, BN,
ReLU6), the Sequential's output is also compared with that activation
layer's, so a dropped or different activation shows at the block that has
it. `report_lines` prints the first pair past tolerance, then the next few.

`keras_lightnets.runtime.tflite_diff` compares a Keras model with its TFLite
export the same way.
"""

import dataclasses

import numpy as np

RTOL = 1e-4  # of a layer's scale: max(1, max |reference output|)
FOLLOWING = 4  # divergences listed after the first


@dataclasses.dataclass
class LayerDiff:
    """One compared pair: a Keras layer's output and the other model's tensor."""

    keras_layer: str
    other: str
    max_abs: float
    mean_abs: float
    keras_shape: tuple
    other_shape: tuple
    tolerance: float

    @property
    def diverges(self):
        return not self.max_abs <= self.tolerance  # NaN diverges too

    def line(self):
        shapes = f"{self.keras_shape}"
        if self.other_shape != self.keras_shape:
            shapes += f" ↔ {self.other_shape}"
        if self.max_abs == float("inf"):
            return f"{self.keras_layer} ↔ {self.other}: shapes differ, {shapes}"
        return (
            f"{self.keras_layer} ↔ {self.other}: max |Δ| {self.max_abs:.2e}, mean |Δ| {self.mean_abs:.2e}, "
            f"shapes {shapes}"
        )


def compare(keras_layer, other, ours, reference, rtol=RTOL, atol=0.0, channels_first=False):
    """A `LayerDiff` of an output `ours` and the `reference` it should equal.

    `channels_first`: `reference` is NCHW (PyTorch); 4-D arrays are made NHWC.
    Arrays of equal size but another shape (a Linear's `(n, c)` against a
    1x1 conv's `(n, 1, 1, c)`) are compared flat; other shapes diverge.
    `tolerance = rtol * max(1, max |reference|) + atol`.
    """
    ours, reference = np.asarray(ours, "float64"), np.asarray(reference, "float64")
    reference_shape = tuple(reference.shape)
    if channels_first and reference.ndim == 4:
        reference = reference.transpose(0, 2, 3, 1)
    if reference.shape != ours.shape and reference.size == ours.size:
        reference = reference.reshape(ours.shape)
    tolerance = rtol * max(1.0, float(np.abs(reference).max(initial=0.0))) + atol
    if reference.shape != ours.shape:
        return LayerDiff(keras_layer, other, float("inf"), float("inf"), tuple(ours.shape), reference_shape, tolerance)
    delta = np.abs(ours - reference)
    return LayerDiff(
        keras_layer, other, float(delta.max(initial=0.0)), float(delta.mean()) if delta.size else 0.0,
        tuple(ours.shape), reference_shape, tolerance,
    )


def report_lines(diffs, following=FOLLOWING):
    """The first pair past tolerance and the next few; or the closest call."""
    diverging = [d for d in diffs if d.diverges]
    if not diffs:
        return ["no pair compared"]
    if not diverging:
        closest = max(diffs, key=lambda d: d.max_abs / d.tolerance if d.tolerance else 0.0)
        return [
            f"no divergence in {len(diffs)} pairs; the closest to its tolerance ({closest.tolerance:.1e}): "
            f"{closest.line()}"
        ]
    lines = [f"first divergence: {diverging[0].line()}"]
    lines += [f"then:             {d.line()}" for d in diverging[1 : 1 + following]]
    if len(diverging) > 1 + following:
        lines.append(f"... {len(diverging) - 1 - following} more of {len(diffs)} pairs past tolerance")
    return lines


# ---------------------------------------------------------------- Keras ↔ PyTorch


def keras_outputs(model, names, images):
    """`{layer name: output}` of the named layers on `images`, in one run."""
    import keras

    names = list(dict.fromkeys(names))
    probe = keras.Model(model.input, [model.get_layer(name).output for name in names])
    outputs = probe(images, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return {name: keras.ops.convert_to_numpy(value) for name, value in zip(names, outputs)}


def _activation_after(model, layer_name):
    """The Keras activation layer whose only input is `layer_name`'s output, or None."""
    from keras import layers

    output = model.get_layer(layer_name).output
    for layer in model.layers:
        if not isinstance(layer, (layers.ReLU, layers.Activation, layers.LeakyReLU, layers.ELU)):
            continue
        if isinstance(layer, layers.Activation) and layer.activation.__name__ == "linear":
            continue
        try:
            if layer.input is output:
                return layer.name
        except (AttributeError, ValueError):  # a layer called more than once has no single input
            continue
    return None


def _ends_with_pointwise(modules, name):
    """The Sequential holding module `name` when every module after it there is
    an activation, dropout or identity (its output is then `name`'s, activated)."""
    from torch import nn

    parent_name, _, child = name.rpartition(".")
    parent = modules.get(parent_name)
    if type(parent).forward is not nn.Sequential.forward:  # not a Sequential, or one with its own forward
        return None
    children = list(parent._modules.items())
    position = [key for key, _ in children].index(child) if child in parent._modules else None
    if position is None:
        return None
    after = [module for _, module in children[position + 1 :]]
    pointwise = (nn.Identity, nn.Dropout, nn.Dropout2d)
    if all(isinstance(m, pointwise) or type(m).__module__ == "torch.nn.modules.activation" for m in after):
        return parent_name
    return None


def torch_pairs(model, torch_model, rows):
    """`[(keras layer, torch module)]` to compare, in the Keras model's layer order."""
    modules = dict(torch_model.named_modules())
    order = {layer.name: index for index, layer in enumerate(model.layers)}
    pairs = []
    for prefix, layer_name in rows:
        if prefix not in modules or layer_name not in order:
            continue
        pairs.append((layer_name, prefix))
        sequential = _ends_with_pointwise(modules, prefix)
        activation = _activation_after(model, layer_name) if sequential else None
        if activation is not None:
            pairs.append((activation, sequential))
    return sorted(dict.fromkeys(pairs), key=lambda pair: order[pair[0]])


def torch_outputs(torch_model, module_names, images_nhwc):
    """`{module name: output (numpy)}` of the named modules on `images_nhwc`; a
    module called more than once in the forward pass is left out (its output
    is ambiguous)."""
    import torch

    modules = dict(torch_model.named_modules())
    seen = {name: [] for name in module_names}

    def hook(name):
        def store(module, inputs, output):
            if isinstance(output, torch.Tensor):
                seen[name].append(output.detach().clone())  # before an in-place ReLU changes it

        return store

    handles = [modules[name].register_forward_hook(hook(name)) for name in seen]
    try:
        with torch.no_grad():
            torch_model.eval()(torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2))))
    finally:
        for handle in handles:
            handle.remove()
    return {name: values[0].numpy() for name, values in seen.items() if len(values) == 1}


def torch_layer_diffs(model, torch_model, rows, images, rtol=RTOL):
    """Compares the Keras model with its PyTorch reference layer by layer on
    `images` (NHWC); returns `[LayerDiff]` in network order.

    Args:
        model: the Keras model (with the converted weights).
        torch_model: the reference holding the checkpoint.
        rows: the naming's `layer_map` rows, `[(torch module, keras layer)]`.
        images: NHWC float32 inputs (one is enough).
    """
    pairs = torch_pairs(model, torch_model, rows)
    expected = torch_outputs(torch_model, {module for _, module in pairs}, images)
    pairs = [(layer, module) for layer, module in pairs if module in expected]
    got = keras_outputs(model, [layer for layer, _ in pairs], images)
    return [compare(layer, module, got[layer], expected[module], rtol, channels_first=True) for layer, module in pairs]
