"""`python -m keras_lightnets.export`: `lightnets export`."""

import sys

from keras_lightnets.cli.export import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m keras_lightnets.export"))
