"""`python -m convert CHECKPOINT OUT.h5 --arch NAME`: PyTorch checkpoint → Keras weights."""

import argparse
import sys


def parse_args(argv):
    from convert.archs import ARCHS
    from convert.sources import NAMINGS

    parser = argparse.ArgumentParser(
        prog="python -m convert",
        description="Convert a PyTorch checkpoint into a Keras .h5 weights file, without "
        "torch and without running the checkpoint's pickle.",
    )
    parser.add_argument("checkpoint", help="PyTorch checkpoint (.pth/.pt zip or legacy, .safetensors, .npz)")
    parser.add_argument("out", help="Keras weights file to write (.h5)")
    parser.add_argument("--arch", required=True, choices=sorted(ARCHS), metavar="NAME",
                        help="architecture: " + ", ".join(ARCHS))
    parser.add_argument("--source", choices=sorted(NAMINGS), metavar="NAMING",
                        help="checkpoint naming, detected from the keys by default: " + ", ".join(NAMINGS))
    parser.add_argument("--num-classes", type=int, help="expected number of classes (checked)")
    parser.add_argument("--output-stride", type=int, choices=(8, 16), help="DeepLab archs only")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--allow-partial", action="store_true",
                        help="write even if checkpoint tensors are unused or Keras weights unset")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="skip the comparison with an installed PyTorch reference")
    return parser.parse_args(argv)


def main(argv=None):
    from keras_lightnets.cli import import_tensorflow_quietly

    import_tensorflow_quietly()  # the arch table imports the Keras builders
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from convert.converter import ConversionError, convert_checkpoint
    from convert.reader import CheckpointError

    try:
        report = convert_checkpoint(
            args.checkpoint,
            args.out,
            args.arch,
            source=args.source,
            num_classes=args.num_classes,
            output_stride=args.output_stride,
            force=args.force,
            allow_partial=args.allow_partial,
            check=args.check,
        )
    except (ConversionError, CheckpointError, FileExistsError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
