"""`lightnets export`: a model as TFLite (ready for MediaPipe), ONNX or SavedModel, checked against Keras.

    lightnets export --weights mobilenet_v2.h5 --format tflite mobilenet_v2.tflite
    lightnets export --weights mobilenet_v2.h5 --format tflite --quantize fp16 mobilenet_v2_fp16.tflite
    lightnets export --weights mobilenet_v2.h5 --format onnx mobilenet_v2.onnx
    lightnets export --weights deeplab.h5 --format tflite --size 384x512 deeplab.tflite
    lightnets export --weights deeplab.h5 --format onnx --free-size deeplab.onnx
    lightnets export --model efficientnet_lite0 --format tflite --quantize int8 [--calibration photos/] lite0_int8.tflite

See `keras_lightnets.runtime.export` for what each file holds.
"""

import argparse
import os
import sys

from keras_lightnets.cli.scaffold import run_command

NAME = "export"
DESCRIPTION = (
    "Export a keras-lightnets model to TFLite (with labels and image metadata: MediaPipe's ImageClassifier "
    "and ImageSegmenter load it as it is), ONNX or SavedModel, checked against Keras."
)
DEFAULT_SEGMENTER_SIZE = 512


def add_arguments(parser):
    from keras_lightnets.runtime.export import FORMATS, INPUT_DTYPES, QUANTIZATIONS

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a model with pretrained weights (e.g. mobilenet_v2, efficientnet_lite0)")
    source.add_argument("--weights", help="a weights file written by `lightnets convert`")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--quantize", default="none", choices=QUANTIZATIONS, help="TFLite only")
    parser.add_argument("--calibration", help="folder of photos: int8 calibration and checks "
                        "(default for int8: the shipped photos)")
    parser.add_argument(
        "--input-dtype", default="auto", choices=INPUT_DTYPES,
        help="uint8: the model takes RGB pixels, preprocessing built in; float32: the preprocessed tensor, "
        "like the Keras model; auto (default): float32, or for TFLite uint8 when MediaPipe's metadata "
        "cannot express the weights' normalisation (per-channel mean/std, BGR)",
    )
    parser.add_argument("--size", type=parse_size, metavar="SIZE|HEIGHTxWIDTH",
                        help=f"input size (default: the weights' own; for a segmenter without one, its "
                        f"shorter-side resize (torchvision's: 520) or {DEFAULT_SEGMENTER_SIZE})")
    parser.add_argument("--free-size", action="store_true",
                        help="segmenters: free input height and width (TFLite, ONNX Runtime); MediaPipe cannot "
                        "take free sizes, so the TFLite file gets no MediaPipe metadata")
    parser.add_argument("--no-metadata", action="store_true", help="TFLite without labels and MediaPipe metadata")
    parser.add_argument("--force", action="store_true", help="replace an existing .tflite or .onnx file")
    parser.add_argument("--diff-layers", action="store_true",
                        help="compare the TFLite export with the Keras model tensor by tensor "
                        "(the tensors TFLite exposes) and print where they part")
    parser.add_argument("out", help="output .tflite or .onnx file, or SavedModel folder")


def parse_size(text):
    """`"512"` or `"480x640"` (height x width) as `(height, width)`."""
    try:
        sides = tuple(int(side) for side in text.lower().split("x"))
    except ValueError:
        sides = ()
    if len(sides) not in (1, 2) or min(sides) < 32:
        raise argparse.ArgumentTypeError(f"{text!r}: SIZE or HEIGHTxWIDTH, each at least 32")
    return sides[0], sides[-1]


def check(args):
    """The request, the pretrained name and the weights record, before TensorFlow starts.

    Returns `(pretrained source name or None, weights record or None)`."""
    from keras_lightnets import registry
    from keras_lightnets.catalog import pretrained_source, weights_info
    from keras_lightnets.runtime.export import ExportError, check_request

    if args.calibration and not os.path.isdir(args.calibration):
        raise ExportError(f"--calibration {args.calibration}: not a directory")
    if args.model is not None:
        from keras_lightnets.weights.pretrained import SOURCES

        source, record = pretrained_source(args.model), None
        preprocessing = SOURCES[source].preprocessing
        task = registry.get_spec(SOURCES[source].arch).task
    else:
        source, record = None, weights_info(args.weights)
        preprocessing, task = record.get("preprocessing"), registry.task_of(record)
    check_request(
        args.out, args.format, args.quantize, args.force, args.input_dtype, preprocessing, not args.no_metadata,
        args.free_size, task, args.diff_layers,
    )
    return source, record


def input_size(args, record):
    """`(height, width)` to export at, or None for the builder's own size."""
    if args.size:
        return args.size
    from keras_lightnets import registry

    if registry.task_of(record) == "segmentation":
        preprocessing = record.get("preprocessing") or {}
        resize = preprocessing.get("resize")
        # torchvision's segmenters meet photos at a shorter side of 520: the square they export at
        size = preprocessing.get("size") or (resize if isinstance(resize, int) else DEFAULT_SEGMENTER_SIZE)
        return (size, size)
    return None


def run(args, checked):
    from keras_lightnets.catalog import from_h5, pretrained_file, weights_info
    from keras_lightnets.labels import labels_for
    from keras_lightnets.quiet import import_tensorflow_quietly
    from keras_lightnets.runtime.export import ExportCheckError, export, photo_sets

    source, record = checked
    import_tensorflow_quietly()
    weights = args.weights
    if weights is None:
        weights = pretrained_file(source)
        record = weights_info(weights)
    size = input_size(args, record)
    overrides = {}
    if args.free_size:
        overrides["input_shape"] = (None, None, 3)
    elif size is not None:
        overrides["input_shape"] = (*size, 3)
    model = from_h5(weights, **overrides)
    size = size or tuple(model.input_shape[1:3])
    preprocessing = record["preprocessing"]
    calibration, evaluation = photo_sets(args.calibration, args.quantize, preprocessing, size)
    labels = None if args.no_metadata or args.format != "tflite" else labels_for(record, model.output_shape[-1])
    try:
        figures = export(
            model, args.out, args.format, args.quantize, calibration, args.input_dtype, args.force, preprocessing,
            labels, args.free_size, size, evaluation=evaluation, diff_layers=args.diff_layers,
        )
    except ExportCheckError as err:
        for detail in err.details:  # where the export parts from Keras, before the error line
            print(f"layer diff  {detail}")
        raise
    report(args, model, figures)


def report(args, model, figures):
    line = (
        f"wrote {args.out} ({figures['bytes'] / 1e6:.1f} MB): max |Δ| vs Keras "
        f"{figures['max_abs_diff']:.2e} on {figures['samples']} inputs"
    )
    if "top1_agreement" in figures:
        line += f", top-1 agreement {figures['top1_agreement']:.1%}"
    if "float_ops" in figures:
        line += f", float ops: {', '.join(sorted(set(figures['float_ops']))) or 'none'}"
    if args.quantize != "none":
        from keras_lightnets.runtime.folding import fold_batchnorm
        from keras_lightnets.runtime.tflite import tflite_bytes

        fp32 = len(tflite_bytes(fold_batchnorm(model)))
        line += f", size {figures['bytes'] / fp32:.2f}x fp32"
    print(line)
    for detail in figures.get("layer_diff", []):
        print(f"layer diff  {detail}")
    height, width = figures["input_shape"][1:3]
    shape = "free height and width" if height is None else f"{height}x{width}"
    print(f"input           {figures['input_dtype']}, {shape}")
    if "metadata" in figures:
        print(f"metadata        {figures['metadata']}")
        if len(model.output_shape) == 4:
            print("note            MediaPipe takes fixed input sizes only; --free-size exports for other runtimes")
    elif args.free_size and args.format == "tflite":
        print("note            no MediaPipe metadata: MediaPipe cannot take free input sizes")


def main(argv=None, prog=None):
    return run_command(sys.modules[__name__], argv, prog)
