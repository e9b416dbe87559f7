"""Small guards for the converter's command line and its output files.

- ``safe_text``: untrusted text (key names, paths, error messages) made fit for a
  terminal: one line, control characters, terminal escapes and lone surrogates
  escaped, truncated.
- ``OneLineArgumentParser``: usage errors in one line, exit status 2.
- ``check_output_path``: refuses ``dir/`` and existing folders as output names.
- ``temp_path_for``, ``remove_stale_temp_files``, ``sigterm_as_keyboard_interrupt``,
  ``write_atomically``: temporary files named after the writer's PID, removed on
  SIGINT and SIGTERM, and removed by a later run once their writer is gone.

Nothing here imports Keras, h5py or numpy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from keras_lightnets.errors import LightnetsError

__all__ = [
    "OneLineArgumentParser",
    "usage_error_line",
    "check_output_path",
    "make_streams_safe",
    "remove_stale_temp_files",
    "safe_lines",
    "safe_text",
    "sigterm_as_keyboard_interrupt",
    "temp_path_for",
    "write_atomically",
]

MESSAGE_LIMIT = 300
_ELLIPSIS = "..."


_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def safe_text(text, limit: int | None = MESSAGE_LIMIT) -> str:
    """``text`` as one printable line of at most ``limit`` characters.

    Control characters (newlines, ESC and the rest of C0/C1), format characters
    (bidi overrides), lone surrogates and other non-printable characters become
    backslash escapes; a longer result is cut and ends with "...".
    """
    text = text if isinstance(text, str) else str(text)
    if limit is not None:
        text = text[: limit + 1]  # escaping only lengthens: no need to look further
    line = "".join(c if c.isprintable() else _escape(c) for c in text)
    if limit is not None and len(line) > limit:
        line = line[: max(0, limit - len(_ELLIPSIS))] + _ELLIPSIS
    return line


def safe_lines(text, line_limit: int | None = 1000) -> str:
    """Multi-line text (a report) with each line made safe by ``safe_text``."""
    return "\n".join(safe_text(line, line_limit) for line in str(text).split("\n"))


def make_streams_safe() -> None:
    """Let stdout and stderr print any text: unencodable characters become escapes."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def usage_error_line(message, hint="see --help") -> str:
    """argparse's error message as one safe line: "error: MESSAGE (HINT)"."""
    # "invalid choice: 'x' (choose from 'a', 'b', ...)": the list belongs in --help.
    message = re.sub(r" \(choose from .*\)$", "", str(message), flags=re.S)
    return f"error: {safe_text(message, 200)} ({hint})"


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (no usage block), exit status 2."""

    hint = "see --help"

    def error(self, message):
        self.exit(2, usage_error_line(message, self.hint) + "\n")


class OutputPathError(LightnetsError, ValueError):
    """A path that cannot name the file a command is asked to write."""


def check_output_path(path, overwrite=True) -> str:
    """The absolute ``path`` if it can name an output file: every command's one check.

    Refused: ``dir/`` or an existing folder, a folder that does not exist, and
    (unless ``overwrite``) an existing file, which ``--force`` replaces.
    """
    text = os.fspath(path)
    separators = (os.sep, os.altsep) if os.altsep else (os.sep,)
    if not text or text.endswith(separators) or os.path.isdir(text):
        raise OutputPathError(f"{safe_text(text, 200)}: the output must be a file name, not a folder")
    absolute = os.path.abspath(text)
    if not os.path.isdir(os.path.dirname(absolute)):
        raise OutputPathError(f"{safe_text(os.path.dirname(absolute), 200)}: no such directory")
    if not overwrite and os.path.lexists(absolute):
        raise OutputPathError(f"{safe_text(absolute, 200)} exists; use --force to replace it")
    return absolute


# ------------------------------------------------------------------------ temp files

# .{basename}.{pid}.{random}.tmp, e.g. ".mobilenet.h5.4242.k3j9x2qa.tmp"
_TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"\A\.(?P<base>.+)\.(?P<pid>[1-9][0-9]{0,9})\.(?P<token>[0-9a-z]{8})\.tmp\Z")


def temp_path_for(path) -> str:
    """A fresh temporary name next to ``path`` that records this process's PID."""
    path = os.fspath(path)
    folder, base = os.path.split(path)
    token = "".join(secrets.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(8))
    return os.path.join(folder, f".{base}.{os.getpid()}.{token}{_TEMP_SUFFIX}")


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OverflowError:  # not a possible PID
        return False
    return True


def remove_stale_temp_files(folder) -> list[str]:
    """Remove temp files of ours in ``folder`` whose writer process is gone; return their paths.

    Only names of the ``temp_path_for`` pattern are considered, so other hidden
    files are never touched, and a live writer's file is left alone.
    """
    folder = os.fspath(folder) or "."
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or _process_exists(int(match["pid"])):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            os.unlink(entry.path)
        except FileNotFoundError:  # its writer, or another cleaner, was first
            continue
        removed.append(entry.path)
    return removed


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM raises KeyboardInterrupt (as SIGINT does), so cleanup runs.

    Only the main thread can set signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_atomically(path, write: Callable[[str], None]) -> str:
    """Call ``write(temp_path)`` and rename the result to ``path``; return ``path``.

    Stale temp files of dead writers in the same folder are removed first; the
    temp file is removed if ``write`` fails or the process gets SIGINT or SIGTERM.
    """
    path = os.path.abspath(check_output_path(path))
    remove_stale_temp_files(os.path.dirname(path))
    temp = temp_path_for(path)
    with sigterm_as_keyboard_interrupt():
        try:
            write(temp)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
    return path
