"""The guards every read of DATA passes: regular files only, a pixel limit, one-line reasons.

- :func:`open_regular` never opens a file that is not a regular file (opening a
  FIFO blocks until someone writes to it; a device may never end);
- :data:`MAX_PIXELS` is the most pixels an image (or a band of a stack) may
  declare in its header before anything is allocated for it, and
  :data:`MAX_IMAGE_BYTES` the most bytes of values a stack may declare: the
  per-image memory budget, checked from the header before anything is read;
- :func:`quiet_bomb_warning` silences Pillow's warning for images below that
  limit, without changing Pillow's global state from a worker thread;
- :func:`error_text` puts whatever a broken file made a parser raise on one
  printable line.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import warnings
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from .errors import DataError
from .io import show_path

# Pillow's own decompression-bomb error threshold (2 x Image.MAX_IMAGE_PIXELS at its
# default): about 13,400 x 13,400, far beyond any photo, and room for big satellite
# tiles. Images above it are refused from their header. Pillow refuses above its
# own threshold as well; raising both (this and PIL.Image.MAX_IMAGE_PIXELS) admits more.
MAX_PIXELS = 178_956_970
# The per-image memory budget: the bytes of an 8-bit RGB image of MAX_PIXELS (about 537 MB).
# An array or a stack of pages whose header declares more bytes of values is refused before
# any of them is read or decompressed (a 1 MB .npz can declare gigabytes of zeros).
MAX_IMAGE_BYTES = 3 * MAX_PIXELS

_KINDS = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]  # fmt: skip


def _require_regular(mode: int, path: str | Path) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a plain file")
        raise DataError(f"{show_path(path)}: not a regular file ({kind}); only regular files are read")


def open_regular(path: str | Path) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file (links followed); DataError naming it if it is not.

    The type is checked before the open (a FIFO or a device is never opened) and
    again on the open file, in case the name was replaced in between; the open
    itself cannot block.
    """
    _require_regular(os.stat(path).st_mode, path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    try:
        _require_regular(os.fstat(fd).st_mode, path)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def quiet_bomb_warning():
    """Silence Pillow's warning for images between half its limit and its limit, which are accepted here.

    Warning filters are process-wide: they are changed on the main thread only
    (decode_files does it around its worker threads), never from two threads at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def error_text(e: BaseException) -> str:
    """An exception's message on one printable line, at most 160 characters."""
    text = " ".join(str(e).split()).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text if len(text) <= 160 else text[:157] + "..."
