"""Fast inference: BatchNorm folded away, the forward pass compiled once.

`model.predict(x)` on one image spends most of its time outside the network
(data adapters, callbacks); eager `model(x)` runs op by op; and under
`tf.function` every inference-mode BatchNormalization is still a chain of
elementwise ops over the whole feature map. `Predictor` runs
`fold_batchnorm(model)`, the model's inference graph in which each
BatchNormalization that directly follows a convolution or Dense layer is
merged into that layer's kernel and bias (plus other exact rewrites, see
`fold_batchnorm`), and runs it on the fastest exact CPU runtime it has:
a TFLite flatbuffer under XNNPACK (`keras_lightnets.runtime.tflite`), or a
`tf.function` compiled once (spatial size fixed, batch size free). The
SavedModel and TFLite exports use the same graph (bench/run.py measures
the difference).
"""

import collections

import keras
import numpy as np
from keras import layers, ops

from keras_lightnets import keras_internals as internals
from keras_lightnets.layers.resize import BilinearResize, interpolation_matrix
from keras_lightnets.runtime import tflite

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
# Input sizes a Predictor keeps a TFLite flatbuffer for (models with free input sides).
_INPUT_SIZES_KEPT = 4


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


class _Affine:
    """A conv/Dense layer's computation with constant (folded) weights."""

    def __init__(self, layer, bn=None):
        self.layer = layer
        self.kernels, self.bias = _affine_weights(layer, bn)

    def __call__(self, x, **kwargs):  # kwargs: `mask`, `training`, unused at inference
        layer = self.layer
        if isinstance(layer, layers.Dense):
            y = ops.matmul(x, self.kernels[0])
        elif isinstance(layer, _DEPTHWISE):
            y = ops.depthwise_conv(x, self.kernels[0], strides=layer.strides, padding=layer.padding,
                                   dilation_rate=layer.dilation_rate, data_format=layer.data_format)
        elif isinstance(layer, _SEPARABLE):
            y = ops.separable_conv(x, *self.kernels, strides=layer.strides, padding=layer.padding,
                                   dilation_rate=layer.dilation_rate, data_format=layer.data_format)
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
        self.scale = scale.astype("float32").reshape(shape)
        self.shift = shift.astype("float32").reshape(shape)

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
                self.parts.append((weights, None))
                continue
            (h, w), (height, width), align_corners = resize
            rows = _shifted_stack(interpolation_matrix(h, height, align_corners), k)
            cols = _shifted_stack(interpolation_matrix(w, width, align_corners), k)
            mixing = weights.transpose(2, 0, 1, 3).reshape(channels, k * k * filters)
            self.parts.append((mixing, (rows, cols, h, w, k, filters)))

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

    def __init__(self, model):
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
                    fn = _Affine(layer, bn_of.get(id(layer)))
                elif isinstance(layer, layers.BatchNormalization) and layer.axis in range(-1, 4):
                    fn = _Scale(layer, len(node.input_tensors[0].shape))
                elif _is_functional(layer):
                    fn = _Forward(layer)
                    self.opaque += fn.opaque
                    self.folded += fn.folded
                    self.rewritten += fn.rewritten
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

    def __init__(self, model, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{model.name}_folded"), **kwargs)
        self._forward = _Forward(model)
        self._output_shapes = [tuple(x.shape) for x in model.outputs]
        # (layer name, BatchNormalization name) of every folded pair
        self.folded = list(self._forward.folded)
        # Conv2D layers computed before the upsampling of their input (`_ConvOfConcat`)
        self.rewritten = list(self._forward.rewritten)
        # tracked, so that exports save the variables of layers run unfolded
        self.opaque_layers = list(self._forward.opaque)
        self.built = True

    def call(self, inputs):
        return self._forward(inputs)

    def compute_output_shape(self, input_shape):
        shapes = self._output_shapes
        return shapes[0] if len(shapes) == 1 else shapes


def fold_batchnorm(model):
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
    ASPP projection). Conv/Dense weights and BatchNorm statistics are read
    now and held as constants: later changes to `model` do not reach the
    result, and `model` is not modified.

    Args:
        model: a Functional (or built Sequential) Keras model.

    Returns:
        A `keras.Model` with inputs like `model`'s and the same outputs at
        inference (up to float rounding). For inference and export only.
    """
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    if not _is_functional(model):
        raise ValueError(f"fold_batchnorm needs a Functional model, got {type(model).__name__}")
    inputs = [keras.Input(batch_shape=x.shape, dtype=x.dtype, name=x.name) for x in model.inputs]
    outputs = InferenceGraph(model)(inputs[0] if len(inputs) == 1 else inputs)
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs, name=model.name)


RUNTIMES = ("auto", "tflite", "tf")


def _static_input_shape(model):
    """The input shape without the batch axis if `model` has one input of
    fixed size, else None."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        return None
    shape = tuple(inputs[0].shape[1:])
    return shape if None not in shape else None


def _tensorflow_sees_a_gpu():
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


class Predictor:
    """Calls `model` in inference mode on the fastest exact CPU runtime.

    The model is folded (`fold_batchnorm`) when the `Predictor` is built:
    its weights at that moment are the ones used; `model` itself is not
    changed. Models that are not Functional run unfolded.

    Runtimes: `"tflite"` converts the folded graph to a TFLite flatbuffer in
    memory (`keras_lightnets.runtime.tflite`) and runs it with XNNPACK on every
    usable core, one interpreter per batch size (the last few kept); `"tf"`
    runs it as a `tf.function` (under JAX or torch, the backend's
    `predict_on_batch`). `"auto"` picks `"tflite"` when the backend is
    TensorFlow, TensorFlow sees no GPU, the model has one input and one
    output, its input size is fixed except the batch axis and the
    conversion gives builtin ops only; otherwise `"tf"`. `runtime="tflite"`
    on a model with free input sides converts once per input size.

    Args:
        model: a Keras model.
        fold: whether to fold BatchNormalization (default True).
        runtime: `"auto"` (default), `"tflite"` or `"tf"`.
        threads: TFLite threads (default: `TF_NUM_INTRAOP_THREADS` if set,
            else every usable core).

    Attributes:
        runtime: the runtime that runs, `"tflite"` or `"tf"`.
        flatbuffer: the TFLite flatbuffer (bytes) of a fixed-size model
            run by TFLite, else None.

    Example:
        predict = Predictor(model)
        probabilities = predict(batch)  # numpy in, numpy out
    """

    def __init__(self, model, fold=True, runtime="auto", threads=None):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.model = model
        foldable = isinstance(model, keras.Sequential) or _is_functional(model)
        self.inference_model = fold_batchnorm(model) if fold and foldable else model
        self.threads = threads
        self.flatbuffer = None
        self._function = None
        self._runners = collections.OrderedDict()  # input shape without the batch axis -> tflite.Runner
        self.runtime = self._pick(runtime)

    def _pick(self, runtime):
        """The runtime to use; converts a fixed-size model for TFLite."""
        if runtime == "tf":
            return "tf"
        model = self.inference_model
        tensorflow = keras.backend.backend() == "tensorflow"
        single = len(getattr(model, "inputs", None) or ()) == 1 and len(getattr(model, "outputs", None) or ()) == 1
        if runtime == "tflite" and not (tensorflow and single):
            raise ValueError(
                "runtime='tflite' needs the TensorFlow backend and a model with one input and one output"
            )
        shape = _static_input_shape(model)
        if runtime == "auto" and not (tensorflow and single and shape is not None and not _tensorflow_sees_a_gpu()):
            return "tf"
        if shape is None:
            return "tflite"  # converted per input size on use
        try:
            self._runner(shape)
        except (tflite.ConversionError, ValueError, RuntimeError):  # not convertible, or not loadable by LiteRT
            if runtime == "tflite":
                raise
            return "tf"
        return "tflite"

    def _runner(self, shape):
        """The TFLite runner of input `shape` (no batch axis), converted on first use."""
        if shape not in self._runners:
            content = tflite.tflite_bytes(self.inference_model, input_shape=shape)
            self._runners[shape] = tflite.Runner(content, self.threads)
            if shape == _static_input_shape(self.inference_model):
                self.flatbuffer = content
            while len(self._runners) > _INPUT_SIZES_KEPT:
                self._runners.popitem(last=False)
        self._runners.move_to_end(shape)
        return self._runners[shape]

    def _compile(self):
        model = self.inference_model
        if keras.backend.backend() != "tensorflow":
            return model.predict_on_batch
        import tensorflow as tf

        inputs = getattr(model, "inputs", None)
        if not inputs or len(inputs) != 1:  # subclassed models: traced per input signature seen
            return tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        spec = tf.TensorSpec((None,) + tuple(inputs[0].shape[1:]), inputs[0].dtype)
        return tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def __call__(self, batch):
        inputs = getattr(self.inference_model, "inputs", None)
        dtype = inputs[0].dtype if inputs else getattr(self.inference_model, "input_dtype", None)
        batch = np.asarray(batch, dtype=dtype or "float32")
        if self.runtime == "tflite":
            shape = _static_input_shape(self.inference_model) or batch.shape[1:]
            return self._runner(shape)(batch)
        if self._function is None:
            self._function = self._compile()
        return keras.ops.convert_to_numpy(self._function(batch))
