"""Classify a photo with a pretrained light network.

    python demo.py photo.jpg                       # EfficientNet-Lite0, ImageNet
    python demo.py photo.jpg --top 3
    python demo.py photo.jpg --weights model.h5     # a file made by `python -m convert`
    python demo.py photo.jpg --model mobilenet_v2 --weights mobilenet_v2.h5

Prints one line per class, best first: rank, label, probability.
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


def classify(image_path, model, preprocessing, top):
    import keras_lightnets
    from keras_lightnets.image import load_image

    pixels = load_image(
        image_path,
        size=preprocessing["size"],
        crop_fraction=preprocessing["crop_fraction"],
        resample=preprocessing["resample"],
    )
    batch = keras_lightnets.preprocess_input(pixels[None], preprocessing["mode"])
    probabilities = model.predict_on_batch(batch)
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
        model, preprocessing = load_model(args.model, args.weights)
        predictions = classify(args.image, model, preprocessing, args.top)
    except (UsageError, ImageError, WeightsMismatchError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for rank, (_, label, probability) in enumerate(predictions, start=1):
        print(f"{rank}. {label.replace('_', ' ')}: {probability:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
