"""The converter's tensor layouts, each checked against PyTorch running the same weights.

Every test runs a PyTorch layer and the Keras layer that receives its weights
through `keras_lightnets.conversion.layouts` on the same input and compares the
outputs, so that a layout is judged by what it computes, not by its shapes.
Kernels are non-square and weights random, so a swapped axis shows.
"""

import numpy as np
import pytest
import torch
from keras import layers
from torch import nn

import keras_lightnets as kl
from keras_lightnets.conversion import layouts
from keras_lightnets.conversion.references.marvis import MobileNet as MarvisMobileNet
from tests.helpers import (
    assert_parity,
    nchw,
    randomize_torch_model,
    reference_images,
    run_cli,
    torch_forward,
)


def fetcher(module):
    state = {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}
    return lambda name: state[name]


def keras_run(layer, arrays, x_nhwc):
    if not layer.built:
        layer.build(x_nhwc.shape)
    variables = list(layer.trainable_weights) + list(layer.non_trainable_weights)
    assert len(variables) == len(arrays)
    for variable, array in zip(variables, arrays):
        assert tuple(variable.shape) == array.shape, (variable.path, array.shape)
        variable.assign(array)
    return np.asarray(layer(x_nhwc, training=False))


def torch_run(module, x_nhwc):
    with torch.no_grad():
        out = module.eval()(torch.from_numpy(nchw(x_nhwc)))
    return out.numpy().transpose(0, 2, 3, 1) if out.ndim == 4 else out.numpy()


@pytest.mark.parametrize("multiplier", [1, 2, 3])
@pytest.mark.parametrize("kernel", [(3, 5), (5, 2)], ids=["3x5", "5x2"])
@pytest.mark.parametrize("use_bias", [False, True], ids=["nobias", "bias"])
def test_depthwise_layout_matches_torch_grouped_conv(multiplier, kernel, use_bias, rng):
    channels = 4
    torch.manual_seed(multiplier)
    conv = nn.Conv2d(channels, channels * multiplier, kernel, groups=channels, bias=use_bias)
    with torch.no_grad():
        conv.weight.normal_()
        if use_bias:
            conv.bias.normal_()
    x = rng.standard_normal((2, 9, 11, channels)).astype("float32")
    layer = layers.DepthwiseConv2D(kernel, depth_multiplier=multiplier, padding="valid", use_bias=use_bias)
    layer.build(x.shape)
    arrays = layouts.keras_arrays(layer, fetcher(conv))
    assert arrays[0].shape == (*kernel, channels, multiplier)
    got = keras_run(layer, arrays, x)
    expected = torch_run(conv, x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_depthwise_layout_orders_output_channels_as_torch(rng):
    """PyTorch's output channel c*m + j is the j-th filter of input channel c:
    one input channel lit, only its m output channels may answer."""
    channels, multiplier = 3, 2
    conv = nn.Conv2d(channels, channels * multiplier, (1, 1), groups=channels, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(1, 7, dtype=torch.float32).reshape(6, 1, 1, 1))
    layer = layers.DepthwiseConv2D((1, 1), depth_multiplier=multiplier, use_bias=False)
    x = np.zeros((1, 1, 1, channels), "float32")
    x[..., 1] = 1.0  # channel 1 only: torch outputs 2 and 3 (weights 3 and 4)
    got = keras_run(layer, layouts.keras_arrays(layer, fetcher(conv)), x)
    np.testing.assert_array_equal(got.ravel(), [0, 0, 3, 4, 0, 0])


@pytest.mark.parametrize("groups", [1, 2])
def test_conv2d_layout_with_non_square_kernel(groups, rng):
    conv = nn.Conv2d(4, 6, (2, 3), groups=groups, bias=True)
    with torch.no_grad():
        conv.weight.normal_()
        conv.bias.normal_()
    x = rng.standard_normal((2, 7, 8, 4)).astype("float32")
    layer = layers.Conv2D(6, (2, 3), groups=groups, use_bias=True)
    layer.build(x.shape)
    got = keras_run(layer, layouts.keras_arrays(layer, fetcher(conv)), x)
    np.testing.assert_allclose(got, torch_run(conv, x), atol=1e-5, rtol=0)


def test_linear_into_dense_and_into_a_1x1_conv_classifier(rng):
    linear = nn.Linear(5, 3)
    with torch.no_grad():
        linear.weight.normal_()
        linear.bias.normal_()
    x = rng.standard_normal((4, 5)).astype("float32")
    with torch.no_grad():
        expected = linear(torch.from_numpy(x)).numpy()  # (4, 3)
    dense = layers.Dense(3)
    dense.build(x.shape)
    np.testing.assert_allclose(keras_run(dense, layouts.keras_arrays(dense, fetcher(linear)), x), expected, atol=1e-5)
    conv = layers.Conv2D(3, 1)  # Keras MobileNet's conv_preds
    conv.build((4, 1, 1, 5))
    got = keras_run(conv, layouts.keras_arrays(conv, fetcher(linear)), x[:, None, None, :])
    np.testing.assert_allclose(got[:, 0, 0, :], expected, atol=1e-5)


def test_1x1_conv_classifier_into_dense(rng):
    conv = nn.Conv2d(5, 3, 1)
    with torch.no_grad():
        conv.weight.normal_()
        conv.bias.normal_()
    x = rng.standard_normal((4, 5)).astype("float32")
    expected = torch_run(conv, x[:, None, None, :])[:, 0, 0, :]
    dense = layers.Dense(3)
    dense.build(x.shape)
    np.testing.assert_allclose(keras_run(dense, layouts.keras_arrays(dense, fetcher(conv)), x), expected, atol=1e-5)


def test_batch_norm_layout_with_random_statistics(rng):
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    x = rng.standard_normal((2, 3, 4, 6)).astype("float32")
    layer = layers.BatchNormalization(epsilon=bn.eps)
    layer.build(x.shape)
    got = keras_run(layer, layouts.keras_arrays(layer, fetcher(bn)), x)
    np.testing.assert_allclose(got, torch_run(bn, x), atol=1e-5, rtol=0)


def test_layout_errors():
    layer = layers.DepthwiseConv2D(3)
    layer.build((1, 8, 8, 4))
    with pytest.raises(layouts.LayoutError, match="depthwise"):
        layouts.keras_arrays(layer, lambda name: np.zeros((4, 4, 3, 3), "float32"))
    pool = layers.MaxPooling2D()
    with pytest.raises(layouts.LayoutError, match="MaxPooling2D"):
        layouts.keras_arrays(pool, lambda name: np.zeros(1))


def test_cli_converts_seed_v1_with_depth_multiplier_2(tmp_path, capsys):
    """Seed v1 naming, depth multiplier 2, random weights and BN statistics,
    through `python -m convert`, compared with the PyTorch forward pass."""
    torch.manual_seed(3)
    model = MarvisMobileNet(num_classes=20, depth_multiplier=2, width_mult=0.5)
    images = reference_images()
    randomize_torch_model(model, nchw(images), seed=3)
    assert model.model[1][0].weight.shape == (32, 1, 3, 3)  # 16 channels x 2
    with torch.no_grad():
        # Activations of spread ~4 in block 1, as trained nets have, and the
        # next conv scaled back: the same function under ReLU, but ReLU6
        # (the Keras default) would clip it.
        block = model.model[1]
        block[1].weight.mul_(4.0)
        block[1].bias.mul_(4.0)
        block[3].weight.div_(4.0)
    checkpoint = tmp_path / "v1_dm2.pth"
    torch.save(model.state_dict(), checkpoint)
    out = tmp_path / "v1_dm2.h5"
    status, report, err = run_cli(capsys, checkpoint, out, "--arch", "mobilenet_v1")
    assert status == 0, err
    assert "depth_multiplier=2" in report and "alpha=0.5" in report and "activation='relu'" in report
    assert "unused tensors  none" in report and "unset weights   none" in report
    keras_model = kl.from_h5(out, classifier_activation=None)
    assert keras_model.get_layer("conv_dw_1").depth_multiplier == 2
    assert_parity(np.asarray(keras_model(images)), torch_forward(model, images))


@pytest.mark.parametrize("align_corners", [False, True])
def test_bilinear_resize_with_unknown_sizes_matches_torch(align_corners, rng):
    """DeepLab models take any input size: inside a traced graph the sizes are
    tensors and BilinearResize takes its own path (not ops.image.resize)."""
    import tensorflow as tf

    from keras_lightnets.layers.resize import BilinearResize

    layer = BilinearResize(align_corners)
    traced = tf.function(
        lambda x, ref: layer([x, ref]),
        input_signature=[tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([None, None, None, 1])],
    )
    x = rng.standard_normal((2, 7, 9, 3)).astype("float32")
    got = np.asarray(traced(x, np.zeros((2, 33, 20, 1), "float32")))
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(nchw(x)), size=(33, 20), mode="bilinear", align_corners=align_corners
    ).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
