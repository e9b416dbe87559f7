"""`python -m keras_lightnets.predict`: `lightnets predict`."""

import sys

from keras_lightnets.cli.predict import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m keras_lightnets.predict"))
