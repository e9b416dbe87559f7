"""`lightnets COMMAND ...`: every command of keras-lightnets behind one name."""

import importlib
import sys

from keras_lightnets.files import make_streams_safe, safe_text

COMMANDS = {
    "convert": "keras_lightnets.cli.convert",
    "demo": "keras_lightnets.cli.demo",
    "predict": "keras_lightnets.cli.predict",
    "finetune": "keras_lightnets.cli.finetune",
    "export": "keras_lightnets.cli.export",
    "evaluate": "keras_lightnets.cli.evaluate",
    "info": "keras_lightnets.cli.info",
}
SUMMARIES = {
    "convert": "a PyTorch checkpoint into Keras weights, checked against PyTorch",
    "demo": "classify or segment one photo",
    "predict": "predict every photo of a folder (JSON lines, masks)",
    "finetune": "train weights on your photos or masks",
    "export": "TFLite for apps (MediaPipe), ONNX or SavedModel, checked against Keras",
    "evaluate": "top-1/top-5 (or mIoU) on labelled photos, per runtime",
    "info": "what a weights file, checkpoint or TFLite file holds",
}


def usage():
    lines = ["usage: lightnets COMMAND [ARGS]  (lightnets COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<9} {SUMMARIES[name]}" for name in COMMANDS]
    return "\n".join(lines)


def main(argv=None):
    make_streams_safe()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {safe_text(argv[0], 80)!s}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    command = importlib.import_module(COMMANDS[argv[0]])
    return command.main(argv[1:], prog=f"lightnets {argv[0]}")


if __name__ == "__main__":
    sys.exit(main())
