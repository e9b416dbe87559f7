"""`lightnets export`: a model as SavedModel or TFLite, checked against Keras.

    lightnets export --model efficientnet_lite0 --format tflite lite0.tflite
    lightnets export --weights mobilenet_v2.h5 --format tflite \\
        --quantize int8 --calibration photos/ --input-dtype uint8 mobilenet_v2_int8.tflite
    lightnets export --weights model.h5 --format savedmodel exported/
"""

import os
import sys

from keras_lightnets.cli.scaffold import run_command

NAME = "export"
DESCRIPTION = "Export a keras-lightnets model to SavedModel or TFLite, checked against Keras."


def add_arguments(parser):
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a model with pretrained weights (e.g. mobilenet_v2, efficientnet_lite0)")
    source.add_argument("--weights", help="a weights file written by `lightnets convert`")
    parser.add_argument("--format", required=True, choices=("savedmodel", "tflite"))
    parser.add_argument("--quantize", default="none", choices=("none", "dynamic", "int8"))
    parser.add_argument("--calibration", help="folder of photos: int8 calibration and checks")
    parser.add_argument("--input-dtype", default="float32", choices=("float32", "uint8"),
                        help="uint8: the model takes RGB pixels, preprocessing built in")
    parser.add_argument("--force", action="store_true", help="replace an existing .tflite file")
    parser.add_argument("--diff-layers", action="store_true",
                        help="compare the TFLite export with the Keras model tensor by tensor "
                        "(the tensors TFLite exposes) and print where they part")
    parser.add_argument("out", help="output .tflite file or SavedModel folder")


def check(args):
    """The request, the pretrained name and the weights record, before TensorFlow starts."""
    from keras_lightnets.catalog import pretrained_source, weights_info
    from keras_lightnets.runtime.export import ExportError, check_request

    check_request(args.out, args.format, args.quantize, args.force, args.diff_layers)
    if args.calibration and not os.path.isdir(args.calibration):
        raise ExportError(f"--calibration {args.calibration}: not a directory")
    if args.model is not None:
        return pretrained_source(args.model), None
    return None, weights_info(args.weights)


def run(args, checked):
    from keras_lightnets.catalog import from_h5, pretrained_file, weights_info
    from keras_lightnets.quiet import import_tensorflow_quietly
    from keras_lightnets.runtime.export import ExportCheckError, export, photo_sets
    from keras_lightnets.runtime.tflite import tflite_bytes

    source, info = checked
    import_tensorflow_quietly()
    weights = args.weights
    if weights is None:
        weights = pretrained_file(source)
        info = weights_info(weights)
    model = from_h5(weights, classifier_activation=None)
    preprocessing = info["preprocessing"]
    calibration, evaluation = photo_sets(args.calibration, args.quantize, preprocessing, model.input_shape[1:3])
    try:
        figures = export(
            model, args.out, args.format, args.quantize, calibration, args.input_dtype, args.force, preprocessing,
            evaluation=evaluation, diff_layers=args.diff_layers,
        )
    except ExportCheckError as err:
        for detail in err.details:  # where the export parts from Keras, before the error line
            print(f"layer diff  {detail}")
        raise
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

        fp32 = len(tflite_bytes(fold_batchnorm(model)))
        line += f", size {figures['bytes'] / fp32:.2f}x fp32"
    print(line)
    for detail in figures.get("layer_diff", []):
        print(f"layer diff  {detail}")


def main(argv=None, prog=None):
    return run_command(sys.modules[__name__], argv, prog)
