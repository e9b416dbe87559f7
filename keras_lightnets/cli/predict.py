"""`lightnets predict DIR --weights W.h5 --out results.jsonl`: every photo of a folder predicted."""

import sys

from keras_lightnets.cli.scaffold import run_command

NAME = "predict"
DESCRIPTION = (
    "Predict every image under a folder with a keras-lightnets weights file; one JSON line per "
    "image (class maps as PNGs for segmentation weights). Resumable: files already in OUT are skipped."
)


def add_arguments(parser):
    parser.add_argument("folder", help="folder of images (searched recursively)")
    parser.add_argument("--weights", required=True, help="a .h5 file written by the converter or the fine-tuner")
    parser.add_argument("--out", required=True, help="results.jsonl (appended to; files already there are skipped)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--top", type=int, default=5, help="classes per image (classification)")


def check(args):
    import os

    from keras_lightnets.catalog import weights_info
    from keras_lightnets.errors import UsageError
    from keras_lightnets.files import check_output_path, list_images
    from keras_lightnets.runtime.folder import read_results

    if args.batch_size < 1 or args.top < 1:
        raise UsageError("--batch-size and --top must be at least 1")
    if not os.path.isdir(args.folder):
        raise UsageError(f"{args.folder}: no such folder")
    if not list_images(args.folder, on_skip=lambda path, message: None):  # the run reports them
        raise UsageError(f"{args.folder}: no images")
    check_output_path(args.out)
    weights_info(args.weights)
    read_results(check_output_path(args.out))  # an --out that is not a results file: refused, untouched


def run(args, checked):
    from keras_lightnets.quiet import import_tensorflow_quietly
    from keras_lightnets.runtime.folder import predict_folder

    import_tensorflow_quietly()
    predicted, skipped = predict_folder(args.folder, args.weights, args.out, args.batch_size, args.top)
    print(f"{predicted} images predicted, {len(skipped)} skipped -> {args.out}", file=sys.stderr)


def main(argv=None, prog=None):
    return run_command(sys.modules[__name__], argv, prog)
