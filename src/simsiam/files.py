"""Files that are either whole or absent, the disk cache, and small shared context managers.

Every file simsiam writes (checkpoints, metrics, config, embeddings, exports,
figures, caches) goes through :func:`atomic_write`: the bytes go to a hidden
temporary file beside the target (``.NAME.<pid>.partial``, unique per process),
are flushed to disk, and the temporary file is renamed over the target with
``os.replace``. A rename within one folder is atomic on POSIX and Windows, so a
kill, a crash or a full disk at any moment leaves the previous version of the
file or the new one, never a torn mix. A failed write removes its temporary
file and raises an ``OSError`` that names the target file and the cause.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
>>> with atomic_write(path, "w") as fh:
...     _ = fh.write("whole or nothing")
>>> path.read_text()
'whole or nothing'

The disk cache (:func:`load_cached`, :func:`save_cached`) holds what is costly
to compute again (extracted features) as torch files under ``$SIMSIAM_CACHE``
(default ``~/.cache/simsiam``; decoded images have a format of their own there,
see :mod:`simsiam.data.cache`). It is read weights-only, so a
cache file cannot run code; a file that is damaged or holds the wrong structure
is named in a :class:`CacheWarning` and rebuilt; a cache that cannot be written
(read-only, full) only costs the next run the work again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

PARTIAL_SUFFIX = ".partial"
MARKER = "simsiam-run.json"  # the file that says a folder is a run folder of ours (run_folder writes it; listing skips such folders)
_PARTIAL_NAME = re.compile(r"^\..+?(?:\.(\d+))?\.partial$")


class CacheWarning(UserWarning):
    """A cache file was damaged (and is rebuilt), or could not be written."""


# -- paths as text -------------------------------------------------------------------------

# C0 and C1 control characters, and the two Unicode line separators that str.splitlines honours.
_CONTROL = {i: f"\\x{i:02x}" for i in [*range(0x20), *range(0x7F, 0xA0)]}
_CONTROL |= {0x2028: "\\u2028", 0x2029: "\\u2029", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def show_path(path: str | Path) -> str:
    """A path as text that fits on one printable line.

    Bytes that are not UTF-8 show as \\xNN escapes, and control characters
    (newlines, carriage returns, tabs, escapes) as \\n, \\r, \\t or \\xNN, so a
    file name can never break a one-line warning or error in two.

    >>> show_path("a\\nb.png")
    'a\\\\nb.png'
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace").translate(_CONTROL)


# -- atomic files ---------------------------------------------------------------------------


def partial_path(path: str | Path, pid: int | None = None) -> Path:
    """Where process ``pid`` (default: this one) writes ``path`` before the rename: a hidden sibling."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid() if pid is None else pid}{PARTIAL_SUFFIX}")


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file for writing; on a clean exit it replaces ``path``, on any error it is removed.

    ``open_kwargs`` go to ``open`` (``newline=""`` for csv, an ``encoding``). An
    ``OSError`` on the way (a full disk, a read-only folder, a file-size limit)
    is raised again naming ``path``, the file the caller asked for, not the
    temporary one.
    """
    if not mode.startswith(("w", "x")):
        raise ValueError(f"atomic_write writes new files; mode must start with 'w', got {mode!r}")
    path = Path(path)
    tmp = partial_path(path)
    try:
        # Unique per process: two processes writing the same file never share a temporary
        # name; a partial file left by a kill of this process is overwritten by its next save.
        with open(tmp, mode.replace("x", "w"), **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and e.errno is not None:
            raise type(e)(e.errno, e.strerror, str(path)) from e
        raise
    _fsync_folder(path.parent)


def write_json(path: str | Path, obj: Any, indent: int = 2) -> None:
    """``obj`` as JSON in ``path``, atomically."""
    with atomic_write(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=indent)
        fh.write("\n")


class _RecordingWriter:
    """A file object for torch.save that keeps the OSError a write raised.

    torch's zip writer swallows the error of a failed write and reports
    ``RuntimeError: ... unexpected pos`` instead; this keeps the real cause
    (ENOSPC, EFBIG, EIO) so that it can be raised in its place.
    """

    def __init__(self, fh: IO[bytes]):
        self.fh, self.error = fh, None

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        try:
            written = self.fh.write(data)
            if written is not None and written != size:
                raise OSError(errno.EIO, f"short write ({written} of {size} bytes)")
        except OSError as e:
            self.error = self.error or e
            raise
        return size

    def flush(self) -> None:
        self.fh.flush()


def save_torch_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` into ``path`` through :func:`atomic_write`.

    The one answer to torch's full-disk quirk: the bytes are streamed into the
    temporary file (no second copy in memory), and a failed write is raised as
    the ``OSError`` it was, naming ``path``, not as torch's "unexpected pos".
    """
    import torch

    with atomic_write(path) as fh:
        sink = _RecordingWriter(fh)
        try:
            torch.save(obj, sink)
        except RuntimeError:
            if sink.error is not None:
                raise sink.error from None
            raise


def remove_partial_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files (and partial cache folders) that killed processes left in ``folder``; returns what was removed.

    A partial file of a process that is still running (another pid, alive) is
    left alone: it may be in the middle of its write.
    """
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(f".*{PARTIAL_SUFFIX}"):
            match = _PARTIAL_NAME.match(p.name)
            if match is None or (match.group(1) is not None and _running_elsewhere(int(match.group(1)))):
                continue
            with contextlib.suppress(OSError):
                if p.is_dir() and not p.is_symlink():  # a partial image-cache entry (simsiam.data.cache)
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
    return removed


def _running_elsewhere(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # a process of another user holds that pid (or a nonsense pid: not running)
    return True


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


# -- the disk cache -------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$SIMSIAM_CACHE``, or ``~/.cache/simsiam``: where decoded images and extracted features are kept."""
    return Path(os.environ.get("SIMSIAM_CACHE") or Path.home() / ".cache" / "simsiam")


def cache_path(name: str) -> Path:
    """The file of cache entry ``name`` (a relative file name such as ``features/KEY.pt``)."""
    return cache_dir() / name


def load_cached(name: str, check: Callable[[Any], bool], what: str = "cache", map_location: Any = None) -> Any | None:
    """The object in cache entry ``name``, or None when there is none or it cannot be trusted.

    The file is read weights-only (plain tensors and containers: no code runs)
    and ``check(obj)`` must accept its structure. A file that is truncated,
    garbled or of the wrong structure is named in a :class:`CacheWarning` (``what``
    says which cache) and None is returned, so that the caller rebuilds it.
    """
    import torch

    path = cache_path(name)
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
        reason = None if check(obj) else "not the structure this version of simsiam writes"
    except Exception as e:  # torch raises many types for a damaged zip or pickle
        reason = error_text(e, kind=True)
    if reason is None:
        return obj
    warnings.warn(f"{what} {show_path(path)} cannot be used ({reason}); rebuilding it", CacheWarning, stacklevel=2)
    return None


def save_cached(name: str, obj: Any, what: str = "cache") -> Path | None:
    """Save ``obj`` as cache entry ``name`` atomically; returns its file, or None (with a warning) when it cannot be written."""
    path = cache_path(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_torch_atomic(obj, path)
    except OSError as e:  # a read-only home or a full disk only costs the next run the work again
        where = show_path(e.filename) if e.filename else show_path(path)
        warnings.warn(
            f"could not write the {what} {where} ({os_error_text(e)}); the next run computes it again", CacheWarning, stacklevel=2
        )
        return None
    return path


# -- archives given where a folder of images is wanted ------------------------------------------

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz", ".tar.zst", ".7z", ".rar")


def archive_problem(path: str | Path) -> str | None:
    """DATA given as an archive: the one line that says to unpack it (archives are not read: unpacking is the user's call).

    >>> archive_problem("photos.tar.gz")
    'photos.tar.gz is an archive: unpack it first (tar -xf photos.tar.gz) and pass the folder of images'
    """
    name = Path(path).name.lower()
    if not name.endswith(ARCHIVE_SUFFIXES):
        return None
    how = f"unzip {show_path(path)}" if name.endswith(".zip") else f"tar -xf {show_path(path)}" if ".t" in name else "unpack it"
    return f"{show_path(path)} is an archive: unpack it first ({how}) and pass the folder of images"


# -- the one-line text of an error -------------------------------------------------------------


def error_text(e: BaseException, kind: bool = False, first_line: bool = False) -> str:
    """An exception's message on one printable line of at most 160 characters: every message we print of one.

    ``kind`` puts its type first ("KeyError: 'x'"); ``first_line`` keeps only its
    first line (parsers such as PyYAML's add lines of context after it).

    >>> e = ValueError("line one\\nline two")
    >>> error_text(e, kind=True), error_text(e, first_line=True)
    ('ValueError: line one line two', 'line one')
    """
    lines = str(e).strip().splitlines()
    text = " ".join(" ".join(lines[:1] if first_line else lines).split())
    if kind or not text:
        text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text if len(text) <= 160 else text[:157] + "..."


def os_error_text(e: OSError) -> str:
    """Why a file operation failed, for a message: the system's words ("No space left on device") when it has some."""
    return e.strerror or error_text(e)


# -- small context managers -------------------------------------------------------------------


@contextlib.contextmanager
def eval_mode(module: Any) -> Iterator[Any]:
    """Put ``module`` (every submodule) in eval mode for the block, then restore each submodule's own mode.

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.BatchNorm1d(2), torch.nn.Dropout()).train()
    >>> with eval_mode(net):
    ...     net.training
    False
    >>> net.training, net[0].training
    (True, True)
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training
