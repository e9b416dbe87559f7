"""The folded inference graph (`fold_batchnorm`, `Predictor`) against the Keras model.

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
from keras_lightnets.inference import InferenceGraph, Predictor, fold_batchnorm

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


def assert_folded_matches(model, size, batch=2, seed=0, every_bn=True, rewritten=()):
    """Folds `model` (randomised), checks the outputs and that `model` is untouched;
    returns max |Δ|."""
    randomize(model, seed)
    before = snapshot(model)
    x = np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    predictor = Predictor(model)
    got = predictor(x)
    folded_model = predictor.inference_model
    (graph,) = [layer for layer in folded_model.layers if isinstance(layer, InferenceGraph)]
    n_bn = sum(isinstance(layer, layers.BatchNormalization) for layer in model._flatten_layers())
    if every_bn:
        assert n_bn > 0 and len(graph.folded) == n_bn
    assert not any(isinstance(layer, layers.BatchNormalization) for layer in folded_model.layers)
    assert sorted(graph.rewritten) == sorted(rewritten)
    assert got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    diff = float(np.abs(got - expected).max())
    assert diff <= RTOL * scale, (diff, scale)
    after = snapshot(model)
    assert after[1] == before[1]
    assert all(np.array_equal(a, b) for a, b in zip(after[0], before[0]))
    return diff


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


# DeepLabV3+ convs computed before the resize of their upsampled input
# (the ASPP projection of the pooled branch, the decoder's 3x3 conv)
REWRITTEN = {
    "deeplab_mnv2_vainf": ("aspp_project", "decoder_conv1"),
    "deeplab_mnv2_jfzhang95_separable": ("aspp_project",),
}


@pytest.mark.parametrize("name,builder,size", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_family_folded_matches_keras(name, builder, size):
    diff = assert_folded_matches(builder(size), size, rewritten=REWRITTEN.get(name, ()))
    print(f"{name}: max |Δ| {diff:.1e}")


def test_squeezenet_without_batchnorm_runs_unchanged():
    model = kl.SqueezeNet("1_1", input_shape=(64, 64, 3), classifier_activation=None)
    assert_folded_matches(model, 64, every_bn=False)


@pytest.mark.slow
@pytest.mark.parametrize("head,separable", [("vainf", True), ("jfzhang95", False)])
def test_deeplab_resnet_folded_matches_keras(head, separable):
    model = kl.DeepLabV3Plus((48, 48, 3), classes=5, backbone="resnet50", head=head, separable=separable)
    rewritten = ("aspp_project",) if separable else ("aspp_project", "decoder_conv1")
    diff = assert_folded_matches(model, 48, batch=1, rewritten=rewritten)
    print(f"resnet50 {head}: max |Δ| {diff:.1e}")


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

    from keras_lightnets.resize import BilinearResize

    x = np.random.default_rng(0).normal(size=(2, *source, 3)).astype("float32")
    image = keras.Input((*target, 1))
    features = keras.Input((*source, 3))
    model = keras.Model([features, image], BilinearResize(align_corners)([features, image]))
    got = model([x, np.zeros((2, *target, 1), "float32")])
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(x).permute(0, 3, 1, 2), size=target, mode="bilinear", align_corners=align_corners
    ).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, atol=1e-6, rtol=0)
