"""`python -m keras_lightnets.evaluate`: `lightnets evaluate`."""

import sys

from keras_lightnets.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m keras_lightnets.evaluate"))
