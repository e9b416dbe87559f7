"""Reading photos: formats, EXIF orientation, colour modes, refusals."""

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from keras_lightnets.preprocessing.image import (
    ImageError,
    eval_transform,
    load_for,
    load_image,
    read_image,
)
from keras_lightnets.registry import KERAS_EVAL, SPECS, TORCHVISION_EVAL
from tests import torchvision_transforms as tv

RED = (200, 30, 40)


def solid(mode="RGB", size=(40, 30), color=RED):
    return Image.new(mode, size, color)


@pytest.mark.parametrize("fmt,suffix", [("JPEG", "jpg"), ("PNG", "png"), ("BMP", "bmp"), ("GIF", "gif"), ("WEBP", "webp"), ("TIFF", "tif")])
def test_formats_read_as_rgb(fmt, suffix, tmp_path):
    path = tmp_path / f"x.{suffix}"
    solid().save(path, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    img = read_image(path)
    assert img.mode == "RGB" and img.size == (40, 30)
    np.testing.assert_allclose(np.asarray(img)[15, 20], RED, atol=12)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((30, 40, 3), "uint8")
    pixels[:, :20] = 255  # left half white
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    img.save(tmp_path / "r.jpg", exif=exif, quality=95)
    shown = np.asarray(read_image(tmp_path / "r.jpg"))
    assert shown.shape == (40, 30, 3)
    assert shown[:20].mean() > 200 and shown[20:].mean() < 50  # white half now on top


def test_alpha_is_composited_on_white(tmp_path):
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0, 255))
    img.save(tmp_path / "a.png")
    pixels = np.asarray(read_image(tmp_path / "a.png"))
    assert tuple(pixels[5, 5]) == (255, 255, 255) and tuple(pixels[0, 0]) == (255, 0, 0)


def test_palette_with_transparency_and_greyscale(tmp_path):
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.save(tmp_path / "p.png", transparency=0)
    assert tuple(np.asarray(read_image(tmp_path / "p.png"))[0, 0]) == (10, 200, 30)
    solid("L", color=77).save(tmp_path / "g.png")
    assert tuple(np.asarray(read_image(tmp_path / "g.png"))[0, 0]) == (77, 77, 77)


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    r, g, b = np.asarray(read_image(tmp_path / "c.jpg"))[8, 8].astype(int)
    assert r > 200 and g < 60 and b < 60  # cyan 0, magenta+yellow full = red


def test_sixteen_bit_png_is_scaled(tmp_path):
    Image.fromarray(np.full((6, 6), 65535 // 2, dtype="uint16")).save(tmp_path / "16.png")
    assert read_image(tmp_path / "16.png").getpixel((0, 0)) == (127, 127, 127)


def test_gif_first_frame(tmp_path):
    frames = [solid(color=(255, 0, 0)), solid(color=(0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    r, g, b = read_image(tmp_path / "anim.gif").getpixel((0, 0))
    assert r > 200 and b < 50


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: None, "no such file"),
        (lambda p: p.write_text("just text"), "not an image"),
        (lambda p: p.write_bytes(b""), "not an image"),
    ],
    ids=["directory", "missing", "text", "empty"],
)
def test_refusals(make, message, tmp_path):
    path = tmp_path / "input"
    make(path)
    with pytest.raises(ImageError, match=message):
        read_image(path)


def test_truncated_jpeg_is_an_error_not_grey(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype="uint8")).save(buffer, "JPEG")
    (tmp_path / "t.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match="cannot decode"):
        read_image(tmp_path / "t.jpg")


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    solid(size=(100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="too many pixels"):
        read_image(tmp_path / "big.png")


def test_unlisted_format_is_refused(tmp_path):
    solid().save(tmp_path / "x.ico", "ICO")
    with pytest.raises(ImageError, match="not an image of a supported format"):
        read_image(tmp_path / "x.ico")


def test_load_image_crops_center_and_resizes(tmp_path):
    pixels = np.zeros((100, 200, 3), "uint8")
    pixels[:, 50:150] = 255  # the central square is white
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    assert load_image(tmp_path / "wide.png", size=32, crop_fraction=1.0).min() == 255
    squashed = load_image(tmp_path / "wide.png", size=32, crop_fraction=None)
    assert squashed.shape == (32, 32, 3) and squashed.min() == 0


# ---------------------------------------------------------------- eval transforms per source


# Real photos (scikit-image) cut to the shapes that exercise torchvision's
# rounding: (name, top, left, height, width); None = the whole photo.
SHAPES = {
    "landscape_coffee_400x600": ("coffee", None),
    "landscape_odd_chelsea_300x451": ("chelsea", None),  # 256*451/300 = 384.85: truncated to 384
    "square_astronaut_512": ("astronaut", None),
    "landscape_rocket_427x640": ("rocket", None),
    "portrait_astronaut_500x233": ("astronaut", (0, 140, 500, 233)),
    "portrait_odd_coffee_399x257": ("coffee", (1, 171, 399, 257)),
    "odd_259x256_crop_offset_half": ("coffee", (30, 200, 256, 259)),  # (259-224)/2 = 17.5 -> 18
    "odd_257x383_chelsea": ("chelsea", (20, 40, 257, 383)),
    "small_chelsea_199x143": ("chelsea", (50, 150, 143, 199)),  # smaller than 256: enlarged
    "small_square_astronaut_200": ("astronaut", (60, 180, 200, 200)),
    "tiny_strip_coffee_40x300": ("coffee", (200, 100, 40, 300)),
}


def shaped_photo(key, folder, fmt="PNG"):
    name, box = SHAPES[key]
    pixels = getattr(skimage.data, name)()
    if box is not None:
        top, left, height, width = box
        pixels = pixels[top : top + height, left : left + width]
    path = folder / f"{key}.{fmt.lower()}"
    Image.fromarray(pixels).convert("RGB").save(path, fmt)
    return path


@pytest.mark.parametrize("key", sorted(SHAPES))
def test_torchvision_eval_transform_within_one_grey_level(key, tmp_path):
    path = shaped_photo(key, tmp_path)
    ours = load_for(path, TORCHVISION_EVAL)
    reference = tv.eval_pixels(Image.open(path), resize_to=256, crop_to=224)
    assert ours.shape == reference.shape == (224, 224, 3)
    assert np.abs(ours - reference.astype("float32")).max() <= 1.0
    # and in the model's input units (ToTensor + Normalize vs preprocess_input)
    from keras_lightnets import preprocess_input

    torch_input = tv.eval_tensor(Image.open(path)).numpy().transpose(1, 2, 0)
    assert np.abs(preprocess_input(ours, TORCHVISION_EVAL["mode"]) - torch_input).max() <= 1.0 / 255 / 0.224


def test_torchvision_geometry_details(tmp_path):
    """The two roundings, shown on their own: the longer side is truncated,
    the crop offset rounds half to even, as torchvision does."""
    from keras_lightnets.preprocessing.image import center_crop, shorter_side_size

    assert shorter_side_size(451, 300, 256) == (384, 256)  # 384.85 -> 384
    assert shorter_side_size(233, 500, 256) == (256, 549)  # 549.3 -> 549
    assert shorter_side_size(256, 256, 256) == (256, 256)
    ramp = Image.fromarray(np.tile(np.arange(259, dtype="uint8") % 251, (224, 1)).astype("uint8"))
    assert np.asarray(center_crop(ramp, 224))[0, 0] == 18  # (259 - 224) / 2 = 17.5 -> round() = 18
    ramp = Image.fromarray(np.tile(np.arange(257, dtype="uint8"), (224, 1)).astype("uint8"))
    assert np.asarray(center_crop(ramp, 224))[0, 0] == 16  # 16.5 -> 16 (half to even)


def test_keras_eval_is_load_img_then_preprocess_input(tmp_path):
    import keras

    for key in ("landscape_odd_chelsea_300x451", "portrait_astronaut_500x233", "small_chelsea_199x143"):
        path = shaped_photo(key, tmp_path, "JPEG")
        ours = load_for(path, KERAS_EVAL)
        reference = keras.utils.img_to_array(keras.utils.load_img(path, target_size=(224, 224)))
        np.testing.assert_array_equal(ours, reference)
        from keras_lightnets import preprocess_input

        np.testing.assert_allclose(
            preprocess_input(ours, "tf"),
            keras.applications.mobilenet_v2.preprocess_input(reference.copy()),
            atol=1e-6,
        )


def test_efficientnet_lite_and_older_records_keep_the_crop_fraction_path(tmp_path):
    path = shaped_photo("landscape_odd_chelsea_300x451", tmp_path)
    lite = SPECS["efficientnet_lite0"].preprocessing
    np.testing.assert_array_equal(load_for(path, lite), load_image(path, 224, 224 / 256, "bicubic"))
    old = {"mode": "torch", "size": 224, "crop_fraction": 0.875, "resample": "bilinear"}  # written before 0.2
    np.testing.assert_array_equal(load_for(path, old), load_image(path, 224, 0.875, "bilinear"))
    full = {"mode": "torch", "size": None, "crop_fraction": None, "resample": "bilinear"}
    assert load_for(path, full).shape == (300, 451, 3)
    assert load_for(path, SPECS["deeplabv3plus_mobilenetv2"].preprocessing).shape == (300, 451, 3)


def test_crop_fraction_takes_the_central_region_offsets_rounded_down():
    """The crop-fraction path (EfficientNet-Lite, files before 0.2): the
    central region of the target's aspect ratio, scaled by the fraction,
    offsets rounded down (not to even: 11.5 -> 11, 19.5 -> 19)."""
    pixels = np.random.default_rng(5).integers(0, 256, (131, 115, 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    # side round(115 * 0.8) = 92; left (115 - 92) // 2 = 11, top (131 - 92) // 2 = 19
    np.testing.assert_array_equal(eval_transform(img, 92, 0.8, "nearest"), pixels[19:111, 11:103])
    # (46, 92): the 115 x 57.5 region of aspect 2, times 0.8 -> 92 x 46 at left 11, top 42
    np.testing.assert_array_equal(eval_transform(img, (46, 92), 0.8, "nearest"), pixels[42:88, 11:103])
