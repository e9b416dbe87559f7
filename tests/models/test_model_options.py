"""The options every classifier builder has: `include_preprocessing` (pixels in, the weights'
preprocessing inside) and `feature_extractor` / `feature_keys` (the FEATURE_TAPS dict P1..P5)."""

import math

import keras
import numpy as np
import pytest

import keras_lightnets as kl
from keras_lightnets.catalog import pretrained_file
from keras_lightnets.models.tables import FEATURE_TAPS
from keras_lightnets.preprocessing import preprocess_input
from keras_lightnets.weights.h5 import save_model_weights
from tests.helpers import photo, randomize_keras_weights


@pytest.fixture(scope="module")
def mobilenet_v2_file():
    """torchvision's MobileNetV2, converted (`pretrained_file`)."""
    return pretrained_file("mobilenet_v2")


@pytest.fixture(scope="module")
def mobilenet_v2_logits(mobilenet_v2_file):
    return kl.from_h5(mobilenet_v2_file, classifier_activation=None)


def photos(size=224):
    return np.stack([photo("coffee", size), photo("chelsea", size)])


def test_include_preprocessing_equals_the_plain_model_on_preprocessed_input(mobilenet_v2_file, mobilenet_v2_logits):
    plain = mobilenet_v2_logits
    app = kl.from_h5(mobilenet_v2_file, classifier_activation=None, include_preprocessing=True)
    pixels = photos()
    expected = plain.predict(preprocess_input(pixels, kl.weights_info(mobilenet_v2_file)["preprocessing"]), verbose=0)
    got = app.predict(pixels, verbose=0)
    print(f"include_preprocessing: max |Δlogit| {np.abs(got - expected).max():.2e}")
    assert np.abs(got - expected).max() <= 1e-5 and expected.std() > 1.0  # logits of real scale
    assert kl.decode_predictions(got, top=1)[0][0][1] == "espresso"
    # one layer more, in front; the layers with weights keep their names and order
    assert [layer.name for layer in app.layers if layer.weights] == [layer.name for layer in plain.layers if layer.weights]
    assert [type(layer).__name__ for layer in app.layers][2:] == [type(layer).__name__ for layer in plain.layers][1:]
    assert type(app.layers[1]).__name__ == "Preprocess"
    assert app.layers[1].mean == pytest.approx([0.485, 0.456, 0.406]) and app.layers[1].divisor == 255


# builder, arguments, the preprocessing `include_preprocessing=True` stands for; one builder in the
# quick subset (the option is one decorator), the others with the slow tests
BUILDERS = [
    pytest.param("MobileNet", {"alpha": 0.25}, "tf", id="MobileNet"),
    *(pytest.param(*row, marks=pytest.mark.slow, id=row[0]) for row in [
        ("ShuffleNetV1", {"groups": 3, "scale": 0.5}, "bgr"),
        ("MobileNetV2", {"alpha": 0.35, "style": "torch"}, "torch"),
        ("EfficientNetLite0", {}, "lite"),
        ("SqueezeNet", {"version": "1_1"}, "torch"),
        ("ShuffleNetV2", {"width": 0.5}, "torch"),
    ]),
]


@pytest.mark.parametrize("builder, kwargs, mode", BUILDERS)
def test_include_preprocessing_on_every_classifier(tmp_path, builder, kwargs, mode):
    """The style's preprocessing in front; a weights file of the plain model loads as it is."""
    kwargs = {**kwargs, "input_shape": (64, 64, 3), "classes": 10, "classifier_activation": None}
    plain = kl.MODELS[builder](**kwargs)
    randomize_keras_weights(plain, seed=1)
    save_model_weights(plain, tmp_path / "plain.h5", None)
    app = kl.MODELS[builder](**kwargs, include_preprocessing=True, weights=str(tmp_path / "plain.h5"))
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    expected = plain.predict(preprocess_input(pixels, mode), verbose=0)
    assert expected.std() > 0.1
    np.testing.assert_allclose(app.predict(pixels, verbose=0), expected, atol=1e-5 * np.abs(expected).max())
    # a wrong preprocessing would not pass (the modes differ by far more than the tolerance)
    other = "tf" if mode != "tf" else "torch"
    assert np.abs(plain.predict(preprocess_input(pixels, other), verbose=0) - expected).max() > 1e-3


def test_from_h5_uses_the_records_preprocessing(tmp_path):
    """A style-torch file whose weights expect timm's mean/std 0.5: the record wins over the style."""
    kwargs = {"alpha": 0.25, "style": "torch", "input_shape": [64, 64, 3], "classes": 10, "classifier_activation": None}
    plain = kl.MobileNet(**kwargs)
    randomize_keras_weights(plain, seed=2)
    meanstd = {"mode": "meanstd", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "size": 64}
    record = {"format": 1, "arch": "mobilenet_v1", "builder": "MobileNet", "builder_kwargs": kwargs,
              "preprocessing": meanstd}
    save_model_weights(plain, tmp_path / "m.h5", record)
    app = kl.from_h5(tmp_path / "m.h5", include_preprocessing=True)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(app.predict(pixels, verbose=0), plain.predict(preprocess_input(pixels, meanstd), verbose=0),
                               atol=1e-5)


def test_feature_extractor_mobilenet_v2(mobilenet_v2_file, mobilenet_v2_logits):
    features = kl.from_h5(mobilenet_v2_file, feature_extractor=True)
    shapes = {level: tuple(tensor.shape[1:]) for level, tensor in features.output.items()}
    assert shapes == {"P1": (112, 112, 16), "P2": (56, 56, 24), "P3": (28, 28, 32), "P4": (14, 14, 96),
                      "P5": (7, 7, 320)}
    assert features.output["P3"] is features.get_layer("block_5_add").output
    assert features.output["P5"] is features.get_layer("block_16_project_BN").output
    # the weights are loaded: the features are the full model's, at those layers
    full = mobilenet_v2_logits
    reference = keras.Model(full.input, [full.get_layer("block_5_add").output, full.get_layer("block_16_project_BN").output])
    x = preprocess_input(photos(), "torch")
    got, expected = features.predict(x, verbose=0), reference.predict(x, verbose=0)
    np.testing.assert_array_equal(got["P3"], expected[0])
    np.testing.assert_array_equal(got["P5"], expected[1])
    assert np.abs(expected[1]).mean() > 0.1
    subset = kl.SqueezeNet(input_shape=(64, 64, 3), feature_extractor=True, feature_keys=["P4", "P2"])
    assert list(subset.output) == ["P2", "P4"]  # level order


def test_feature_option_errors():
    with pytest.raises(ValueError, match="feature_keys must be some of"):
        kl.SqueezeNet(feature_extractor=True, feature_keys=["P5"])  # SqueezeNet stops at stride 16
    with pytest.raises(ValueError, match="feature_keys applies with feature_extractor=True"):
        kl.MobileNet(feature_keys=["P2"])
    with pytest.raises(ValueError, match="mode must be one of"):
        kl.MobileNet(include_preprocessing="imagenet")
    caffe = kl.SqueezeNet(input_shape=(64, 64, 3), include_preprocessing="caffe")  # a mode by name
    assert caffe.layers[1].order == [2, 1, 0] and caffe.layers[1].mean == pytest.approx([103.939, 116.779, 123.68])


def _level_of(side, size):
    return round(math.log2(size / side))


def _check_taps(model, taps, size, cuts=None):
    """Each tap at its nominal stride (valid convolutions round down), and (the `cuts` levels,
    default all) a cut of the graph: everything after it is computed from it alone."""
    for level, name in taps.items():
        tensor = model.get_layer(name).output
        assert _level_of(tensor.shape[1], size) == int(level[1]), (level, name, tensor.shape)
        if tensor is not model.output and (cuts is None or level in cuts):
            keras.Model(tensor, model.output)  # raises if a later layer also reads an earlier tensor


CLASSIFIER_ROWS = [
    ("MobileNet", {}, "mobilenet"),
    ("MobileNetV2", {"style": "torch"}, "mobilenet_v2"),
    ("MobileNetV3Large", {}, "mobilenet_v3_large"),
    ("MobileNetV3Small", {"style": "torch"}, "mobilenet_v3_small"),
    *(("EfficientNetLite", {"variant": v}, f"efficientnet_lite{v}") for v in (0, 4)),
    *(("SqueezeNet", {"version": v}, f"squeezenet{v}") for v in ("1_0", "1_1")),
    ("ShuffleNetV2", {}, "shufflenet_v2"),
    ("ShuffleNetV1", {}, "shufflenet_v1"),
]


@pytest.mark.slow
@pytest.mark.parametrize("builder, kwargs, row", CLASSIFIER_ROWS, ids=[r[2] for r in CLASSIFIER_ROWS])
def test_feature_taps_table(builder, kwargs, row):
    model = kl.get_builder(builder)(**kwargs, input_shape=(224, 224, 3), include_top=False)
    assert kl.get_builder(builder).feature_taps(**kwargs) == FEATURE_TAPS[row]
    _check_taps(model, FEATURE_TAPS[row], 224)
    features = kl.get_builder(builder)(**kwargs, input_shape=(224, 224, 3), feature_extractor=True)
    assert list(features.output) == list(FEATURE_TAPS[row])


@pytest.mark.slow
@pytest.mark.parametrize("backbone, head", [("mobilenetv2", "vainf"), ("resnet50", "jfzhang95"),
                                            ("resnet101", "vainf"), ("xception", "bubbliiiing")])
def test_deeplab_reads_its_backbone_taps(backbone, head):
    """DeepLabV3+'s decoder reads P2, its ASPP P5, from the same table (output stride 32 nominal)."""
    model = kl.DeepLabV3Plus((128, 128, 3), classes=3, backbone=backbone, head=head)
    taps = kl.DeepLabV3Plus.feature_taps(backbone=backbone, head=head)
    assert model.get_layer("decoder_low_conv").input is model.get_layer(taps["P2"]).output
    assert model.get_layer("aspp_conv0").input is model.get_layer(taps["P5"]).output
    # Xception's P2 is the decoder's tap inside block2, not the end of a stage
    body = keras.Model(model.input, model.get_layer(taps["P5"]).output)
    _check_taps(body, {"P1": taps["P1"], "P2": taps["P2"]}, 128, cuts=("P1",) if backbone == "xception" else None)
