"""`lightnets finetune --weights IN.h5 --data DIR --out OUT.h5`: converted weights trained on your photos."""

import os
import sys

from keras_lightnets.cli.scaffold import run_command

NAME = "finetune"
DESCRIPTION = "Fine-tune a keras-lightnets weights file on a folder of images (or images and masks)."
EPILOG = (
    "Data: DIR/train/<class>/*, DIR/val/<class>/* (classification); DIR/{train,val}/images/* "
    "with DIR/{train,val}/masks/*.png (segmentation, 255 = ignore); or a Pascal VOC folder "
    "(JPEGImages, SegmentationClass, ImageSets/Segmentation/{train,val}.txt). "
    "With TF_CONFIG set, runs as one worker of MultiWorkerMirroredStrategy."
)


def add_arguments(parser):
    parser.epilog = EPILOG
    parser.add_argument("--weights", required=True, help="IN.h5, a file written by the converter or by this command")
    parser.add_argument("--data", required=True, help="the data folder")
    parser.add_argument("--out", required=True, help="OUT.h5 to write (atomically, at the end)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch size (all replicas)")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (momentum 0.9)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replicas", type=int, help="devices to train on: GPUs, else logical CPU devices")
    parser.add_argument("--num-classes", type=int, help="class count (default: from the data)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="model input size")
    parser.add_argument("--freeze-backbone", action="store_true", help="train the head only")
    parser.add_argument("--no-dropout", action="store_true", help="Dropout rate 0 in every Dropout layer")
    parser.add_argument("--force", action="store_true", help="replace OUT.h5 if it exists")
    parser.add_argument("--run-eagerly", action="store_true",
                        help="run each step eagerly, as Keras' `compile(run_eagerly=True)`: for debugging, "
                        "or a few steps on small data (no graph to trace)")


def check(args):
    """Arguments, the data folder's layout and the weights record, before TensorFlow starts."""
    from keras_lightnets.catalog import weights_info
    from keras_lightnets.errors import UsageError
    from keras_lightnets.training.data import IGNORE_LABEL, find_dataset
    from keras_lightnets.training.distribute import tf_config
    from keras_lightnets.weights.record import MAX_SIDE

    for name in ("epochs", "batch_size", "replicas", "num_classes"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.num_classes is not None and args.num_classes >= IGNORE_LABEL:
        raise UsageError(f"--num-classes must be below {IGNORE_LABEL} (the ignore label)")
    if args.image_size is not None and not all(1 <= side <= MAX_SIDE for side in args.image_size):
        raise UsageError(f"--image-size sides must be in [1, {MAX_SIDE}]")
    weights_info(args.weights)
    find_dataset(args.data)
    return tf_config()


def run(args, config):
    from keras_lightnets.quiet import import_tensorflow_quietly
    from keras_lightnets.training.distribute import is_chief, make_strategy
    from keras_lightnets.training.finetune import finetune

    import_tensorflow_quietly()
    import tensorflow as tf

    strategy = make_strategy(args.replicas)
    tf.config.experimental.enable_op_determinism()
    stdout = sys.stdout
    sys.stdout = sys.stderr  # Keras's progress bar goes to stderr; stdout holds the JSON lines
    try:
        finetune(
            args.weights,
            args.data,
            args.out,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            num_classes=args.num_classes,
            image_size=args.image_size,
            freeze_backbone=args.freeze_backbone,
            dropout=not args.no_dropout,
            strategy=strategy,
            stream=stdout,
            force=args.force,
            run_eagerly=args.run_eagerly,
        )
    finally:
        sys.stdout = stdout
    if is_chief(config):
        print(f"written {os.path.abspath(args.out)}", file=sys.stderr)


def main(argv=None, prog=None):
    return run_command(sys.modules[__name__], argv, prog)
