"""`python -m convert CHECKPOINT OUT.h5 --arch NAME` (from a checkout): `lightnets convert`."""

import sys

from keras_lightnets.cli.convert import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m convert"))
