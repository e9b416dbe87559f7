"""`preprocess_input` against constants written from each mode's source.

The inputs differ per channel (R, G, B far apart) so that a channel swap or a
mean/std applied in the wrong order changes the result. The expected values
are written out from the sources, not computed by the project:
- torchvision: `ToTensor()` (x / 255) then
  `Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])`, RGB.
- keras.applications `imagenet_utils.preprocess_input`: `mode="tf"` is
  x / 127.5 - 1; `mode="caffe"` flips RGB to BGR and subtracts the BGR mean
  [103.939, 116.779, 123.68], without scaling.
- EfficientNet-Lite (TFLite models, efficientnet-lite-pytorch): (x - 127) / 128.
- megvii's ShuffleNet: BGR, values kept in 0-255.
- bubbliiiing's deeplabv3-plus-pytorch (`utils.preprocess_input`): RGB, x / 255.
"""

import numpy as np
import pytest
import torch

from keras_lightnets import preprocessing as imagenet
from keras_lightnets.labels import decode_predictions
from keras_lightnets.preprocessing import PREPROCESSING_MODES, preprocess_input

# One pixel per row: pure-ish colours with very different channel values.
PIXELS = np.array(
    [
        [10.0, 100.0, 240.0],
        [255.0, 0.0, 60.0],
        [0.0, 255.0, 128.0],
        [37.0, 200.0, 3.0],
    ],
    dtype="float32",
)


def images():
    """A (2, 2, 2, 3) batch built from PIXELS, RGB 0-255."""
    return PIXELS.reshape(2, 2, 1, 3).repeat(2, axis=2)


# Expected values, channel by channel, from the sources' constants.
TORCHVISION_MEAN = (0.485, 0.456, 0.406)  # R, G, B
TORCHVISION_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # B, G, R


def expected(mode, rgb):
    r, g, b = (float(v) for v in rgb)
    if mode == "torch":
        return [(r / 255 - 0.485) / 0.229, (g / 255 - 0.456) / 0.224, (b / 255 - 0.406) / 0.225]
    if mode == "tf":
        return [r / 127.5 - 1, g / 127.5 - 1, b / 127.5 - 1]
    if mode == "caffe":
        return [b - 103.939, g - 116.779, r - 123.68]
    if mode == "lite":
        return [(r - 127) / 128, (g - 127) / 128, (b - 127) / 128]
    if mode == "bgr":
        return [b, g, r]
    if mode == "unit":
        return [r / 255, g / 255, b / 255]
    if mode == MEANSTD:  # timm's per-weights normalisation (e.g. mean 0.5, std 0.5 for `ra4` weights)
        return [(r / 255 - 0.5) / 0.25, (g / 255 - 0.4) / 0.5, (b / 255 - 0.3) / 0.125]
    raise AssertionError(mode)


MEANSTD = {"mode": "meanstd", "mean": [0.5, 0.4, 0.3], "std": [0.25, 0.5, 0.125]}
TESTED_MODES = ("torch", "tf", "caffe", "lite", "bgr", "unit", MEANSTD)


def test_every_mode_has_a_written_expectation():
    assert set(PREPROCESSING_MODES) == {m if isinstance(m, str) else m["mode"] for m in TESTED_MODES}


@pytest.mark.parametrize("mode", TESTED_MODES, ids=lambda m: m if isinstance(m, str) else m["mode"])
def test_mode_matches_the_sources_constants(mode):
    x = images()
    before = x.copy()
    got = preprocess_input(x, mode)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_array_equal(x, before)  # the input is not modified
    want = np.array([expected(mode, p) for p in x.reshape(-1, 3)], dtype="float64").reshape(x.shape)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_known_values_by_hand():
    """A few numbers worked out on paper, so the table above cannot share a mistake with the code."""
    pixel = np.array([[[[255.0, 0.0, 128.0]]]], dtype="float32")
    np.testing.assert_allclose(
        preprocess_input(pixel, "torch")[0, 0, 0], [2.2489083, -2.0357143, 0.4264926], atol=1e-5
    )
    np.testing.assert_allclose(preprocess_input(pixel, "tf")[0, 0, 0], [1.0, -1.0, 0.0039216], atol=1e-6)
    np.testing.assert_allclose(preprocess_input(pixel, "caffe")[0, 0, 0], [24.061, -116.779, 131.32], atol=1e-4)
    np.testing.assert_allclose(preprocess_input(pixel, "lite")[0, 0, 0], [1.0, -0.9921875, 0.0078125], atol=1e-7)
    np.testing.assert_array_equal(preprocess_input(pixel, "bgr")[0, 0, 0], [128.0, 0.0, 255.0])
    np.testing.assert_allclose(preprocess_input(pixel, "unit")[0, 0, 0], [1.0, 0.0, 0.5019608], atol=1e-7)


def test_torch_mode_is_torchvision_normalize_in_rgb_order():
    """torchvision's ToTensor + Normalize, written with torch ops on CHW tensors."""
    x = images()
    chw = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()) / 255.0
    mean = torch.tensor(TORCHVISION_MEAN)[None, :, None, None]
    std = torch.tensor(TORCHVISION_STD)[None, :, None, None]
    reference = ((chw - mean) / std).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(preprocess_input(x, "torch"), reference, atol=1e-6)


@pytest.mark.parametrize("mode", ["tf", "caffe", "torch"])
def test_modes_shared_with_keras_applications(mode):
    from keras.applications import imagenet_utils

    x = images()
    reference = imagenet_utils.preprocess_input(x.copy(), data_format="channels_last", mode=mode)
    np.testing.assert_allclose(preprocess_input(x, mode), np.asarray(reference), atol=1e-5)


def test_caffe_mean_constant_is_in_bgr_order():
    np.testing.assert_allclose(imagenet.CAFFE_MEAN_BGR, CAFFE_MEAN_BGR, atol=1e-6)
    np.testing.assert_allclose(imagenet.IMAGENET_MEAN, TORCHVISION_MEAN, atol=1e-7)
    np.testing.assert_allclose(imagenet.IMAGENET_STD, TORCHVISION_STD, atol=1e-7)


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 4)), np.zeros((3, 2, 2))])
def test_non_rgb_input_is_refused(bad):
    with pytest.raises(ValueError, match="3 channels"):
        preprocess_input(bad, "tf")


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be one of"):
        preprocess_input(images(), "rgb")


def test_decode_predictions_orders_highest_first():
    preds = np.zeros((2, 1000), dtype="float32")
    preds[0, [386, 101, 7]] = [0.9, 0.5, 0.7]  # African elephant, tusker, cock
    preds[1, 999] = 1.0
    decoded = decode_predictions(preds, top=3)
    assert [c[:2] for c in decoded[0]] == [
        ("n02504458", "African_elephant"), ("n01514668", "cock"), ("n01871265", "tusker")
    ]
    np.testing.assert_allclose([c[2] for c in decoded[0]], [0.9, 0.7, 0.5], rtol=1e-6)
    assert decoded[1][0][:2] == ("n15075141", "toilet_tissue") and decoded[1][0][2] == 1.0


def test_image_just_over_the_pixel_limit_is_refused_too(tmp_path, monkeypatch):
    """Pillow only warns between MAX_IMAGE_PIXELS and twice that (it raises
    beyond): the reader must turn the warning into a refusal as well."""
    from PIL import Image

    from keras_lightnets.preprocessing.image import ImageError, read_image

    Image.new("RGB", (40, 30), (10, 100, 240)).save(tmp_path / "over.png")  # 1200 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1200 is over 1000, under 2000
    with pytest.raises(ImageError, match="too many pixels"):
        read_image(tmp_path / "over.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1200)
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "over.png"))[0, 0], [10, 100, 240])


@pytest.mark.parametrize("mode", TESTED_MODES, ids=lambda m: m if isinstance(m, str) else m["mode"])
def test_uint8_table_equals_preprocess_input_bit_for_bit(mode):
    """The batch reader's table look-up gives `preprocess_input`'s float32
    values exactly, on every 8-bit value of every channel, into a batch row."""
    from keras_lightnets.preprocessing import preprocess_uint8

    rng = np.random.default_rng(1)
    every_value = np.stack([np.arange(256), rng.permutation(256), rng.permutation(256)], axis=-1)
    x = every_value.reshape(16, 16, 3).astype("uint8")
    expected = preprocess_input(x, mode)
    batch = np.full((2, 16, 16, 3), np.nan, dtype="float32")
    got = preprocess_uint8(x, mode, out=batch[1])
    assert np.shares_memory(got, batch[1])
    np.testing.assert_array_equal(batch[1].view("uint32"), expected.view("uint32"))
    assert np.isnan(batch[0]).all()
    with pytest.raises(ValueError, match="uint8"):
        preprocess_uint8(x.astype("float32"), mode)


def _registry_preprocessings():
    """Every eval transform the registry's specs, sources and namings record (one of each)."""
    from keras_lightnets import registry
    from keras_lightnets.weights import sources
    found = [spec.preprocessing for spec in registry.SPECS.values()]
    found += [dict(source.preprocessing) for source in sources.SOURCES.values()]
    unique = {repr(sorted(p.items())): p for p in found}
    return list(unique.values())


@pytest.mark.parametrize("preprocessing", _registry_preprocessings(), ids=lambda p: f"{p.get('mode')}-{p.get('resize')}-{p.get('size')}")
def test_every_registry_transform_is_the_same_in_numpy_tf_data_the_layer_and_predictor(preprocessing, tmp_path):
    """One definition: the demo's reader (numpy), the fine-tuning tf.data map, predict's
    uint8 batch reader, the Keras layer of exports and a TFLite `Predictor` of that
    layer give the same inputs for a real photo, for every transform the registry records."""
    import keras
    import tensorflow as tf
    from PIL import Image

    from keras_lightnets.preprocessing import preprocessing_layer, tf_preprocess
    from keras_lightnets.preprocessing.batches import prediction_batches
    from keras_lightnets.preprocessing.image import load_for
    from keras_lightnets.runtime.predictor import Predictor
    from keras_lightnets.training.data import tf_eval_image
    from tests.helpers import photo

    path = tmp_path / "chelsea.jpg"
    Image.fromarray(photo("chelsea", 300).astype("uint8")[:, 20:]).save(path, quality=95)  # 300x280: not square
    if preprocessing.get("resize") == "letterbox":  # segmentation only: `runtime.segmentation` letterboxes
        size = None
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype="float32")
    else:
        size = (preprocessing["size"],) * 2 if preprocessing.get("size") else None
        pixels = load_for(path, preprocessing)
    expected = preprocess_input(pixels[None], preprocessing)

    if size is not None:
        through_tf_data = tf_eval_image(tf.constant(str(path)), preprocessing, size)
        np.testing.assert_array_equal(through_tf_data.numpy(), pixels.astype("uint8"))
    normalised = tf_preprocess(tf.constant(pixels[None]), preprocessing).numpy()
    np.testing.assert_allclose(normalised, expected, rtol=0, atol=1e-6)
    (batch, _, messages), = prediction_batches([str(path)], preprocessing, size, 1)
    assert messages == [""]
    np.testing.assert_array_equal(batch, expected)

    inputs = keras.Input(pixels.shape)
    layer_model = keras.Model(inputs, preprocessing_layer(preprocessing)(inputs))
    np.testing.assert_allclose(layer_model(pixels[None]).numpy(), expected, rtol=0, atol=1e-5)
    predictor = Predictor(layer_model)
    assert predictor.runtime == "tflite"
    np.testing.assert_allclose(predictor(pixels[None]), expected, rtol=0, atol=1e-5)
