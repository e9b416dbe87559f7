"""`lightnets convert CHECKPOINT OUT.h5 [--arch NAME]`: a PyTorch checkpoint into Keras weights."""

import sys

from keras_lightnets.cli.scaffold import run_command

NAME = "convert"
DESCRIPTION = (
    "Convert a PyTorch checkpoint into a Keras .h5 weights file, without torch and without "
    "running the checkpoint's pickle; the result is checked against a PyTorch reference when "
    "torch is installed."
)


def add_arguments(parser):
    from keras_lightnets.conversion.namings import NAMINGS, source_name
    from keras_lightnets.registry import SPECS

    parser.add_argument("checkpoint", help="PyTorch checkpoint (.pth/.pt zip or legacy, .safetensors, .npz), "
                        "or a Hugging Face snapshot folder (model.safetensors or pytorch_model.bin + config.json)")
    parser.add_argument("out", help="Keras weights file to write (.h5)")
    parser.add_argument("--arch", default="auto", choices=["auto", *sorted(SPECS)], metavar="NAME",
                        help="architecture, or auto (the default): inferred from the checkpoint's keys and "
                        "shapes, the report says how; one of " + ", ".join(SPECS))
    sources = sorted({source_name(name) for name in NAMINGS})
    parser.add_argument("--source", choices=sources, metavar="NAMING",
                        help="checkpoint naming, detected from the keys by default: " + ", ".join(sources))
    parser.add_argument("--num-classes", type=int, help="expected number of classes (checked)")
    parser.add_argument("--output-stride", type=int, choices=(8, 16), help="DeepLab archs only")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--allow-partial", action="store_true",
                        help="write even if checkpoint tensors are unused or Keras weights unset")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="skip the comparison with the PyTorch reference (made whenever torch is installed)")
    parser.add_argument("--reference", metavar="MODULE:FUNCTION",
                        help="PyTorch reference for the parity check: FUNCTION(spec, builder_kwargs, "
                        "tensors) returns the torch model holding the checkpoint's weights")
    parser.add_argument("--diff-layers", action="store_true",
                        help="compare the Keras model with the PyTorch reference layer by layer and "
                        "print where they diverge (also when the parity check refuses the conversion)")


def check(args):
    """The conversion checks its own input (the checkpoint is read before TensorFlow starts)."""


def run(args, checked):
    from keras_lightnets.catalog import get_builder
    from keras_lightnets.conversion.pipeline import ParityError, convert_checkpoint
    from keras_lightnets.files import safe_lines
    from keras_lightnets.quiet import import_tensorflow_quietly

    try:
        report = convert_checkpoint(
            args.checkpoint,
            args.out,
            args.arch,
            None,
            source=args.source,
            num_classes=args.num_classes,
            output_stride=args.output_stride,
            force=args.force,
            allow_partial=args.allow_partial,
            check=args.check,
            reference=args.reference,
            before_build=import_tensorflow_quietly,
            diff_layers=args.diff_layers,
            builder_for=get_builder,  # called once the arch is known; TensorFlow starts after the checks
        )
    except ParityError as err:
        if err.details:  # --diff-layers: where the two models part, before the error line
            print(safe_lines("\n".join(f"layer diff      {line}" for line in err.details)))
        raise
    print(safe_lines(report))  # key names are the checkpoint's: escape codes, lone surrogates


def main(argv=None, prog=None):
    return run_command(sys.modules[__name__], argv, prog)
