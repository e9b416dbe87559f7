"""The one base class of the package's errors.

Every error that reports a problem with what a user gave (a file, a folder, an
argument, a checkpoint, weights that do not fit) is a `LightnetsError` with a
one-line message; the command-line scaffold (`keras_lightnets.cli.scaffold`)
prints it as `error: MESSAGE` and exits with its `exit_status` (2 for bad
input, 1 when a check of the tool's own result failed).
"""


class LightnetsError(Exception):
    """A problem reported in one line; `exit_status` is the commands' exit code."""

    exit_status = 2


class UsageError(LightnetsError, ValueError):
    """Arguments that cannot work together, or name something that does not exist."""
