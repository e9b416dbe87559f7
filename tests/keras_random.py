"""Random weights for Keras models, BatchNormalization statistics included."""

import numpy as np
from keras import layers


def randomize_keras_weights(model, seed=0):
    """Gives every variable random values; BN gets random affine parameters,
    means and variances in [0.5, 2], so a wrong mapping cannot hide."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
        else:
            for variable in layer.weights:
                shape = tuple(variable.shape)
                fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
                if len(shape) == 4 and layer.__class__.__name__ == "DepthwiseConv2D":
                    fan_in = shape[0] * shape[1]
                scale = np.sqrt(2.0 / max(fan_in, 1))
                variable.assign(rng.normal(0, scale, shape).astype("float32"))
