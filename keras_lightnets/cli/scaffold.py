"""One scaffold for every command.

A command is a module with:
- `NAME` and `DESCRIPTION` (the first line of `lightnets NAME --help`);
- `add_arguments(parser)`;
- `check(args)`: everything that can be checked without TensorFlow
  (arguments, files, folders, weights records); returns what `run` needs;
- `run(args, checked)`: the work; returns an exit status or None (0).

`run_command` parses the arguments (a usage mistake is one line and exit
status 2), calls `check` before TensorFlow is imported, then `run`. Errors
the user can act on (`LightnetsError`, and `OSError` about a path) are one
escaped line `error: ...` and their exit status (2 for bad input); Ctrl-C
(and SIGTERM while a file is written) is `error: interrupted` and 130.
"""

import argparse
import sys

from keras_lightnets.errors import LightnetsError
from keras_lightnets.files import make_streams_safe, safe_text, usage_error_line

ERROR_LIMIT = 1000  # characters of one error line (a failed download lists every place tried)


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, exit status 2."""

    def error(self, message):
        self.exit(2, usage_error_line(message, f"{self.prog} --help lists the options") + "\n")


def os_error_line(err):
    """`OSError` as one line naming the path: `PATH: No such file or directory`."""
    if getattr(err, "filename", None) is not None and getattr(err, "strerror", None):
        return f"{err.filename}: {err.strerror}"
    return str(err) or type(err).__name__


def make_parser(command, prog=None):
    parser = ArgumentParser(prog=prog or f"lightnets {command.NAME}", description=command.DESCRIPTION)
    command.add_arguments(parser)
    return parser


def run_command(command, argv=None, prog=None):
    """Runs `command` (a command module) on `argv`; returns the exit status."""
    make_streams_safe()
    args = make_parser(command, prog).parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        checked = command.check(args)
        status = command.run(args, checked)
    except LightnetsError as err:
        print(f"error: {safe_text(err, ERROR_LIMIT)}", file=sys.stderr)
        return err.exit_status
    except OSError as err:
        print(f"error: {safe_text(os_error_line(err), ERROR_LIMIT)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing written", file=sys.stderr)
        return 130
    return 0 if status is None else int(status)
