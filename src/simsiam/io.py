"""Files that are either whole or absent.

Every file a run leaves behind (checkpoints, metrics, config, weights) is
written to a temporary file beside its target, flushed to disk, then renamed
over the target with ``os.replace``. A rename within one folder is atomic on
POSIX and Windows, so a kill, a crash or a full disk at any moment leaves the
previous version of the file or the new one, never a torn mix; a failed write
removes its temporary file.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
>>> with atomic_write(path, "w") as fh:
...     _ = fh.write("whole or nothing")
>>> path.read_text()
'whole or nothing'
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Iterator

PARTIAL_SUFFIX = ".partial"


def partial_path(path: str | Path) -> Path:
    """Where ``path`` is written before the rename: a hidden sibling, so that folder listings skip it."""
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file for writing; on a clean exit it replaces ``path``, on any error it is removed.

    ``open_kwargs`` go to ``open`` (``newline=""`` for csv, an ``encoding``).
    """
    if not mode.startswith(("w", "x")):
        raise ValueError(f"atomic_write writes new files; mode must start with 'w', got {mode!r}")
    path = Path(path)
    tmp = partial_path(path)
    try:
        # The name is fixed, not random: a partial file left by a kill is overwritten
        # by the next save instead of piling up.
        with open(tmp, mode.replace("x", "w"), **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and e.errno is not None:
            # Name the file the caller asked for, not our temporary one.
            raise type(e)(e.errno, e.strerror, str(path)) from e
        raise
    _fsync_folder(path.parent)


def remove_partial_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files that a killed process left in ``folder``; returns what was removed."""
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(f".*{PARTIAL_SUFFIX}"):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable across a power cut; not possible on every
    # platform or filesystem (Windows cannot open folders), and not needed for
    # atomicity, so failures are ignored.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
