"""`python -m keras_lightnets.finetune`: `lightnets finetune`."""

import sys

from keras_lightnets.cli.finetune import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m keras_lightnets.finetune"))
