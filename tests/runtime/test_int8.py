"""int8: calibration photos, `Predictor(model, quantize="int8")`, percentile ranges.

Agreement and speed on torchvision's real MobileNetV2 are measured by
bench/int8.py (bench/INT8_RESULTS.md); these tests check the machinery on
small models, against the float model."""

import os

import keras
import numpy as np
import pytest
from keras import layers

from keras_lightnets.preprocessing.image import ImageError
from keras_lightnets.runtime import calibration, tflite
from keras_lightnets.runtime.predictor import Predictor
from tests.helpers import randomize_keras_weights

PREPROCESSING = {"mode": "torch", "size": 32, "resize": 36, "resample": "bilinear"}


def small_classifier(seed=0, padded=False):
    """Conv (after an explicit ZeroPadding2D when `padded`, as in MobileNetV2),
    depthwise conv, 1x1 conv, global pooling, Dense."""
    inputs = keras.Input((32, 32, 3))
    if padded:
        x = layers.Conv2D(16, 3, strides=2, use_bias=False)(layers.ZeroPadding2D(1)(inputs))
    else:
        x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
    x = layers.BatchNormalization()(layers.Conv2D(16, 1, use_bias=False)(x))
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, layers.Dense(10)(x))
    randomize_keras_weights(model, seed=seed)
    return model


def test_shipped_photos_and_seeded_crops():
    photos = calibration.shipped_photos()
    names = [name for name, _ in photos]
    # the checkout's examples, scikit-image's and matplotlib's photos, each photo once: scikit-image's
    # chelsea and coffee are examples/cat.jpg and coffee.jpg; camera and moon (both 512x512 grey) differ
    assert names[:2] == ["cat.jpg", "coffee.jpg"] and "chelsea.png" not in names and "coffee.png" not in names
    assert {"astronaut.png", "camera.png", "moon.png", "grace_hopper.jpg"} <= set(names)
    assert len(set(names)) == len(names) == len(calibration.SKIMAGE_PHOTOS) + len(calibration.MATPLOTLIB_PHOTOS)
    pixels = calibration.photo_pixels(photos[:3], PREPROCESSING, 7, seed=0)
    assert pixels.shape == (7, 32, 32, 3) and pixels.dtype == np.uint8
    from keras_lightnets.preprocessing.image import transform_for

    # the photos as they are first, through the weights' eval transform
    np.testing.assert_array_equal(pixels[0], transform_for(photos[0][1], PREPROCESSING, 32, dtype="uint8"))
    np.testing.assert_array_equal(pixels, calibration.photo_pixels(photos[:3], PREPROCESSING, 7, seed=0))
    others = calibration.photo_pixels(photos[:3], PREPROCESSING, 4, seed=1, originals=False)
    assert not any((other == pixel).all() for other in others for pixel in pixels)
    inputs = calibration.calibration_inputs(PREPROCESSING, 5)
    assert inputs.dtype == np.float32 and -2.2 < inputs.min() < -1.5 and 2.0 < inputs.max() < 2.7  # ImageNet mean/std


def test_random_crop_covers_a_quarter_to_all_of_the_photo():
    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.new("RGB", (400, 300))
    for _ in range(50):
        crop = calibration.random_crop(img, rng)
        area = crop.width * crop.height / (400 * 300)
        assert 0.2 <= area <= 1.0 and 0.5 <= crop.width / crop.height <= 1.8


def test_a_folder_of_photos(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    photos = calibration.folder_photos(str(tmp_path))
    assert [name for name, _ in photos] == ["red.png"]
    assert capsys.readouterr().err.count("\n") == 1  # one line for the unreadable file
    with pytest.raises(ImageError, match="no readable images"):
        calibration.folder_photos(str(tmp_path / "empty") if os.mkdir(tmp_path / "empty") is None else "")
    with pytest.raises(ImageError, match="not a directory"):
        calibration.folder_photos(str(tmp_path / "red.png"))


def test_int8_predictor_runs_every_op_int8_on_xnnpack():
    model = small_classifier()
    inputs = calibration.calibration_inputs(PREPROCESSING, 24)
    predictor = Predictor(model, quantize="int8", calibration=inputs, float_head=0)
    assert predictor.runtime == "tflite" and predictor.quantize == "int8"
    ops = tflite.operators(predictor.flatbuffer)
    assert all(op["xnnpack"] for op in ops)
    assert {op["op"] for op in ops if "float32" in op["types"]} == {"QUANTIZE", "DEQUANTIZE"}  # float I/O only
    assert sum(op["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") for op in ops) == 4
    others = calibration.calibration_inputs(PREPROCESSING, 16, seed=1)
    expected = keras.ops.convert_to_numpy(model(others, training=False))
    for batch in (1, 3):
        got = predictor(others[:batch])
        assert got.dtype == np.float32 and got.shape == (batch, 10)
    got = np.concatenate([predictor(others[i:i + 4]) for i in range(0, 16, 4)])
    spread = expected.max() - expected.min()
    assert np.abs(got - expected).max() < 0.05 * spread  # int8 steps, not another network


def test_int8_keeps_the_first_convolutions_float():
    """`float_head=2`: the padding, the first conv and the depthwise conv
    compute in float on XNNPACK, the last conv and the Dense layer in int8."""
    model = small_classifier(padded=True)
    inputs = calibration.calibration_inputs(PREPROCESSING, 24)
    ops = tflite.operators(Predictor(model, quantize="int8", calibration=inputs, float_head=2).flatbuffer)
    kinds = [(op["op"], "float32" in op["types"]) for op in ops if op["op"] not in ("QUANTIZE", "DEQUANTIZE")]
    assert kinds[:3] == [("PAD", True), ("CONV_2D", True), ("DEPTHWISE_CONV_2D", True)]
    assert ("CONV_2D", False) in kinds[3:] and ("FULLY_CONNECTED", False) in kinds[3:]
    assert all(kind[1] is False for kind in kinds[3:]) and all(op["xnnpack"] for op in ops)
    assert [op["op"] for op in tflite.float_operators(tflite.tflite_bytes(model, "int8", inputs))] == [
        "PAD", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D"][:tflite.FLOAT_HEAD + 1]


def test_int8_requests_that_cannot_run():
    model = small_classifier()
    inputs = calibration.calibration_inputs(PREPROCESSING, 4)
    with pytest.raises(ValueError, match="calibration"):
        Predictor(model, quantize="int8")
    with pytest.raises(ValueError, match="TFLite"):
        Predictor(model, quantize="int8", runtime="tf", calibration=inputs)
    with pytest.raises(ValueError, match="calibration inputs of shape"):
        Predictor(model, quantize="int8", calibration=inputs[:, :16, :16])
    with pytest.raises(ValueError, match="quantize must be one of"):
        Predictor(model, quantize="int4", calibration=inputs)


def outlier_model():
    """`x -> [x, -x] -> x - (-x)`: two 1x1 convs, the first one's output an
    activation between them."""
    inputs = keras.Input((16, 16, 1))
    split, merge = layers.Conv2D(2, 1), layers.Conv2D(1, 1)
    model = keras.Model(inputs, merge(split(inputs)))
    split.set_weights([np.array([[[[1.0, -1.0]]]], "float32"), np.zeros(2, "float32")])
    merge.set_weights([np.array([[[[1.0], [-1.0]]]], "float32"), np.zeros(1, "float32")])
    return model


def activation_scales(content):
    """The int8 steps of the activations between the input's and the output's."""
    interpreter = tflite.load_interpreter(content, 1)
    ends = {interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]}
    details = interpreter.get_tensor_details()
    producers = {int(t) for op in interpreter._get_ops_details() for t in op["outputs"]}
    return sorted(
        float(d["quantization"][0]) for d in details
        if d["dtype"] == np.int8 and d["index"] in producers and d["index"] not in ends and d["quantization"][0]
        and len(d["shape"]) == 4 and d["shape"][-1] == 2
    )


def test_percentile_ranges_ignore_rare_outliers():
    """Calibration images of values in [0, 1] with one pixel of 200 in one:
    between the convs, the converter's min/max spreads 256 steps over
    [-200, 200]; the 99.99 % quantiles of the values (`RANGE_QUANTILE`),
    over about [-1, 1]."""
    model = outlier_model()
    images = np.random.default_rng(0).uniform(0, 1, (32, 16, 16, 1)).astype("float32")
    images[5, 3, 4, 0] = 200.0
    (minmax,) = activation_scales(tflite.tflite_bytes(model, "int8", images, ranges="minmax", float_head=0))
    (percentile,) = activation_scales(tflite.tflite_bytes(model, "int8", images, ranges="percentile", float_head=0))
    assert minmax == pytest.approx(400 / 255, rel=0.01)
    assert 1.9 / 255 < percentile < 2.1 / 255


def test_runner_quantizes_float_batches_for_an_int8_input():
    model = small_classifier(seed=1)
    inputs = calibration.calibration_inputs(PREPROCESSING, 8)
    import tensorflow as tf

    content = tflite.tflite_bytes(model, "int8", inputs, ranges="minmax", float_head=0,
                                  options={"inference_input_type": tf.int8, "inference_output_type": tf.int8})
    runner = tflite.Runner(content, 1)
    assert runner.input_details["dtype"] == np.int8
    floats = tflite.Runner(tflite.tflite_bytes(model, "int8", inputs, ranges="minmax", float_head=0), 1)
    np.testing.assert_allclose(runner(inputs[:2]), floats(inputs[:2]), atol=1e-6)
