"""Small guards for the converter's command line and its output files.

- ``safe_text``: untrusted text (key names, paths, error messages) made fit for a
  terminal: one line, control characters, terminal escapes and lone surrogates
  escaped, truncated.
- ``OneLineArgumentParser``: usage errors in one line, exit status 2.
- ``check_output_path``: refuses ``dir/`` and existing folders as output names.
- ``temp_path_for``, ``remove_stale_temp_files``, ``sigterm_as_keyboard_interrupt``,
  ``write_atomically``: temporary files named after the writer's PID, removed on
  SIGINT and SIGTERM, and removed by a later run once their writer is gone.
- ``open_regular``: opens a file for reading only if it is a regular file (a FIFO,
  socket or device named like a photo or a checkpoint must neither hang nor be read).
- ``IMAGE_SUFFIXES``, ``is_image_name``, ``list_images``: the one walk over a folder
  of photos (regular files only, symbolic links to folders not followed).

Nothing here imports Keras, h5py or numpy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import signal
import stat
import sys
import threading
from collections.abc import Callable, Iterator

from keras_lightnets.errors import LightnetsError

__all__ = [
    "IMAGE_SUFFIXES",
    "NotRegularFileError",
    "OneLineArgumentParser",
    "usage_error_line",
    "check_output_path",
    "file_kind",
    "is_image_name",
    "list_images",
    "make_streams_safe",
    "open_regular",
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


# ------------------------------------------------------------------ reading files

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISLNK, "a symbolic link"),
)


class NotRegularFileError(LightnetsError, OSError):
    """A path that names something other than a regular file; one-line message."""


def file_kind(mode: int) -> str:
    """What a ``st_mode`` describes: "a regular file", "a FIFO", "a directory", ..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def _refuse_unless_regular(path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(f"{safe_text(os.fspath(path), 200)} is {file_kind(mode)}, not a regular file")


def open_regular(path):
    """``path`` opened for binary reading, if it is a regular file (symbolic links followed).

    Anything else (FIFO, socket, device, directory) raises NotRegularFileError
    without being opened; the file is then opened without blocking and checked
    again, so a FIFO swapped in meanwhile cannot hang the caller either.

    Raises:
        NotRegularFileError, FileNotFoundError, OSError.
    """
    _refuse_unless_regular(path, os.stat(path).st_mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    descriptor = os.open(path, flags)
    try:
        _refuse_unless_regular(path, os.fstat(descriptor).st_mode)
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def is_image_name(name) -> bool:
    """Whether a file name has a photo suffix (and is not hidden)."""
    base = os.path.basename(os.fspath(name))
    return base.lower().endswith(IMAGE_SUFFIXES) and not base.startswith(".")


def _report_skipped(path, message):
    print(safe_text(f"skipped: {message}"), file=sys.stderr, flush=True)


def list_images(folder, recursive=True, on_skip=_report_skipped) -> list[str]:
    """Sorted paths of the photos (by suffix) under ``folder``.

    Only regular files are listed (symbolic links to them included): a FIFO,
    socket or device with a photo's name is passed to ``on_skip(path,
    message)`` (default: one "skipped: ..." line on stderr), as is a broken
    link. Hidden files and folders are left out; symbolic links to folders
    are not followed, so a link loop cannot recurse.
    """
    folder = os.fspath(folder)
    found, pending = [], [folder]
    while pending:
        current = pending.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda entry: entry.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                if recursive:
                    pending.append(entry.path)
                continue
            if not is_image_name(entry.name):
                continue
            try:
                mode = os.stat(entry.path).st_mode
            except OSError as err:
                on_skip(entry.path, f"{entry.path}: cannot be read ({err.strerror or err})")
                continue
            if stat.S_ISREG(mode):
                found.append(entry.path)
            elif not stat.S_ISDIR(mode):  # links to folders are not followed
                on_skip(entry.path, f"{entry.path} is {file_kind(mode)}, not a regular file")
    return sorted(found)
