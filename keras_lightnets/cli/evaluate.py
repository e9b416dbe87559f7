"""`lightnets evaluate DIR --weights W.h5`: accuracy of a weights file on labelled photos.

    lightnets evaluate photos/ --weights mobilenet_v2.h5 --runtimes keras,tflite,int8 --limit 5000

Prints a progress bar on stderr, then one table row per runtime and one
JSON line per runtime (`{"runtime": ..., "images": ..., "top1": ..., "top5": ...}`;
segmentation: `"miou"`, `"pixel_accuracy"`) on stdout. The folder layouts
are `keras_lightnets.runtime.evaluate`'s.
"""

import json
import os
import sys

from keras_lightnets.cli.scaffold import run_command

NAME = "evaluate"
DESCRIPTION = (
    "Top-1 and top-5 (or mIoU) of a keras-lightnets weights file on labelled photos: class "
    "sub-folders, an ImageNet-val folder with a labels file, or images/ + masks/."
)


def add_arguments(parser):
    parser.add_argument("folder", help="labelled photos: class sub-folders (synset id, class name or index), "
                        "a flat folder with a labels file, or images/ + masks/ (segmentation)")
    parser.add_argument("--weights", required=True, help="a .h5 file written by the converter or the fine-tuner")
    parser.add_argument("--runtimes", default="keras",
                        help="comma-separated, of keras (the Keras model), tflite (fp32 TFLite), "
                        "int8 (TFLite calibrated on a held-out tenth of the folder); default keras")
    parser.add_argument("--limit", type=int, help="score at most N photos, spread over the folder")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--labels", help="labels file of a flat folder (default: the one .txt/.csv in it)")
    return parser


def check(args):
    """The arguments, the weights record and the folder, without TensorFlow;
    returns `(record, samples, runtimes)`."""
    from keras_lightnets.catalog import weights_info
    from keras_lightnets.errors import UsageError
    from keras_lightnets.runtime.evaluate import RUNTIMES, find_samples

    runtimes = list(dict.fromkeys(r.strip() for r in str(args.runtimes).split(",") if r.strip()))
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if not runtimes or unknown:
        raise UsageError(f"--runtimes {args.runtimes}: choose from {', '.join(RUNTIMES)}")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {args.limit}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not os.path.isfile(args.weights):
        raise UsageError(f"{args.weights}: no such weights file")
    record = weights_info(args.weights)
    samples = find_samples(args.folder, record, args.labels)
    if samples.task == "segmentation" and "int8" in runtimes:
        raise UsageError("--runtimes int8 applies to classification weights (DeepLab takes photos at any size)")
    return record, samples, runtimes


def run(args, checked):
    evaluate_and_print(args, checked)


def evaluate_and_print(args, checked, out=None, err=None):
    """Evaluates, prints the table and JSON lines on `out` (stdout), the
    progress and skipped files on `err` (stderr); returns the
    `keras_lightnets.runtime.evaluate.Result`s."""
    from keras_lightnets.files import safe_text
    from keras_lightnets.quiet import import_tensorflow_quietly
    from keras_lightnets.runtime import evaluate

    out, err = out or sys.stdout, err or sys.stderr
    record, samples, runtimes = checked
    scored, calibration = evaluate.split_calibration(len(samples.paths), args.limit, "int8" in runtimes)
    import_tensorflow_quietly()
    from keras_lightnets.catalog import from_h5

    model = from_h5(args.weights)
    preprocessing = record.get("preprocessing") or {}
    on_skip = lambda message: print(f"skipped: {safe_text(message)}", file=err, flush=True)  # noqa: E731
    if samples.task == "segmentation":
        results, skipped = evaluate.evaluate_segmentation(
            model, preprocessing, samples, scored, runtimes, on_skip=on_skip
        )
    else:
        results, skipped = evaluate.evaluate_classification(
            model, preprocessing, samples, scored, calibration, runtimes, args.batch_size, on_skip=on_skip
        )
    if calibration and "int8" in runtimes:
        print(f"int8 calibrated on {len(calibration)} held-out photos, which no runtime is scored on", file=err)
    for line in evaluate.table(results, samples.task):
        print(line, file=out)
    for result in results:
        print(json.dumps(result.json(os.path.abspath(args.weights), len(skipped))), file=out)
    return results


def main(argv=None, prog=None):
    return run_command(sys.modules[__name__], argv, prog)
