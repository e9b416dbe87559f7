"""`python -m convert CHECKPOINT OUT.h5 --arch NAME`: PyTorch checkpoint → Keras weights."""

import argparse
import sys


class _OneLineParser(argparse.ArgumentParser):
    """Usage mistakes get one line and exit status 2, not argparse's usage block."""

    def error(self, message):
        from keras_lightnets.files import usage_error_line

        self.exit(2, usage_error_line(message, "python -m convert --help lists the options") + "\n")


def parse_args(argv):
    from keras_lightnets.conversion.namings import NAMINGS, source_name
    from keras_lightnets.registry import SPECS

    parser = _OneLineParser(
        prog="python -m convert",
        description="Convert a PyTorch checkpoint into a Keras .h5 weights file, without "
        "torch and without running the checkpoint's pickle.",
    )
    parser.add_argument("checkpoint", help="PyTorch checkpoint (.pth/.pt zip or legacy, .safetensors, .npz)")
    parser.add_argument("out", help="Keras weights file to write (.h5)")
    parser.add_argument("--arch", required=True, choices=sorted(SPECS), metavar="NAME",
                        help="architecture: " + ", ".join(SPECS))
    sources = sorted({source_name(name) for name in NAMINGS})
    parser.add_argument("--source", choices=sources, metavar="NAMING",
                        help="checkpoint naming, detected from the keys by default: " + ", ".join(sources))
    parser.add_argument("--num-classes", type=int, help="expected number of classes (checked)")
    parser.add_argument("--output-stride", type=int, choices=(8, 16), help="DeepLab archs only")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--allow-partial", action="store_true",
                        help="write even if checkpoint tensors are unused or Keras weights unset")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="skip the comparison with a PyTorch reference")
    parser.add_argument("--reference", metavar="MODULE:FUNCTION",
                        help="PyTorch reference for the parity check: FUNCTION(spec, builder_kwargs, "
                        "tensors) returns the torch model holding the checkpoint's weights")
    return parser.parse_args(argv)


def main(argv=None):
    from keras_lightnets.files import make_streams_safe, safe_lines, safe_text

    make_streams_safe()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from keras_lightnets.catalog import get_builder
    from keras_lightnets.cli import import_tensorflow_quietly
    from keras_lightnets.conversion.pipeline import ConversionError, convert_checkpoint
    from keras_lightnets.conversion.reader import CheckpointError

    try:
        report = convert_checkpoint(
            args.checkpoint,
            args.out,
            args.arch,
            lambda **kwargs: get_builder(args.arch)(**kwargs),  # TensorFlow starts after the checks
            source=args.source,
            num_classes=args.num_classes,
            output_stride=args.output_stride,
            force=args.force,
            allow_partial=args.allow_partial,
            check=args.check,
            reference=args.reference,
            before_build=import_tensorflow_quietly,
        )
    except (ConversionError, CheckpointError, FileExistsError, OSError) as err:
        print(f"error: {safe_text(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # SIGINT, or SIGTERM during the write: the temp file is gone
        print("error: interrupted; nothing written", file=sys.stderr)
        return 130
    print(safe_lines(report))  # key names are the checkpoint's: escape codes, lone surrogates
    return 0


if __name__ == "__main__":
    sys.exit(main())
