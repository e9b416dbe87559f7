"""`python -m keras_lightnets COMMAND ...`: the `lightnets` command."""

import sys

from keras_lightnets.cli.main import main

sys.exit(main())
