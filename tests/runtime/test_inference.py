"""The folded inference graph (`fold_batchnorm`, `Predictor` on TFLite and on
tf.function) against the Keras model.

The reference is the unfolded Keras model in inference mode, with random
weights and random BatchNorm statistics and affine parameters (variance in
[0.5, 2]): a fold that forgets the mean, the epsilon or the depthwise
layout changes the outputs by orders of magnitude more than the tolerance.
"""

import keras
import numpy as np
import pytest
from keras import layers

import keras_lightnets as kl
from keras_lightnets.runtime.folding import InferenceGraph, fold_batchnorm
from keras_lightnets.runtime.predictor import Predictor

# Float32 rounding of a folded kernel vs. BN applied after the conv, relative
# to the outputs' scale (random weights give logits of order 1-10).
RTOL = 1e-5


def randomize(model, seed=0):
    """Random weights for every layer; BN: gamma in [0.5, 1.5], beta and
    mean ~ N(0, 0.2), variance in [0.5, 2]."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
        elif not isinstance(layer, keras.Model):
            for variable in layer.weights:
                shape = tuple(variable.shape)
                if len(shape) == 1:
                    variable.assign(rng.normal(0, 0.2, shape).astype("float32"))
                    continue
                fan_in = int(np.prod(shape[:-1]))
                if isinstance(layer, layers.DepthwiseConv2D):
                    fan_in = shape[0] * shape[1]
                variable.assign(rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype("float32"))
    return model


def snapshot(model):
    return (
        [w.copy() for w in model.get_weights()],
        [(layer.name, type(layer).__name__, len(layer._inbound_nodes)) for layer in model.layers],
    )


def assert_folded_matches(model, size, runtime="tflite", batches=(1, 3, 1), seed=0, every_bn=True, rewritten=()):
    """Folds `model` (randomised) into one Predictor on `runtime`, checks its
    outputs for each batch size in turn and that `model` is untouched;
    returns the largest max |Δ|."""
    randomize(model, seed)
    before = snapshot(model)
    predictor = Predictor(model, runtime=runtime)
    assert predictor.runtime == runtime
    folded_model = predictor.inference_model
    (graph,) = [layer for layer in folded_model.layers if isinstance(layer, InferenceGraph)]
    n_bn = sum(isinstance(layer, layers.BatchNormalization) for layer in model._flatten_layers())
    if every_bn:
        assert n_bn > 0 and len(graph.folded) == n_bn
    assert not any(isinstance(layer, layers.BatchNormalization) for layer in folded_model.layers)
    assert sorted(graph.rewritten) == sorted(rewritten)
    rng = np.random.default_rng(seed)
    diffs = []
    for batch in batches:
        x = rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32")
        expected = keras.ops.convert_to_numpy(model(x, training=False))
        got = predictor(x)
        assert got.shape == expected.shape
        scale = max(1.0, float(np.abs(expected).max()))
        diffs.append(float(np.abs(got - expected).max()))
        assert diffs[-1] <= RTOL * scale, (batch, diffs[-1], scale)
    after = snapshot(model)
    assert after[1] == before[1]
    assert all(np.array_equal(a, b) for a, b in zip(after[0], before[0]))
    return max(diffs)


# (name, builder, input size); small widths and inputs keep this fast while
# every block type is present.
FAMILIES = [
    ("mobilenet_dm2", lambda s: kl.MobileNet((s, s, 3), alpha=0.25, depth_multiplier=2, classifier_activation=None), 64),
    ("mobilenet_torch", lambda s: kl.MobileNet((s, s, 3), alpha=0.25, style="torch", classifier_activation=None), 64),
    ("mobilenet_v2", lambda s: kl.MobileNetV2((s, s, 3), alpha=0.35, classifier_activation=None), 64),
    ("efficientnet_lite0", lambda s: kl.EfficientNetLite0((s, s, 3), classifier_activation=None), 64),
    ("shufflenet_v1_g3", lambda s: kl.ShuffleNetV1(groups=3, scale=0.5, input_shape=(s, s, 3), classifier_activation=None), 64),
    ("shufflenet_v2", lambda s: kl.ShuffleNetV2(0.5, input_shape=(s, s, 3), classifier_activation=None), 64),
    ("deeplab_mnv2_vainf", lambda s: kl.DeepLabV3Plus((s, s, 3), classes=5, alpha=0.35), 64),
    ("deeplab_mnv2_jfzhang95_separable", lambda s: kl.DeepLabV3Plus(
        (s, s, 3), classes=5, alpha=0.35, head="jfzhang95", output_stride=8, separable=True), 64),
]
# No Xception: its 40 M parameters cost 4.7 GB in one process here, and its
# layer types and DeepLab head are folded in the MobileNetV2 DeepLabs above.

# Predictor's runtimes, each checked against the unfolded Keras model.
RUNTIMES = ("tflite", "tf")


# DeepLabV3+ convs computed before the resize of their upsampled input
# (the ASPP projection of the pooled branch, the decoder's 3x3 conv)
REWRITTEN = {
    "deeplab_mnv2_vainf": ("aspp_project", "decoder_conv1"),
    "deeplab_mnv2_jfzhang95_separable": ("aspp_project",),
}


# The folded graph is the same on both runtimes: every family runs on TFLite
# (the default on CPU), and on "tf" the layer kinds of the rest (grouped and
# depthwise convs, DeepLab's resizes and rewritten convs) are checked.
TF_RUNTIME_FAMILIES = ("mobilenet_v2", "shufflenet_v1_g3", "deeplab_mnv2_vainf", "deeplab_mnv2_jfzhang95_separable")


@pytest.mark.parametrize("name,builder,size,runtime", [
    pytest.param(*family, runtime, id=f"{family[0]}-{runtime}")
    for family in FAMILIES for runtime in RUNTIMES
    if runtime == "tflite" or family[0] in TF_RUNTIME_FAMILIES
])
def test_family_folded_matches_keras(name, builder, size, runtime):
    diff = assert_folded_matches(builder(size), size, runtime, rewritten=REWRITTEN.get(name, ()))
    print(f"{name} on {runtime}: max |Δ| {diff:.1e}")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_squeezenet_without_batchnorm_runs_unchanged(runtime):
    model = kl.SqueezeNet("1_1", input_shape=(64, 64, 3), classifier_activation=None)
    assert_folded_matches(model, 64, runtime, every_bn=False)


@pytest.mark.slow
@pytest.mark.parametrize("head,separable", [("jfzhang95", False)])  # separable heads: the MobileNetV2 DeepLabs
def test_deeplab_resnet_folded_matches_keras(head, separable):
    # on tf only: converting 40 M parameters to TFLite holds GBs, and the
    # TFLite runtime runs the same folded graph in the MobileNetV2 DeepLabs
    model = kl.DeepLabV3Plus((48, 48, 3), classes=5, backbone="resnet50", head=head, separable=separable)
    rewritten = ("aspp_project",) if separable else ("aspp_project", "decoder_conv1")
    diff = assert_folded_matches(model, 48, "tf", batches=(1,), rewritten=rewritten)
    print(f"resnet50 {head}: max |Δ| {diff:.1e}")


def assert_predictor_matches(model, batches, predictor=None):
    """`Predictor(model)` (or `predictor`) against `model` on each batch, in turn."""
    predictor = predictor or Predictor(model)
    for x in batches:
        expected = keras.ops.convert_to_numpy(model(x, training=False))
        got = predictor(x)
        assert got.shape == expected.shape
        scale = max(1.0, float(np.abs(expected).max()))
        assert np.abs(got - expected).max() <= RTOL * scale, (x.shape, np.abs(got - expected).max(), scale)
    return predictor


def test_auto_runs_static_classifiers_on_tflite_and_free_size_deeplab_on_tf():
    classifier = randomize(kl.MobileNetV2((64, 64, 3), alpha=0.35, classifier_activation=None), seed=11)
    predictor = Predictor(classifier)
    assert predictor.runtime == "tflite" and predictor.flatbuffer[4:8] == b"TFL3"
    assert Predictor(classifier, runtime="tf").flatbuffer is None

    deeplab = randomize(kl.DeepLabV3Plus((None, None, 3), classes=5, alpha=0.35), seed=12)
    predictor = Predictor(deeplab)
    assert predictor.runtime == "tf" and predictor.flatbuffer is None
    rng = np.random.default_rng(12)
    images = [rng.uniform(-1, 1, shape).astype("float32") for shape in [(1, 64, 48, 3), (3, 64, 48, 3), (2, 33, 65, 3)]]
    assert_predictor_matches(deeplab, images, predictor)
    # asked for, TFLite converts once per input size
    predictor = Predictor(deeplab, runtime="tflite")
    assert predictor.runtime == "tflite"
    assert_predictor_matches(deeplab, images, predictor)
    assert sorted(predictor._runners) == [(33, 65, 3), (64, 48, 3)] and predictor.flatbuffer is None


def test_sequential_uint8_and_subclassed_models():
    """A Sequential model (folded), a uint8-input model (the export wrapper)
    on TFLite, and a subclassed model (unfolded, on tf)."""
    from keras_lightnets.runtime.export import with_uint8_input

    sequential = keras.Sequential([
        keras.Input((16, 16, 3)),
        layers.Conv2D(8, 3, use_bias=False),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.GlobalAveragePooling2D(),
        layers.Dense(5),
    ])
    randomize(sequential, seed=13)
    rng = np.random.default_rng(13)
    images = [rng.uniform(-1, 1, (n, 16, 16, 3)).astype("float32") for n in (1, 3)]
    assert assert_predictor_matches(sequential, images).runtime == "tflite"

    classifier = randomize(kl.MobileNetV2((64, 64, 3), alpha=0.35, classifier_activation=None), seed=14)
    pixels = with_uint8_input(classifier, "torch")
    images = [rng.integers(0, 256, (n, 64, 64, 3)).astype("uint8") for n in (1, 3)]
    predictor = assert_predictor_matches(pixels, images)
    assert predictor.runtime == "tflite"

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = layers.Conv2D(4, 3)
            self.norm = layers.BatchNormalization()

        def call(self, x, training=False):
            return self.norm(self.conv(x), training=training)

    subclassed = Subclassed()
    subclassed(images[0][:, :16, :16].astype("float32"))
    randomize(subclassed, seed=15)
    predictor = assert_predictor_matches(subclassed, [x[:, :16, :16].astype("float32") for x in images])
    assert predictor.runtime == "tf"
    with pytest.raises(ValueError, match="one input and one output"):
        Predictor(subclassed, runtime="tflite")
    with pytest.raises(ValueError, match="runtime must be one of"):
        Predictor(sequential, runtime="onnx")


def test_auto_falls_back_to_tf_when_conversion_fails(monkeypatch):
    """A graph TFLite cannot take runs on tf under "auto"; asked for, it is an error."""
    from keras_lightnets.runtime import tflite

    def refuse(model, **kwargs):
        raise tflite.ConversionError("TFLite conversion failed: an op without a builtin")

    model = randomize(kl.MobileNetV2((64, 64, 3), alpha=0.35, classifier_activation=None), seed=16)
    monkeypatch.setattr(tflite, "tflite_bytes", refuse)
    x = np.random.default_rng(16).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    assert assert_predictor_matches(model, [x]).runtime == "tf"
    with pytest.raises(tflite.ConversionError):
        Predictor(model, runtime="tflite")


def test_depthwise_multiplier_and_grouped_conv_layouts():
    """Depth multiplier 2 (kernel (kh, kw, C, m): output channel c*m + j) and a
    grouped conv, each with a bias, folded with random BN statistics."""
    inputs = keras.Input((12, 12, 6))
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(inputs)
    x = layers.BatchNormalization(epsilon=1e-3, name="dw_bn")(x)
    x = layers.Conv2D(6, 1, groups=3, name="grouped")(x)
    x = layers.BatchNormalization(epsilon=1e-5, name="grouped_bn")(x)
    x = layers.SeparableConv2D(4, 3, depth_multiplier=2, use_bias=False, name="separable")(x)
    x = layers.BatchNormalization(center=False, name="separable_bn")(x)
    model = keras.Model(inputs, x)
    randomize(model, seed=3)
    x = np.random.default_rng(3).uniform(-1, 1, (2, 12, 12, 6)).astype("float32")
    folded = fold_batchnorm(model)
    assert len(folded.layers[-1].folded) == 3
    np.testing.assert_allclose(folded(x), model(x, training=False), atol=1e-5, rtol=0)


def test_only_direct_single_consumer_pairs_are_folded():
    """A BN after a padding, after an activation, or on a conv output that is
    also used elsewhere stays a BN (computed as a multiply-add); Dense → BN
    and dropout are handled; the outputs match in every case."""
    inputs = keras.Input((10, 10, 3))
    a = layers.Conv2D(4, 3, name="shared_conv")(inputs)
    a_bn = layers.BatchNormalization(name="shared_bn")(a)
    b = layers.ZeroPadding2D(1, name="pad")(layers.Conv2D(4, 3, name="padded_conv")(inputs))
    b_bn = layers.BatchNormalization(name="padded_bn")(b)
    c = layers.Conv2D(4, 3, activation="relu", name="relu_conv")(inputs)
    c_bn = layers.BatchNormalization(name="relu_bn")(c)
    d = layers.Conv2D(4, 3, padding="same", name="plain_conv")(inputs)
    d_bn = layers.BatchNormalization(name="plain_bn")(d)
    x = layers.Concatenate()([a_bn, a, layers.Cropping2D(1)(b_bn), c_bn, layers.Cropping2D(1)(d_bn)])
    x = layers.Dropout(0.5)(layers.GlobalAveragePooling2D()(x))
    x = layers.Dense(7, name="dense")(x)
    x = layers.BatchNormalization(name="dense_bn")(x)
    model = keras.Model(inputs, x)
    randomize(model, seed=5)
    x = np.random.default_rng(5).uniform(-1, 1, (3, 10, 10, 3)).astype("float32")
    folded = fold_batchnorm(model)
    assert sorted(folded.layers[-1].folded) == [("dense", "dense_bn"), ("plain_conv", "plain_bn")]
    np.testing.assert_allclose(folded(x), model(x, training=False), atol=1e-5, rtol=0)


def test_shared_layers_and_tensors_with_other_consumers_are_never_rewritten():
    """Folding a BatchNorm into a conv, or computing a conv before the
    upsampling of its input, changes what a layer computes or skips tensors:
    neither may touch a layer called twice, nor a tensor another layer also
    reads. Every branch of a graph full of those stays exact, and only the
    single-use pairs are rewritten."""
    from keras_lightnets.layers.resize import BilinearResize

    inputs = keras.Input((12, 12, 3))
    outputs = []
    # a conv called twice: one call feeds a BatchNorm, the other is used as it is
    twice = layers.Conv2D(4, 3, padding="same", name="called_twice")
    outputs.append(layers.BatchNormalization(name="after_one_call")(twice(inputs)))
    outputs.append(twice(layers.Conv2D(3, 1, name="before_second_call")(inputs)))
    # one BatchNorm called on two convs
    shared_bn = layers.BatchNormalization(name="shared_bn")
    outputs += [shared_bn(layers.Conv2D(4, 3, padding="same", name=f"into_shared_bn_{i}")(inputs)) for i in (1, 2)]
    # a conv whose output feeds a BatchNorm and a ReLU
    branching = layers.Conv2D(4, 3, padding="same", name="branching")(inputs)
    outputs += [layers.BatchNormalization(name="branching_bn")(branching), layers.ReLU()(branching)]
    # a conv whose output feeds a BatchNorm and is a model output
    also_output = layers.Conv2D(4, 3, padding="same", name="also_output")(inputs)
    outputs += [layers.BatchNormalization(name="also_output_bn")(also_output), also_output]
    # a BatchNorm over another axis than the channels
    rows = layers.Dense(4, name="rows_dense")(layers.Reshape((12, 36))(inputs))
    outputs.append(layers.BatchNormalization(axis=1, name="rows_bn")(rows))
    # convs over the concatenation of an upsampling and a map
    low = layers.Conv2D(4, 1, name="low")(layers.AveragePooling2D(4)(inputs))
    plain = layers.Conv2D(4, 1, name="plain")(inputs)

    def upsampled(name, align_corners=False):
        return BilinearResize(align_corners, name=name)([low, inputs])

    def mix(parts, name, conv=None, **options):
        conv = conv or layers.Conv2D(5, 3, name=name, **{"padding": "same", **options})
        return layers.BatchNormalization(name=f"{name}_bn")(conv(layers.Concatenate(name=f"{name}_concat")(parts)))

    outputs.append(mix([upsampled("up_own", align_corners=True), plain], "mix_rewritten"))
    outputs.append(mix([upsampled("up_strided"), plain], "mix_strided", strides=2))
    outputs.append(mix([upsampled("up_valid"), plain], "mix_valid", padding="valid"))
    shared_up = upsampled("up_also_added")  # read by the concat and by an Add
    outputs += [mix([shared_up, plain], "mix_of_shared_upsampling"), layers.Add()([shared_up, plain])]
    concat = layers.Concatenate(name="concat_also_pooled")([upsampled("up_in_pooled_concat"), plain])
    outputs += [layers.Conv2D(5, 3, padding="same", name="conv_of_pooled_concat")(concat), layers.GlobalAveragePooling2D()(concat)]
    mixer = layers.Conv2D(5, 3, padding="same", name="mixer_called_twice")
    outputs += [mix([upsampled("up_mixed_twice_a"), plain], "mix_twice_a", mixer), mixer(layers.Concatenate()([plain, plain]))]

    model = keras.Model(inputs, outputs)
    randomize(model, seed=11)
    x = np.random.default_rng(11).uniform(-1, 1, (2, 12, 12, 3)).astype("float32")
    folded = fold_batchnorm(model)
    graph = folded.layers[-1]
    assert sorted(graph.folded) == [(name, f"{name}_bn") for name in (
        "mix_of_shared_upsampling", "mix_rewritten", "mix_strided", "mix_valid")]
    assert graph.rewritten == ["mix_rewritten"]
    for got, expected in zip(folded(x), model(x, training=False)):
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_nested_model_and_custom_layers():
    """A model inside a model (as `export --input-dtype uint8` wraps it) is folded
    too; custom layers (ChannelShuffle, NegInfPadding2D, BilinearResize) run as
    they are."""
    inner = kl.ShuffleNetV2(0.5, input_shape=(64, 64, 3), classifier_activation=None)
    randomize(inner, seed=7)
    inputs = keras.Input((64, 64, 3))
    outer = keras.Model(inputs, inner(layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)))
    x = np.random.default_rng(7).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    folded = fold_batchnorm(outer)
    n_bn = sum(isinstance(layer, layers.BatchNormalization) for layer in inner.layers)
    assert len(folded.layers[-1].folded) == n_bn
    np.testing.assert_allclose(folded(x), outer(x, training=False), atol=1e-5 * 10, rtol=1e-5)


def test_predictor_is_a_snapshot_of_the_weights():
    """Weights are read when the Predictor is built; later changes to the
    model do not reach it (and the Predictor never writes to the model)."""
    model = randomize(kl.MobileNetV2((64, 64, 3), alpha=0.35, classifier_activation=None), seed=9)
    x = np.random.default_rng(9).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    predictor = Predictor(model)
    first = predictor(x)
    randomize(model, seed=10)
    np.testing.assert_array_equal(predictor(x), first)
    assert np.abs(Predictor(model)(x) - first).max() > 1e-2


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("source,target", [((1, 1), (17, 9)), ((8, 8), (32, 32)), ((7, 5), (16, 13)), ((16, 12), (5, 7))])
def test_bilinear_resize_matches_pytorch(source, target, align_corners):
    """`BilinearResize`'s fast paths (native half-pixel resize, broadcast of one
    pixel) and its gathers, against `F.interpolate` on static shapes."""
    import torch

    from keras_lightnets.layers.resize import BilinearResize

    x = np.random.default_rng(0).normal(size=(2, *source, 3)).astype("float32")
    image = keras.Input((*target, 1))
    features = keras.Input((*source, 3))
    model = keras.Model([features, image], BilinearResize(align_corners)([features, image]))
    got = model([x, np.zeros((2, *target, 1), "float32")])
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(x).permute(0, 3, 1, 2), size=target, mode="bilinear", align_corners=align_corners
    ).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, atol=1e-6, rtol=0)
