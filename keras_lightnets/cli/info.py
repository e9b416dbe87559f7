"""`lightnets info FILE`: what a weights file, a PyTorch checkpoint or a TFLite file holds."""

import json
import os
import sys

from keras_lightnets.cli.scaffold import run_command
from keras_lightnets.errors import UsageError

NAME = "info"
DESCRIPTION = (
    "Describe a keras-lightnets weights file (its record), a PyTorch checkpoint (its tensors and "
    "the namings that recognise them) or a TFLite file (inputs, outputs), without TensorFlow."
)


def add_arguments(parser):
    parser.add_argument("file", help=".h5 weights, a PyTorch checkpoint (.pth/.pt/.bin/.safetensors/.npz) or .tflite")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of lines")


def check(args):
    if not os.path.isfile(args.file):
        raise UsageError(f"{args.file}: no such file")
    with open(args.file, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "weights"
    if head[4:8] == b"TFL3":
        return "tflite"
    return "checkpoint"


def describe_weights(path):
    from keras_lightnets.weights.h5 import read_record

    record = read_record(path)
    return {
        "file": path,
        "kind": "keras-lightnets weights",
        "arch": record.get("arch"),
        "builder_kwargs": record.get("builder_kwargs"),
        "preprocessing": record.get("preprocessing"),
        "source": record.get("source"),
        "parity": record.get("parity", "not recorded"),
        "class_names": len(record["class_names"]) if record.get("class_names") else None,
    }


def describe_checkpoint(path):
    from keras_lightnets import registry
    from keras_lightnets.conversion.namings import NAMINGS, source_name
    from keras_lightnets.conversion.reader import read_checkpoint

    checkpoint = read_checkpoint(path)
    keys = set(checkpoint.tensors)
    archs = [
        f"{spec.name} ({source_name(naming)})"
        for spec in registry.SPECS.values()
        for naming in spec.namings
        if NAMINGS[naming].detect(keys)
    ]
    return {
        "file": path,
        "kind": f"PyTorch checkpoint ({checkpoint.format})",
        "wrapper": checkpoint.wrapper,
        "prefix": checkpoint.prefix,
        "tensors": len(keys),
        "parameters": int(sum(a.size for a in checkpoint.tensors.values())),
        "recognised as": archs or "no naming recognises its keys",
    }


def describe_tflite(path):
    from keras_lightnets.runtime.tflite import load_interpreter

    with open(path, "rb") as f:
        interpreter = load_interpreter(f.read(), threads=1)

    def tensors(details):
        return [f"{d['name']} {d['dtype'].__name__} {[int(side) for side in d['shape_signature']]}" for d in details]

    return {
        "file": path,
        "kind": "TFLite flatbuffer",
        "inputs": tensors(interpreter.get_input_details()),
        "outputs": tensors(interpreter.get_output_details()),
    }


def run(args, kind):
    describe = {"weights": describe_weights, "checkpoint": describe_checkpoint, "tflite": describe_tflite}[kind]
    facts = describe(args.file)
    if args.json:
        print(json.dumps(facts, sort_keys=True, default=str))
        return
    from keras_lightnets.files import safe_text

    for key, value in facts.items():
        if value is not None:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
            print(f"{key:<15} {safe_text(text, 1000)}")


def main(argv=None, prog=None):
    return run_command(sys.modules[__name__], argv, prog)
