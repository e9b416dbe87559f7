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

Every argument is checked before TensorFlow is imported. A classifier whose
weights are a keras-lightnets file (the converted pretrained ones, or
--weights) runs as a TFLite flatbuffer compiled on the first run and kept in
the pretrained cache (`keras_lightnets.runtime.tflite.load_compiled`): later runs
import neither Keras nor TensorFlow.
"""

import argparse
import dataclasses
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


def pretrained_source(name):
    """The name of the pretrained source a `--model` (an arch, an alias or a source) stands for."""
    from keras_lightnets.registry import SPECS
    from keras_lightnets.weights import pretrained

    source_name = MODEL_ALIASES.get(name, name)
    if source_name in SPECS and SPECS[source_name].pretrained:
        source_name = SPECS[source_name].pretrained[0]
    if source_name not in pretrained.SOURCES:
        available = [arch for arch, spec in SPECS.items() if spec.pretrained] + list(MODEL_ALIASES)
        raise UsageError(
            f"no pretrained weights for {name!r} (available: {', '.join(available)}); "
            "convert a checkpoint with `python -m convert` and pass --weights"
        )
    return source_name


def weights_record(model_name, weights):
    """The record of a `--weights` file, checked against `--model`."""
    from keras_lightnets.registry import SPECS
    from keras_lightnets.weights.h5 import read_record

    if not os.path.isfile(weights):
        raise UsageError(f"{weights}: no such weights file")
    info = read_record(weights)
    if model_name is not None and model_name != info["arch"]:
        raise UsageError(f"{weights} holds {info['arch']} weights, not {model_name}")
    if info["arch"] not in SPECS:
        raise UsageError(f"{weights} is for an unknown model {info['arch']!r}")
    return info


def pretrained_model(name):
    """`(model, preprocessing)` of a pretrained `--model` (an arch, an alias or a source)."""
    import keras_lightnets
    from keras_lightnets.catalog import get_builder, pretrained_file
    from keras_lightnets.weights import pretrained

    source_name = pretrained_source(name)
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

    if weights is None:
        return pretrained_model(model_name or DEFAULT_MODEL)
    info = weights_record(model_name, weights)
    return keras_lightnets.from_h5(weights), info["preprocessing"]


@dataclasses.dataclass
class Request:
    """What the arguments ask for, checked.

    Attributes:
        task: "classification" or "segmentation".
        weights: a keras-lightnets weights file (`--weights`, or the
            converted pretrained file if the cache holds it), else None.
        preprocessing: that file's eval transform (None without a file).
        source: without `--weights`, the pretrained source's name.
    """

    task: str
    weights: str | None
    preprocessing: dict | None
    source: str | None = None


def check_request(args):
    """Checks every argument without importing Keras or TensorFlow.

    Raises:
        UsageError, ImageError, WeightsMismatchError: one-line messages.
    """
    from keras_lightnets.preprocessing.image import read_image
    from keras_lightnets.registry import SPECS
    from keras_lightnets.weights import pretrained
    from keras_lightnets.weights.h5 import read_record

    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    read_image(args.image)
    if args.weights is not None:
        info = weights_record(args.model, args.weights)
        request = Request(SPECS[info["arch"]].task, args.weights, info["preprocessing"])
    else:
        source_name = pretrained_source(args.model or DEFAULT_MODEL)
        weights = pretrained.cached_weights(source_name)
        preprocessing = read_record(weights)["preprocessing"] if weights else None
        task = SPECS[pretrained.SOURCES[source_name].arch].task
        request = Request(task, weights, preprocessing, source_name)
    if args.out is not None and os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} is a directory; give the PNG file to write")
    if request.task != "segmentation":
        if args.out is not None:
            raise UsageError("--out applies to segmentation weights (DeepLabV3+) only")
        return request
    out = overlay_path(args)
    if not out.lower().endswith(".png"):
        raise UsageError(f"--out {out}: the overlay is written as PNG; name it .png")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise UsageError(f"{folder}: no such directory for --out")
    return request


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
    from keras_lightnets.preprocessing.image import letterbox, read_image
    from keras_lightnets.runtime.folding import Predictor

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

    from keras_lightnets.models.deeplab import voc_palette

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
    from keras_lightnets.models.deeplab import VOC_CLASSES

    return list(VOC_CLASSES) if classes == len(VOC_CLASSES) else [f"class {i}" for i in range(classes)]


def overlay_path(args):
    return args.out or f"{os.path.splitext(os.path.basename(args.image))[0]}_segmentation.png"


def run_segmentation(args, model, preprocessing):
    import numpy as np

    out = overlay_path(args)
    photo, class_map = segment(args.image, model, preprocessing)
    names = class_names(model.output_shape[-1])
    write_png(overlay(photo, class_map, names), out)
    counts = np.bincount(class_map.ravel(), minlength=len(names))
    lines = [f"{names[c]}: {100 * counts[c] / class_map.size:.1f} %" for c in np.argsort(-counts) if counts[c]]
    return lines + [f"overlay written to {out}"]


def image_batch(image_path, preprocessing):
    """The photo as the weights' eval transform prescribes, a batch of one (numpy only)."""
    from keras_lightnets.preprocessing import preprocess_input
    from keras_lightnets.preprocessing.image import load_for

    pixels = load_for(image_path, preprocessing)
    return preprocess_input(pixels[None], preprocessing["mode"])


def top_classes(probabilities, top):
    """`[(class id, label, probability)]` of the first image, best first."""
    from keras_lightnets.labels import decode_predictions

    if probabilities.shape[-1] == 1000:
        return decode_predictions(probabilities, top=top)[0]
    order = probabilities[0].argsort()[::-1][:top]
    return [(str(i), f"class {i}", float(probabilities[0, i])) for i in order]


def classify(image_path, model, preprocessing, top):
    from keras_lightnets.runtime.folding import Predictor

    return top_classes(Predictor(model)(image_batch(image_path, preprocessing)), top)


def classify_compiled(image_path, weights, preprocessing, top):
    """Classifies with the flatbuffer compiled from the keras-lightnets file
    `weights`, compiling and keeping it on the first run."""
    from keras_lightnets.runtime.tflite import load_compiled, save_compiled
    from keras_lightnets.weights.h5 import sha256_of

    size = (preprocessing["size"],) * 2 if preprocessing.get("size") else None
    batch = image_batch(image_path, preprocessing)
    digest = sha256_of(weights)
    runner = load_compiled(weights, size, weights_digest=digest) if size else None
    if runner is not None:
        return top_classes(runner(batch), top)
    import_tensorflow_quietly()
    import keras_lightnets
    from keras_lightnets.runtime.folding import Predictor

    predictor = Predictor(keras_lightnets.from_h5(weights))
    probabilities = predictor(batch)
    if predictor.flatbuffer is not None and tuple(predictor.inference_model.input_shape[1:3]) == size:
        try:
            save_compiled(weights, size, predictor.flatbuffer, weights_digest=digest)
        except OSError as err:  # the answer stands; the next run compiles again
            print(f"warning: the compiled model was not kept ({err})", file=sys.stderr)
    return top_classes(probabilities, top)


def predictions_for(args, request):
    """The top classes for a classifier request."""
    from keras_lightnets.catalog import get_builder
    from keras_lightnets.weights import pretrained
    from keras_lightnets.weights.h5 import read_record

    weights, preprocessing = request.weights, request.preprocessing
    if weights is None:
        # Found (cache, installed package, download) before TensorFlow starts:
        # "not available offline" is said in a second, not after seven.
        source = pretrained.SOURCES[request.source]
        weights = pretrained.pretrained_weights(
            request.source,
            build=lambda **kwargs: get_builder(source.arch)(**kwargs),  # the builder's module imports Keras
            before_build=import_tensorflow_quietly,
        )
        if isinstance(source, pretrained.KerasFile):
            import_tensorflow_quietly()
            model, preprocessing = pretrained_model(request.source)
            return classify(args.image, model, preprocessing, args.top)
        preprocessing = read_record(weights)["preprocessing"]
    return classify_compiled(args.image, weights, preprocessing, args.top)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from keras_lightnets.preprocessing.image import ImageError
    from keras_lightnets.weights.h5 import WeightsMismatchError

    try:
        request = check_request(args)  # fail fast, before TensorFlow and the model
        if request.task == "segmentation":
            import_tensorflow_quietly()
            model, preprocessing = load_model(args.model, args.weights)
            print("\n".join(run_segmentation(args, model, preprocessing)))
            return 0
        predictions = predictions_for(args, request)
    except (UsageError, ImageError, WeightsMismatchError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for rank, (_, label, probability) in enumerate(predictions, start=1):
        print(f"{rank}. {label.replace('_', ' ')}: {probability:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
