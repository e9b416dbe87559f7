"""Classify or segment a photo with a pretrained light network.

    python demo.py photo.jpg                       # MobileNetV2, torchvision's ImageNet weights
    python demo.py photo.jpg --model mobilenet      # MobileNet, keras.applications' ImageNet file
    python demo.py photo.jpg --model efficientnet_lite0
    python demo.py photo.jpg --top 3
    python demo.py photo.jpg --weights model.h5     # a file made by `python -m convert`
    python demo.py photo.jpg --model mobilenet_v2 --weights mobilenet_v2.h5
    python demo.py photo.jpg --model deeplabv3plus_mobilenetv2 --weights deeplab.h5 --out overlay.png

Classifiers print one line per class, best first: rank, label, probability.
Segmentation weights (DeepLabV3+) write the photo with a colour-coded class
overlay and a legend (Pascal VOC palette) and print each class's pixel share.
"""

import argparse
import os
import sys

from keras_lightnets.cli import import_tensorflow_quietly

DEFAULT_MODEL = "mobilenet_v2"
# `--model` names that are a pretrained source rather than an arch.
MODEL_ALIASES = {"mobilenet": "keras_mobilenet", "mobilenet_v2_keras": "keras_mobilenet_v2"}


class UsageError(Exception):
    """A user mistake: reported in one line, exit status 2."""


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Classify a photo with a pretrained light network.")
    parser.add_argument("image", help="JPEG, PNG, BMP, GIF, WebP or TIFF file")
    parser.add_argument("--model", help=f"model name (default {DEFAULT_MODEL}: torchvision's weights; "
                        "mobilenet: keras.applications' file; efficientnet_lite0; "
                        "or the one --weights was converted for)")
    parser.add_argument("--weights", help="Keras weights file written by `python -m convert`")
    parser.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    parser.add_argument("--out", help="segmentation only: the overlay PNG to write "
                        "(default IMAGE_segmentation.png in the current folder)")
    return parser.parse_args(argv)


def pretrained_model(name):
    """`(model, preprocessing)` of a pretrained `--model` (an arch, an alias or a source)."""
    import keras_lightnets
    from keras_lightnets import pretrained
    from keras_lightnets.models import get_builder, pretrained_file
    from keras_lightnets.registry import SPECS

    source_name = MODEL_ALIASES.get(name, name)
    if source_name in SPECS and SPECS[source_name].pretrained:
        source_name = SPECS[source_name].pretrained[0]
    if source_name not in pretrained.SOURCES:
        available = [arch for arch, spec in SPECS.items() if spec.pretrained] + list(MODEL_ALIASES)
        raise UsageError(
            f"no pretrained weights for {name!r} (available: {', '.join(available)}); "
            "convert a checkpoint with `python -m convert` and pass --weights"
        )
    source = pretrained.SOURCES[source_name]
    if isinstance(source, pretrained.KerasFile):
        # keras.applications' own file: no keras-lightnets record, the builder's defaults
        model = get_builder(source.arch)(weights="imagenet", **source.builder_kwargs)
        return model, dict(source.preprocessing)
    weights = pretrained_file(source_name)
    return keras_lightnets.from_h5(weights), keras_lightnets.weights_info(weights)["preprocessing"]


def load_model(model_name, weights):
    """Returns `(model, preprocessing)` for the demo's arguments."""
    import keras_lightnets
    from keras_lightnets.registry import SPECS

    if weights is None:
        return pretrained_model(model_name or DEFAULT_MODEL)
    if not os.path.isfile(weights):
        raise UsageError(f"{weights}: no such weights file")
    info = keras_lightnets.weights_info(weights)
    if model_name is not None and model_name != info["arch"]:
        raise UsageError(f"{weights} holds {info['arch']} weights, not {model_name}")
    if info["arch"] not in SPECS:
        raise UsageError(f"{weights} is for an unknown model {info['arch']!r}")
    return keras_lightnets.from_h5(weights), info["preprocessing"]


def is_segmentation(model):
    return len(model.output_shape) == 4


def segment(image_path, model, preprocessing):
    """Returns `(photo as uint8 HxWx3, class map HxW)` at the photo's own size.

    `"resize": "letterbox"` (bubbliiiing's `detect_image`): the photo is
    letterboxed to the recorded size; the class probabilities are cropped
    back to the photo's box and resized (bilinear, half-pixel) to the photo
    before the argmax. Otherwise the photo goes in at its own size.
    """
    import keras
    import numpy as np

    import keras_lightnets
    from keras_lightnets.image import letterbox, read_image
    from keras_lightnets.inference import Predictor

    img = read_image(image_path)
    pixels = np.asarray(img, dtype="float32")
    if preprocessing.get("resize") != "letterbox":
        batch = keras_lightnets.preprocess_input(pixels[None], preprocessing["mode"])
        return pixels.astype("uint8"), Predictor(model)(batch)[0].argmax(-1)
    boxed, (top, left, height, width) = letterbox(
        img, preprocessing["size"], preprocessing.get("resample", "bicubic"), preprocessing.get("fill", 128)
    )
    logits = Predictor(model)(keras_lightnets.preprocess_input(boxed[None], preprocessing["mode"]))[0]
    probabilities = keras.ops.softmax(logits[top : top + height, left : left + width], axis=-1)
    probabilities = keras.ops.image.resize(probabilities, pixels.shape[:2], interpolation="bilinear", antialias=False)
    return pixels.astype("uint8"), np.asarray(probabilities).argmax(-1)


def overlay(photo, class_map, names, opacity=0.5):
    """The photo blended with the class colours, with a legend of the classes present."""
    import numpy as np
    from PIL import Image, ImageDraw

    from keras_lightnets.deeplab import voc_palette

    colours = voc_palette(max(256, len(names)))[class_map]
    painted = class_map > 0  # background stays unpainted
    blended = photo.astype("float32")
    blended[painted] = (1 - opacity) * blended[painted] + opacity * colours[painted]
    image = Image.fromarray(blended.round().astype("uint8"))
    draw = ImageDraw.Draw(image)
    row = 12
    for index, class_id in enumerate(np.unique(class_map)):
        top = 4 + index * row
        colour = tuple(int(v) for v in voc_palette(256)[class_id])
        draw.rectangle([4, top, 4 + row - 2, top + row - 2], fill=colour, outline=(255, 255, 255))
        draw.text((4 + row + 2, top - 1), names[class_id], fill=(255, 255, 255))
    return image


def write_png(image, path):
    """Writes atomically: a failed run leaves no partial file."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{folder}: no such directory for --out")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".png.tmp")
    os.close(fd)
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def class_names(classes):
    from keras_lightnets.deeplab import VOC_CLASSES

    return list(VOC_CLASSES) if classes == len(VOC_CLASSES) else [f"class {i}" for i in range(classes)]


def run_segmentation(args, model, preprocessing):
    import numpy as np

    out = args.out or f"{os.path.splitext(os.path.basename(args.image))[0]}_segmentation.png"
    if os.path.isdir(out):
        raise UsageError(f"--out {out} is a directory; give the PNG file to write")
    if not out.lower().endswith(".png"):
        raise UsageError(f"--out {out}: the overlay is written as PNG; name it .png")
    photo, class_map = segment(args.image, model, preprocessing)
    names = class_names(model.output_shape[-1])
    write_png(overlay(photo, class_map, names), out)
    counts = np.bincount(class_map.ravel(), minlength=len(names))
    lines = [f"{names[c]}: {100 * counts[c] / class_map.size:.1f} %" for c in np.argsort(-counts) if counts[c]]
    return lines + [f"overlay written to {out}"]


def classify(image_path, model, preprocessing, top):
    import keras_lightnets
    from keras_lightnets.image import load_for
    from keras_lightnets.inference import Predictor

    pixels = load_for(image_path, preprocessing)  # the source's own eval transform
    batch = keras_lightnets.preprocess_input(pixels[None], preprocessing["mode"])
    probabilities = Predictor(model)(batch)
    if probabilities.shape[-1] == 1000:
        return keras_lightnets.decode_predictions(probabilities, top=top)[0]
    order = probabilities[0].argsort()[::-1][:top]
    return [(str(i), f"class {i}", float(probabilities[0, i])) for i in order]


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import_tensorflow_quietly()
    from keras_lightnets.image import ImageError, read_image
    from keras_lightnets.weights import WeightsMismatchError

    try:
        if args.top < 1:
            raise UsageError(f"--top must be at least 1, got {args.top}")
        read_image(args.image)  # fail fast, before the model is built
        if args.out is not None and os.path.isdir(args.out):
            raise UsageError(f"--out {args.out} is a directory; give the PNG file to write")
        model, preprocessing = load_model(args.model, args.weights)
        if is_segmentation(model):
            print("\n".join(run_segmentation(args, model, preprocessing)))
            return 0
        if args.out is not None:
            raise UsageError("--out applies to segmentation weights (DeepLabV3+) only")
        predictions = classify(args.image, model, preprocessing, args.top)
    except (UsageError, ImageError, WeightsMismatchError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for rank, (_, label, probability) in enumerate(predictions, start=1):
        print(f"{rank}. {label.replace('_', ' ')}: {probability:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
