"""Classify or segment a photo with a pretrained light network.

    python demo.py photo.jpg                       # MobileNetV2, torchvision's ImageNet weights
    python demo.py photo.jpg --model mobilenet      # MobileNet, keras.applications' ImageNet file
    python demo.py photo.jpg --model efficientnet_lite0
    python demo.py photo.jpg --model mobilenet_v3_large  # torchvision's IMAGENET1K_V2 weights
    python demo.py photo.jpg --top 3
    python demo.py photo.jpg --weights model.h5     # a file made by `python -m convert`
    python demo.py photo.jpg --model mobilenet_v2 --weights mobilenet_v2.h5
    python demo.py photo.jpg --model deeplabv3plus_mobilenetv2 --weights deeplab.h5 --out overlay.png
    python demo.py photo.jpg --weights lraspp.h5   # torchvision's LR-ASPP, converted

Classifiers print one line per class, best first: rank, label, probability.
Segmentation weights (DeepLabV3+, LR-ASPP, DeepLabV3) write the photo with a colour-coded class
overlay and a legend (Pascal VOC palette) and print each class's pixel share.

Every argument is checked before TensorFlow is imported. A classifier whose
weights are a keras-lightnets file (the converted pretrained ones, or
--weights) runs as a TFLite flatbuffer compiled on the first run and kept in
the pretrained cache (`keras_lightnets.runtime.tflite.load_compiled`): later runs
import neither Keras nor TensorFlow.
"""

import dataclasses
import os
import sys

from keras_lightnets.catalog import DEFAULT_MODEL, pretrained_source
from keras_lightnets.cli.scaffold import run_command
from keras_lightnets.errors import UsageError
from keras_lightnets.quiet import import_tensorflow_quietly

NAME = "demo"
DESCRIPTION = "Classify a photo with a pretrained light network, or segment it."


def add_arguments(parser):
    parser.add_argument("image", help="JPEG, PNG, BMP, GIF, WebP or TIFF file")
    parser.add_argument("--model", help=f"model name (default {DEFAULT_MODEL}: torchvision's weights; "
                        "mobilenet: keras.applications' file; efficientnet_lite0; "
                        "or the one --weights was converted for)")
    parser.add_argument("--weights", help="Keras weights file written by `python -m convert`")
    parser.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    parser.add_argument("--out", help="segmentation only: the overlay PNG to write "
                        "(default IMAGE_segmentation.png in the current folder)")


def weights_record(model_name, weights):
    """The record of a `--weights` file, checked against `--model`."""
    from keras_lightnets.registry import SPECS
    from keras_lightnets.weights.h5 import read_record

    if not os.path.exists(weights):
        raise UsageError(f"{weights}: no such weights file")
    info = read_record(weights)
    if model_name is not None and model_name != info["arch"]:
        raise UsageError(f"{weights} holds {info['arch']} weights, not {model_name}")
    if info["arch"] not in SPECS:
        raise UsageError(f"{weights} is for an unknown model {info['arch']!r}")
    return info


def pretrained_model(name):
    """`(model, record)` of a pretrained `--model` (an arch, an alias or a source)."""
    import keras_lightnets
    from keras_lightnets.catalog import get_builder, pretrained_file
    from keras_lightnets.weights import sources
    source_name = pretrained_source(name)
    source = sources.SOURCES[source_name]
    if isinstance(source, sources.KerasFile):
        # keras.applications' own file: no keras-lightnets record, the builder's defaults
        model = get_builder(source.arch)(weights="imagenet", **source.builder_kwargs)
        return model, {"arch": source.arch, "preprocessing": dict(source.preprocessing)}
    weights = pretrained_file(source_name)
    return keras_lightnets.from_h5(weights), keras_lightnets.weights_info(weights)


def load_model(model_name, weights):
    """Returns `(model, weights record)` for the demo's arguments."""
    import keras_lightnets

    if weights is None:
        return pretrained_model(model_name or DEFAULT_MODEL)
    return keras_lightnets.from_h5(weights), weights_record(model_name, weights)


@dataclasses.dataclass
class Request:
    """What the arguments ask for, checked.

    Attributes:
        task: "classification" or "segmentation".
        weights: a keras-lightnets weights file (`--weights`, or the
            converted pretrained file if the cache holds it), else None.
        source: without `--weights`, the pretrained source's name.
    """

    task: str
    weights: str | None
    source: str | None = None


def check_request(args):
    """Checks every argument without importing Keras or TensorFlow.

    Raises:
        UsageError, ImageError, WeightsMismatchError: one-line messages.
    """
    from keras_lightnets.files import check_output_path
    from keras_lightnets.preprocessing.image import read_image
    from keras_lightnets.registry import SPECS
    from keras_lightnets.weights import cache, sources

    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    read_image(args.image)
    if args.weights is not None:
        info = weights_record(args.model, args.weights)
        request = Request(SPECS[info["arch"]].task, args.weights)
    else:
        source_name = pretrained_source(args.model or DEFAULT_MODEL)
        task = SPECS[sources.SOURCES[source_name].arch].task
        request = Request(task, cache.cached_weights(source_name), source_name)
    if request.task != "segmentation":
        if args.out is not None:
            raise UsageError("--out applies to segmentation weights only")
        return request
    out = check_output_path(overlay_path(args))
    if not out.lower().endswith(".png"):
        raise UsageError(f"--out {out}: the overlay is written as PNG; name it .png")
    return request


def overlay(photo, class_map, names, opacity=0.5):
    """The photo blended with the class colours, with a legend of the classes present."""
    import numpy as np
    from PIL import Image, ImageDraw

    from keras_lightnets.labels import voc_palette

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
    """Writes the overlay atomically: a failed run leaves no partial file."""
    from keras_lightnets.files import write_atomically

    write_atomically(path, lambda temp: image.save(temp, format="PNG"))


def overlay_path(args):
    return args.out or f"{os.path.splitext(os.path.basename(args.image))[0]}_segmentation.png"


def run_segmentation(args, model, record):
    import numpy as np

    from keras_lightnets.labels import labels_for
    from keras_lightnets.preprocessing.image import read_image
    from keras_lightnets.runtime.predictor import Predictor
    from keras_lightnets.runtime.segmentation import segment

    out = overlay_path(args)
    img = read_image(args.image)
    class_map = segment(img, Predictor(model), record["preprocessing"])
    photo = np.asarray(img)
    names = labels_for(record, model.output_shape[-1])
    write_png(overlay(photo, class_map, names), out)
    counts = np.bincount(class_map.ravel(), minlength=len(names))
    lines = [f"{names[c]}: {100 * counts[c] / class_map.size:.1f} %" for c in np.argsort(-counts) if counts[c]]
    return lines + [f"overlay written to {out}"]


def image_batch(image_path, preprocessing):
    """The photo as the weights' eval transform prescribes, a batch of one (numpy only)."""
    from keras_lightnets.preprocessing import preprocess_input
    from keras_lightnets.preprocessing.image import load_for

    pixels = load_for(image_path, preprocessing)
    return preprocess_input(pixels[None], preprocessing)


def top_classes(probabilities, top, record):
    """`[(class id, label, probability)]` of the first image, best first."""
    from keras_lightnets import labels

    return labels.top_classes(probabilities[0], record, top)


def classify(image_path, model, record, top):
    from keras_lightnets.runtime.predictor import Predictor

    return top_classes(Predictor(model)(image_batch(image_path, record["preprocessing"])), top, record)


def classify_compiled(image_path, weights, record, top):
    """Classifies with the flatbuffer compiled from the keras-lightnets file
    `weights`, compiling and keeping it on the first run."""
    from keras_lightnets.runtime.tflite import load_compiled, save_compiled
    from keras_lightnets.weights.h5 import sha256_of

    preprocessing = record["preprocessing"]
    size = (preprocessing["size"],) * 2 if preprocessing.get("size") else None
    batch = image_batch(image_path, preprocessing)
    digest = sha256_of(weights)
    # the compiled entry is bound to the arch and the file's sha256, and must give the record's classes
    classes = record["builder_kwargs"].get("classes")
    runner = load_compiled(weights, size, record["arch"], classes, weights_digest=digest) if size else None
    if runner is not None:
        return top_classes(runner(batch), top, record)
    import_tensorflow_quietly()
    import keras_lightnets
    from keras_lightnets.runtime.predictor import Predictor

    predictor = Predictor(keras_lightnets.from_h5(weights))
    probabilities = predictor(batch)
    if predictor.flatbuffer is not None and tuple(predictor.inference_model.input_shape[1:3]) == size:
        try:
            save_compiled(weights, size, predictor.flatbuffer, record["arch"], weights_digest=digest)
        except OSError as err:  # the answer stands; the next run compiles again
            print(f"warning: the compiled model was not kept ({err})", file=sys.stderr)
    return top_classes(probabilities, top, record)


def predictions_for(args, request):
    """The top classes for a classifier request."""
    from keras_lightnets.catalog import get_builder
    from keras_lightnets.weights import pretrained, sources
    from keras_lightnets.weights.h5 import read_record

    weights = request.weights
    if weights is None:
        # Found (cache, installed package, download) before TensorFlow starts:
        # "not available offline" is said in a second, not after seven.
        source = sources.SOURCES[request.source]
        weights = pretrained.pretrained_weights(
            request.source,
            build=lambda **kwargs: get_builder(source.arch)(**kwargs),  # the builder's module imports Keras
            before_build=import_tensorflow_quietly,
        )
        if isinstance(source, sources.KerasFile):
            import_tensorflow_quietly()
            model, record = pretrained_model(request.source)
            return classify(args.image, model, record, args.top)
    return classify_compiled(args.image, weights, read_record(weights), args.top)


def check(args):
    return check_request(args)


def run(args, request):
    if request.task == "segmentation":
        import_tensorflow_quietly()
        model, record = load_model(args.model, args.weights)
        print("\n".join(run_segmentation(args, model, record)))
        return
    for rank, (_, label, probability) in enumerate(predictions_for(args, request), start=1):
        print(f"{rank}. {label.replace('_', ' ')}: {probability:.4f}")


def main(argv=None, prog=None):
    return run_command(sys.modules[__name__], argv, prog)
