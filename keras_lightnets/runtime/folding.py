"""BatchNorm folding: a model's inference graph with exact rewrites.

`fold_batchnorm(model)` is the model's forward pass at inference in which
each BatchNormalization that directly follows a convolution or Dense layer
is merged into that layer's kernel and bias, plus other exact rewrites
(see `fold_batchnorm`). `Predictor` (`keras_lightnets.runtime.predictor`)
runs it, and the SavedModel and TFLite exports hold it.
"""

import keras
import numpy as np
from keras import layers, ops

from keras_lightnets import keras_internals as internals
from keras_lightnets.layers.resize import BilinearResize, interpolation_matrix

# Layers whose output channels are the last axis of the output and whose
# kernel's last axis (Dense, Conv) or (input channel, multiplier) axes
# (DepthwiseConv) index those channels.
_CONVS = (layers.Conv1D, layers.Conv2D, layers.Conv3D)
_DEPTHWISE = (layers.DepthwiseConv1D, layers.DepthwiseConv2D)
_SEPARABLE = (layers.SeparableConv1D, layers.SeparableConv2D)
_FOLDABLE = _CONVS + _DEPTHWISE + _SEPARABLE + (layers.Dense,)
# Exactly the identity at inference.
_IDENTITY_AT_INFERENCE = (
    layers.Dropout,
    layers.SpatialDropout1D,
    layers.SpatialDropout2D,
    layers.SpatialDropout3D,
    layers.GaussianDropout,
    layers.GaussianNoise,
    layers.AlphaDropout,
    layers.Identity,
)


def _is_functional(model):
    return internals.is_functional(model)


def _consumers(model):
    """`{id(tensor): number of uses}` of every tensor in `model`'s graph,
    model outputs counted as uses."""
    uses = {}
    for nodes in internals.nodes_by_depth(model).values():
        for node in nodes:
            for tensor in node.input_tensors:
                uses[id(tensor)] = uses.get(id(tensor), 0) + 1
    for tensor in model.outputs:
        uses[id(tensor)] = uses.get(id(tensor), 0) + 1
    return uses


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _linear(layer):
    activation = getattr(layer, "activation", None)
    return activation is None or activation is keras.activations.linear


def _fold_pairs(model):
    """`[(bn, layer)]` for every BatchNormalization that can be merged into
    the layer producing its input: that layer is a conv/Dense without
    activation, called once, and the BatchNormalization is the only consumer
    of its output and normalises its channel axis (the last)."""
    uses = _consumers(model)
    pairs = []
    for layer in model.layers:
        if not isinstance(layer, layers.BatchNormalization) or len(internals.inbound_nodes(layer)) != 1:
            continue
        (tensor,) = internals.inbound_nodes(layer)[0].input_tensors
        producer = internals.producer(tensor)
        axis = layer.axis if layer.axis >= 0 else layer.axis + len(tensor.shape)
        if (
            _is_affine(producer)
            and len(internals.inbound_nodes(producer)) == 1
            and uses.get(id(tensor)) == 1
            and axis == len(tensor.shape) - 1
            and _linear(producer)
        ):
            pairs.append((layer, producer))
    return pairs


def _bn_scale_shift(bn):
    """`(scale, shift)` in float64 with `bn(x) == x * scale + shift` at inference."""
    variance = np.asarray(bn.moving_variance.numpy(), "float64")
    mean = np.asarray(bn.moving_mean.numpy(), "float64")
    gamma = np.asarray(bn.gamma.numpy(), "float64") if bn.scale else 1.0
    beta = np.asarray(bn.beta.numpy(), "float64") if bn.center else 0.0
    scale = gamma / np.sqrt(variance + bn.epsilon)
    return scale, beta - mean * scale


def folded_weights(layer, bn):
    """The weights of `layer` followed by `bn`, as one layer with a bias.

    Returns a list in the order of `layer.weights` with `use_bias=True`:
    `[kernel, bias]`, or `[depthwise, pointwise, bias]` for separable convs.
    A DepthwiseConv2D kernel is `(kh, kw, C, m)` and its output channel
    `c * m + j` is kernel entry `[..., c, j]`.
    """
    scale, shift = _bn_scale_shift(bn)
    kernels = [np.asarray(w.numpy(), "float64") for w in layer.weights]
    bias = kernels.pop() if layer.use_bias else 0.0
    if isinstance(layer, _DEPTHWISE):
        (kernel,) = kernels
        kernels = [kernel * scale.reshape(kernel.shape[-2:])]
    else:
        kernels[-1] = kernels[-1] * scale  # output channels last
    kernels.append(bias * scale + shift)
    return [k.astype(layer.weights[0].dtype) for k in kernels]


def _affine_weights(layer, bn=None):
    """`(kernels, bias)` of a conv/Dense `layer`, with `bn` folded in if given."""
    if bn is not None:
        *kernels, bias = folded_weights(layer, bn)
        return kernels, bias
    weights = [w.numpy() for w in layer.weights]
    return (weights[:-1], weights[-1]) if layer.use_bias else (weights, None)


def _is_affine(layer):
    """Whether `layer` is a plain float conv/Dense that `_Affine` can run."""
    return (
        isinstance(layer, _FOLDABLE)
        and _channels_last(layer)
        and not getattr(layer, "lora_enabled", False)
        and getattr(layer, "quantization_mode", None) is None
    )


def _reading_taps(kernel_size, dilation, size):
    """The taps of a stride-1 "same" convolution along one axis that read
    data: tap `j` (offset `j - k // 2`) reads inputs `i + (j - k // 2) * d`,
    all outside a map of `size` when `|j - k // 2| * d >= size` (padding
    only, zeros). `range(k)` when the size is unknown or the kernel even."""
    if size is None or kernel_size % 2 == 0:
        return range(kernel_size)
    reach = (size - 1) // dilation  # the farthest offset that still reads data
    centre = kernel_size // 2
    return range(max(0, centre - reach), min(kernel_size, centre + reach + 1))


def _trimmed_kernel(layer, kernel, input_shape):
    """`(kernel, dilation)` of a dilated stride-1 "same" Conv2D or
    DepthwiseConv2D on a map of `input_shape`, without the taps that read
    only padding (`_reading_taps`): the same convolution, with its "same"
    padding shrunk to the taps kept; an axis left with one tap needs no
    dilation. `(kernel, dilation)` unchanged for any other layer."""
    dilation = tuple(getattr(layer, "dilation_rate", ()))
    if (
        not isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)) or len(dilation) != 2
        or dilation == (1, 1) or layer.padding != "same" or tuple(layer.strides) != (1, 1)
        or len(input_shape) != 4
    ):
        return kernel, dilation
    rows, cols = (
        _reading_taps(k, d, size) for k, d, size in zip(kernel.shape[:2], dilation, input_shape[1:3])
    )
    kernel = kernel[rows.start:rows.stop, cols.start:cols.stop]
    return kernel, tuple(d if len(taps) > 1 else 1 for d, taps in zip(dilation, (rows, cols)))


def _native_dilated(x, kernel, depthwise, dilation, padding):
    """TensorFlow's own dilated Conv2D / DepthwiseConv2dNative kernels:
    `tf.nn.convolution` and `tf.nn.depthwise_conv2d` compute a dilated
    convolution as SpaceToBatch -> convolution -> BatchToSpace (a pass over
    a padded copy of the map, most of it padding on small maps); the ops'
    `dilations` attribute runs the dilated taps directly, on CPU and in the
    TFLite conversion (CONV_2D / DEPTHWISE_CONV_2D dilation factors)."""
    import tensorflow as tf

    arguments = {"strides": [1, 1, 1, 1], "padding": padding.upper(), "dilations": [1, *dilation, 1]}
    if depthwise:
        return tf.raw_ops.DepthwiseConv2dNative(input=x, filter=kernel, **arguments)
    return tf.raw_ops.Conv2D(input=x, filter=kernel, **arguments)


class _Affine:
    """A conv/Dense layer's computation with constant (folded) weights.

    A dilated stride-1 Conv2D or DepthwiseConv2D loses the taps that read
    only padding on a map of `input_shape` (`_trimmed_kernel`: DeepLab's ASPP
    at rates 12 and 18 on the 8x8 map of a 129 px input is a 1x1 conv), and
    under TensorFlow one still dilated runs the native dilated kernel
    (`_native_dilated`).
    """

    def __init__(self, layer, bn=None, input_shape=(), dilated=True):
        self.layer = layer
        self.kernels, self.bias = _affine_weights(layer, bn)
        self.dilation = tuple(getattr(layer, "dilation_rate", ()))
        kernel = self.kernels[0]
        if dilated and len(self.kernels) == 1:
            self.kernels[0], self.dilation = _trimmed_kernel(layer, kernel, input_shape)
        self.trimmed = self.kernels[0].shape != kernel.shape  # taps dropped
        # Backend tensors made once: a traced function captures them by
        # reference instead of embedding a copy of each as a graph constant
        # (ResNet-50 DeepLabV3+'s tf.function: 1.1 GB less at its peak).
        self.kernels = [ops.convert_to_tensor(k) for k in self.kernels]
        self.bias = None if self.bias is None else ops.convert_to_tensor(self.bias)
        self.native = (  # the native dilated kernel
            dilated and keras.backend.backend() == "tensorflow"
            and isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)) and len(self.dilation) == 2
            and self.dilation != (1, 1) and tuple(layer.strides) == (1, 1) and getattr(layer, "groups", 1) == 1
        )

    def __call__(self, x, **kwargs):  # kwargs: `mask`, `training`, unused at inference
        layer = self.layer
        if self.native:
            y = _native_dilated(x, self.kernels[0], isinstance(layer, _DEPTHWISE), self.dilation, layer.padding)
        elif isinstance(layer, layers.Dense):
            y = ops.matmul(x, self.kernels[0])
        elif isinstance(layer, _DEPTHWISE):
            y = ops.depthwise_conv(x, self.kernels[0], strides=layer.strides, padding=layer.padding,
                                   dilation_rate=self.dilation, data_format=layer.data_format)
        elif isinstance(layer, _SEPARABLE):
            y = ops.separable_conv(x, *self.kernels, strides=layer.strides, padding=layer.padding,
                                   dilation_rate=layer.dilation_rate, data_format=layer.data_format)
        elif self.trimmed:
            y = ops.conv(x, self.kernels[0], strides=layer.strides, padding=layer.padding,
                         dilation_rate=self.dilation, data_format=layer.data_format)
        else:
            y = layer.convolution_op(x, self.kernels[0])
        if self.bias is not None:
            y = ops.add(y, self.bias)
        return y if layer.activation is None else layer.activation(y)


class _Scale:
    """An unfolded BatchNormalization at inference: `x * scale + shift`."""

    def __init__(self, bn, rank):
        scale, shift = _bn_scale_shift(bn)
        shape = [1] * rank
        shape[bn.axis] = -1
        self.scale = ops.convert_to_tensor(scale.astype("float32").reshape(shape))
        self.shift = ops.convert_to_tensor(shift.astype("float32").reshape(shape))

    def __call__(self, x, **kwargs):
        return ops.add(ops.multiply(x, self.scale), self.shift)


def _identity(x, *args, **kwargs):
    return x


def _shifted_stack(matrix, kernel_size):
    """`[M shifted by dy for dy in taps]` side by side: row i of block dy is row
    `i + dy - k // 2` of `matrix` (zeros outside, the conv's "same" padding)."""
    out_size, in_size = matrix.shape
    stack = np.zeros((out_size, kernel_size * in_size))
    for dy in range(kernel_size):
        shift = dy - kernel_size // 2
        rows = np.arange(max(0, -shift), min(out_size, out_size - shift))
        stack[rows, dy * in_size:(dy + 1) * in_size] = matrix[rows + shift]
    return stack.astype("float32")


class _ConvOfConcat:
    """`Conv2D(concat(parts))` (stride 1, "same", BN folded) computed part by
    part, with the parts that are bilinear upsamplings taken before the resize.

    The conv is linear in its input and the resize is a matrix on each axis
    (`interpolation_matrix`), so for an upsampled part `U(a)`:
    `conv(U(a)) = sum_(dy, dx) R_dy U_h (a W_(dy, dx)) U_w^T C_dx^T`,
    with `R_dy`, `C_dx` the row/column shifts of the tap. Mixing channels at
    the source's size and then interpolating `k` row/column shifts costs
    about `(h w) / (H W)` of the conv on the upsampled map: DeepLabV3+'s
    decoder conv on the 4x upsampled ASPP features, 0.6 + 0.7 GMAC instead
    of 9.7 at 512x512; and the ASPP projection of the image-pooling branch,
    one vector instead of a broadcast map.
    """

    def __init__(self, layer, bn, parts):
        self.layer = layer
        (kernel,), self.bias = _affine_weights(layer, bn)
        k, filters = kernel.shape[0], kernel.shape[-1]
        self.parts = []
        start = 0
        for channels, resize in parts:
            weights = kernel[:, :, start:start + channels, :]
            start += channels
            if resize is None:
                self.parts.append((ops.convert_to_tensor(weights), None))
                continue
            (h, w), (height, width), align_corners = resize
            rows = _shifted_stack(interpolation_matrix(h, height, align_corners), k)
            cols = _shifted_stack(interpolation_matrix(w, width, align_corners), k)
            mixing = weights.transpose(2, 0, 1, 3).reshape(channels, k * k * filters)
            rows, cols = ops.convert_to_tensor(rows), ops.convert_to_tensor(cols)
            self.parts.append((ops.convert_to_tensor(mixing), (rows, cols, h, w, k, filters)))
        self.bias = None if self.bias is None else ops.convert_to_tensor(self.bias)

    def __call__(self, *parts):
        total = self.bias
        for x, (weights, resize) in zip(parts, self.parts):
            if resize is None:
                y = ops.conv(x, weights, padding="same")
            else:
                rows, cols, h, w, k, filters = resize
                height = rows.shape[0]
                y = ops.reshape(ops.matmul(x, weights), (-1, h, w, k, k, filters))
                y = ops.reshape(ops.transpose(y, (0, 3, 1, 2, 4, 5)), (-1, k * h, w * k * filters))
                y = ops.reshape(ops.matmul(rows, y), (-1, height, w, k, filters))
                y = ops.reshape(ops.transpose(y, (0, 1, 3, 2, 4)), (-1, height, k * w, filters))
                y = ops.matmul(cols, y)
            total = y if total is None else ops.add(total, y)
        activation = self.layer.activation
        return total if activation is None else activation(total)


def _upsampled_concat_convs(model, uses):
    """`{id(conv): (conv, part tensors, part specs, skipped layers)}` for each
    Conv2D (stride 1, odd square kernel, "same", one group) whose input is a
    Concatenate used only by it, with at least one part a BilinearResize
    upsampling of static size used only by the Concatenate."""
    found = {}
    for layer in model.layers:
        if not (
            isinstance(layer, layers.Conv2D) and _is_affine(layer) and len(internals.inbound_nodes(layer)) == 1
            and layer.groups == 1 and tuple(layer.strides) == (1, 1) and tuple(layer.dilation_rate) == (1, 1)
            and layer.kernel_size[0] == layer.kernel_size[1] and layer.kernel_size[0] % 2 == 1
            and (layer.padding == "same" or layer.kernel_size[0] == 1)
        ):
            continue
        (tensor,) = internals.inbound_nodes(layer)[0].input_tensors
        concat = internals.producer(tensor)
        if not (
            isinstance(concat, layers.Concatenate) and concat.axis in (-1, 3)
            and len(internals.inbound_nodes(concat)) == 1 and uses.get(id(tensor)) == 1
        ):
            continue
        tensors, specs, skipped = [], [], [concat]
        for part in internals.inbound_nodes(concat)[0].input_tensors:
            resize = internals.producer(part)
            if isinstance(resize, BilinearResize) and len(internals.inbound_nodes(resize)) == 1 and uses.get(id(part)) == 1:
                source = internals.inbound_nodes(resize)[0].input_tensors[0]
                (h, w), (height, width) = source.shape[1:3], part.shape[1:3]
                if None not in (h, w, height, width) and h * w < height * width:
                    tensors.append(source)
                    specs.append((part.shape[-1], ((h, w), (height, width), resize.align_corners)))
                    skipped.append(resize)
                    continue
            tensors.append(part)
            specs.append((part.shape[-1], None))
        if len(skipped) > 1:
            found[id(layer)] = (layer, tensors, specs, skipped)
    return found


def _gather(ids):
    return lambda values: ([values[i] for i in ids], {})


class _Forward:
    """The forward pass of a Functional model at inference, BatchNorm folded.

    Walks the model's nodes once to make a plan: folded conv/Dense layers
    and unfolded BatchNormalizations become constant-weight computations,
    dropout and noise layers disappear, nested Functional models get their
    own plan, and every other layer is called as it is (layers without
    weights, which keep no state, and any layer this module does not know).
    Calling the plan on tensors never adds nodes to the model's layers.
    """

    def __init__(self, model, dilated=True):
        pairs = _fold_pairs(model)
        folded_bns = {id(bn) for bn, _ in pairs}
        bn_of = {id(layer): bn for bn, layer in pairs}
        self.folded = [(layer.name, bn.name) for bn, layer in pairs]
        self.inputs = [id(x) for x in model.inputs]
        self.outputs = [id(x) for x in model.outputs]
        self.steps = []
        self.opaque = []  # layers called as they are that hold weights
        rewritten = _upsampled_concat_convs(model, _consumers(model))
        skipped = {id(layer) for *_, removed in rewritten.values() for layer in removed}
        self.rewritten = [layer.name for layer, *_ in rewritten.values()]
        self.trimmed = []  # dilated convs without the taps that read only padding (`_Affine`)
        self.native_dilated = []  # dilated convs on TensorFlow's native dilated kernels
        for depth in sorted(internals.nodes_by_depth(model), reverse=True):
            for node in internals.nodes_by_depth(model)[depth]:
                layer = node.operation
                if layer is None or node.is_input or id(layer) in skipped:
                    continue
                if id(layer) in rewritten:
                    _, tensors, specs, _ = rewritten[id(layer)]
                    fn = _ConvOfConcat(layer, bn_of.get(id(layer)), specs)
                    self.steps.append((layer.name, _gather([id(t) for t in tensors]), fn, node.outputs))
                    continue
                if id(layer) in folded_bns or isinstance(layer, _IDENTITY_AT_INFERENCE):
                    fn = _identity
                elif _is_affine(layer):
                    fn = _Affine(layer, bn_of.get(id(layer)), tuple(node.input_tensors[0].shape), dilated)
                    self.trimmed += [layer.name] if fn.trimmed else []
                    self.native_dilated += [layer.name] if fn.native else []
                elif isinstance(layer, layers.BatchNormalization) and layer.axis in range(-1, 4):
                    fn = _Scale(layer, len(node.input_tensors[0].shape))
                elif _is_functional(layer):
                    fn = _Forward(layer, dilated)
                    self.opaque += fn.opaque
                    self.folded += fn.folded
                    self.rewritten += fn.rewritten
                    self.trimmed += fn.trimmed
                    self.native_dilated += fn.native_dilated
                else:
                    fn = layer
                    if getattr(layer, "weights", None):  # ops such as keras.ops.cast have none
                        self.opaque.append(layer)
                self.steps.append((layer.name, node.arguments.fill_in, fn, node.outputs))

    def __call__(self, inputs, **kwargs):
        values = dict(zip(self.inputs, keras.tree.flatten(inputs)))
        for name, arguments, fn, node_outputs in self.steps:
            args, kwargs = arguments(values)
            with keras.name_scope(name):  # op names in graphs and profiles
                outputs = fn(*args, **kwargs)
            for x, y in zip(node_outputs, keras.tree.flatten(outputs)):
                values[id(x)] = y
        outputs = [values[i] for i in self.outputs]
        return outputs[0] if len(outputs) == 1 else outputs


class InferenceGraph(keras.layers.Layer):
    """A Functional model's forward pass at inference with BatchNorm folded,
    as one layer (see `fold_batchnorm`). Not serialisable: rebuild it."""

    def __init__(self, model, dilated=True, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{model.name}_folded"), **kwargs)
        self._forward = _Forward(model, dilated)
        self._output_shapes = [tuple(x.shape) for x in model.outputs]
        # (layer name, BatchNormalization name) of every folded pair
        self.folded = list(self._forward.folded)
        # Conv2D layers computed before the upsampling of their input (`_ConvOfConcat`)
        self.rewritten = list(self._forward.rewritten)
        # dilated Conv2D/DepthwiseConv2D layers without the taps that read only
        # padding, and those run on TensorFlow's native dilated kernels (`_Affine`)
        self.trimmed = list(self._forward.trimmed)
        self.native_dilated = list(self._forward.native_dilated)
        # tracked, so that exports save the variables of layers run unfolded
        self.opaque_layers = list(self._forward.opaque)
        self.built = True

    def call(self, inputs):
        return self._forward(inputs)

    def compute_output_shape(self, input_shape):
        shapes = self._output_shapes
        return shapes[0] if len(shapes) == 1 else shapes


def fold_batchnorm(model, dilated=True):
    """A model for inference computing `model`'s output with BatchNorm folded.

    Every BatchNormalization whose input is the output of a Conv1D/2D/3D,
    DepthwiseConv1D/2D, SeparableConv1D/2D or Dense layer (channels last,
    without activation, not shared, its output used only by that
    BatchNormalization) is merged into that layer's kernel and bias; the
    other BatchNormalizations become one multiply-add; dropout and noise
    layers, identities at inference, are removed. A Conv2D (stride 1,
    "same") whose input concatenates bilinear upsamplings (`BilinearResize`,
    static sizes) mixes their channels before interpolating them: the same
    linear map, a fraction of the multiply-adds (DeepLabV3+'s decoder and
    ASPP projection). A dilated stride-1 "same" Conv2D or DepthwiseConv2D
    drops the kernel taps that read only padding on its (static) map size,
    and under TensorFlow runs the native dilated kernel instead of
    SpaceToBatch -> conv -> BatchToSpace (DeepLab's atrous convs on small
    maps: the ASPP at rates 12 and 18 on 8x8 features is a 1x1 conv).
    Conv/Dense weights and BatchNorm statistics are read now and held as
    constants: later changes to `model` do not reach the result, and
    `model` is not modified.

    Args:
        model: a Functional (or built Sequential) Keras model.
        dilated: whether to rewrite dilated convolutions (False: as Keras
            computes them; bench/dilated.py measures the difference).

    Returns:
        A `keras.Model` with inputs like `model`'s and the same outputs at
        inference (up to float rounding). For inference and export only.
    """
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    if not _is_functional(model):
        raise ValueError(f"fold_batchnorm needs a Functional model, got {type(model).__name__}")
    inputs = [keras.Input(batch_shape=x.shape, dtype=x.dtype, name=x.name) for x in model.inputs]
    outputs = InferenceGraph(model, dilated)(inputs[0] if len(inputs) == 1 else inputs)
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs, name=model.name)
