"""Dilated convolutions in the inference graph (`fold_batchnorm`): taps that
read only padding dropped, TensorFlow's native dilated kernels, same outputs.

The references are the Keras layers themselves (Keras' convolution ops in
inference mode) with random weights and BatchNorm statistics."""

import keras
import numpy as np
import pytest
from keras import layers

import keras_lightnets as kl
from keras_lightnets.runtime import tflite
from keras_lightnets.runtime.folding import InferenceGraph, fold_batchnorm
from keras_lightnets.runtime.predictor import Predictor
from tests.helpers import randomize_keras_weights


def dilated_model(height, width, seed=None):
    """Dilated "same" convs of every kind the rewrite knows, each followed by BN."""
    inputs = keras.Input((height, width, 4))
    x = layers.Conv2D(6, 3, dilation_rate=6, padding="same", name="conv_d6")(inputs)
    x = layers.BatchNormalization(name="conv_d6_bn")(x)
    x = layers.DepthwiseConv2D(3, dilation_rate=(2, 8), padding="same", depth_multiplier=2, name="dw_d2x8")(x)
    x = layers.BatchNormalization(name="dw_d2x8_bn")(x)
    x = layers.Conv2D(5, 5, dilation_rate=4, padding="same", name="conv5_d4")(x)
    x = layers.ReLU()(layers.BatchNormalization(name="conv5_d4_bn")(x))
    x = layers.Conv2D(4, 3, dilation_rate=2, padding="valid", name="valid_d2")(layers.ZeroPadding2D(2)(x))
    model = keras.Model(inputs, x)
    randomize_keras_weights(model, seed=height * 100 + width if seed is None else seed)
    return model


def graph_of(folded):
    (graph,) = [layer for layer in folded.layers if isinstance(layer, InferenceGraph)]
    return graph


def kernel_shapes(graph):
    return {name: tuple(fn.kernels[0].shape[:2]) for name, _, fn, _ in graph._forward.steps if hasattr(fn, "kernels")}


# (map height, width): the taps kept by the rewrite, and those left dilated
CASES = {
    # smaller than every dilation: rows of 5 keep only the centre tap of the
    # rate-6, rate-8 and rate-4 kernels; the rate-2 rows keep theirs
    (5, 7): {"conv_d6": (1, 3), "dw_d2x8": (3, 1), "conv5_d4": (3, 3), "valid_d2": (3, 3)},
    # larger than every dilation: nothing to drop
    (13, 17): {"conv_d6": (3, 3), "dw_d2x8": (3, 3), "conv5_d4": (5, 5), "valid_d2": (3, 3)},
    # 3x3: the rate-6 and rate-4 convs are 1x1 convs
    (3, 3): {"conv_d6": (1, 1), "dw_d2x8": (3, 1), "conv5_d4": (1, 1), "valid_d2": (3, 3)},
    # sides equal to a dilation (6, 8): its outer taps read only padding;
    # the 5-tap rate-4 kernel keeps its 3 middle taps
    (6, 8): {"conv_d6": (1, 3), "dw_d2x8": (3, 1), "conv5_d4": (3, 3), "valid_d2": (3, 3)},
}


@pytest.mark.parametrize("size", list(CASES), ids=lambda s: f"{s[0]}x{s[1]}")
def test_dilated_convs_keep_their_outputs(size):
    model = dilated_model(*size)
    folded = fold_batchnorm(model)
    graph = graph_of(folded)
    expected_taps = CASES[size]
    assert kernel_shapes(graph) == expected_taps
    trimmed = {name for name, taps in expected_taps.items() if taps != tuple(model.get_layer(name).kernel_size)}
    assert set(graph.trimmed) == trimmed
    # every conv still dilated on an axis runs TensorFlow's native kernel
    assert set(graph.native_dilated) == {
        name for name, taps in expected_taps.items()
        if any(t > 1 and d > 1 for t, d in zip(taps, model.get_layer(name).dilation_rate))
    }
    x = np.random.default_rng(1).uniform(-1, 1, (2, *size, 4)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    unrewritten = keras.ops.convert_to_numpy(fold_batchnorm(model, dilated=False)(x))
    got = keras.ops.convert_to_numpy(folded(x))
    assert np.abs(expected).max() > 1.0  # outputs of unit scale: the bound below means something
    np.testing.assert_allclose(got, unrewritten, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_a_free_size_map_keeps_every_tap():
    """With the map's size unknown (a model of free input size) no tap is
    dropped: the same graph is right on small and large inputs alike."""
    model = dilated_model(None, None, seed=7)
    folded = fold_batchnorm(model)
    graph = graph_of(folded)
    assert kernel_shapes(graph) == CASES[13, 17] and not graph.trimmed
    rng = np.random.default_rng(4)
    for size in ((5, 7), (13, 17)):
        x = rng.uniform(-1, 1, (1, *size, 4)).astype("float32")
        expected = keras.ops.convert_to_numpy(model(x, training=False))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(folded(x)), expected, atol=1e-5, rtol=0)


def tf_ops(model, size):
    import tensorflow as tf

    function = tf.function(lambda x: model(x, training=False))
    graph = function.get_concrete_function(tf.TensorSpec((1, *size, 4))).graph
    return {op.type for op in graph.get_operations()}


def test_the_rewrite_leaves_no_space_to_batch():
    """The rewritten graph holds no SpaceToBatch/BatchToSpace, in TensorFlow's
    graph and in the TFLite flatbuffer (which Predictor and the exports run);
    the graph as Keras computes it (`dilated=False`) holds them."""
    size = (13, 17)
    model = dilated_model(*size)
    assert "SpaceToBatchND" in tf_ops(fold_batchnorm(model, dilated=False), size)
    rewritten = fold_batchnorm(model)
    assert not {"SpaceToBatchND", "BatchToSpaceND"} & tf_ops(rewritten, size)
    predictor = Predictor(model, runtime="tflite")
    names = [op["op"] for op in tflite.operators(predictor.flatbuffer)]
    assert "SPACE_TO_BATCH_ND" not in names and names.count("CONV_2D") == 3
    x = np.random.default_rng(2).uniform(-1, 1, (1, *size, 4)).astype("float32")
    np.testing.assert_allclose(predictor(x), keras.ops.convert_to_numpy(model(x)), atol=1e-5, rtol=0)


def test_deeplab_aspp_on_a_small_map_is_a_1x1_conv():
    """A 65 px DeepLabV3+ (output stride 16): the ASPP sees 4x4 features, so its
    rate 6, 12 and 18 convs are 1x1 convs; the dilated backbone blocks run
    TensorFlow's native kernel; the output is the Keras model's."""
    model = kl.DeepLabV3Plus((65, 65, 3), classes=5, alpha=0.35)
    randomize_keras_weights(model, seed=3)
    folded = fold_batchnorm(model)
    graph = graph_of(folded)
    assert sorted(graph.trimmed) == ["aspp_conv1", "aspp_conv2", "aspp_conv3"]
    assert all(kernel_shapes(graph)[name] == (1, 1) for name in graph.trimmed)
    assert sorted(graph.native_dilated) == ["block_14_depthwise", "block_15_depthwise", "block_16_depthwise"]
    x = np.random.default_rng(3).uniform(-1, 1, (1, 65, 65, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    got = keras.ops.convert_to_numpy(folded(x))
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(got - expected).max() <= 1e-5 * scale
