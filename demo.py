"""Classify or segment a photo with a pretrained light network.

    python demo.py photo.jpg                       # EfficientNet-Lite0, ImageNet
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

DEFAULT_MODEL = "efficientnet_lite0"


class UsageError(Exception):
    """A user mistake: reported in one line, exit status 2."""


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Classify a photo with a pretrained light network.")
    parser.add_argument("image", help="JPEG, PNG, BMP, GIF, WebP or TIFF file")
    parser.add_argument("--model", help=f"model name (default {DEFAULT_MODEL}, or the one --weights was converted for)")
    parser.add_argument("--weights", help="Keras weights file written by `python -m convert`")
    parser.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    parser.add_argument("--out", help="segmentation only: the overlay PNG to write "
                        "(default IMAGE_segmentation.png in the current folder)")
    return parser.parse_args(argv)


def load_model(model_name, weights):
    """Returns `(model, preprocessing)` for the demo's arguments."""
    import convert.archs
    import keras_lightnets
    from keras_lightnets.weights import PRETRAINED, pretrained_weights

    if weights is None:
        name = model_name or DEFAULT_MODEL
        if name not in PRETRAINED:
            raise UsageError(
                f"no offline pretrained weights for {name!r} (available: {', '.join(PRETRAINED)}); "
                "convert a checkpoint with `python -m convert` and pass --weights"
            )
        weights = pretrained_weights(name)
    if not os.path.isfile(weights):
        raise UsageError(f"{weights}: no such weights file")
    info = keras_lightnets.weights_info(weights)
    if model_name is not None and model_name != info["arch"]:
        raise UsageError(f"{weights} holds {info['arch']} weights, not {model_name}")
    if info["arch"] not in convert.archs.ARCHS:
        raise UsageError(f"{weights} is for an unknown model {info['arch']!r}")
    return keras_lightnets.from_h5(weights), info["preprocessing"]


def is_segmentation(model):
    return len(model.output_shape) == 4


def segment(image_path, model, preprocessing):
    """Returns `(photo as uint8 HxWx3, class map HxW)` at the photo's own size."""
    import numpy as np

    import keras_lightnets
    from keras_lightnets.image import read_image
    from keras_lightnets.inference import Predictor

    pixels = np.asarray(read_image(image_path), dtype="float32")
    batch = keras_lightnets.preprocess_input(pixels[None], preprocessing["mode"])
    logits = Predictor(model)(batch)
    return pixels.astype("uint8"), logits[0].argmax(-1)


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
    from keras_lightnets.image import load_image
    from keras_lightnets.inference import Predictor

    pixels = load_image(
        image_path,
        size=preprocessing["size"],
        crop_fraction=preprocessing["crop_fraction"],
        resample=preprocessing["resample"],
    )
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
