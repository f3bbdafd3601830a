"""The image files of a folder: found recursively, labeled by class subfolder, run folders left out.

Hidden files and folders are skipped, symbolic links are followed once (a link to
a file is read as that file, a link to a folder as that folder; a broken link or a
link loop is named when its file is decoded), folders that cannot be read
(permission denied) are skipped with a :class:`SkippedImagesWarning` naming them
(an error under ``strict``), DATA itself unreadable is an error,
and a simsiam run folder inside DATA (``cd photos && simsiam train .``) is never
read as data (:func:`is_run_folder`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

from .errors import DataError
from .io import show_path
from .run_folder import MARKER

# Images, and arrays of bands (.npy, .npz: H x W x C); a TIFF may be an image or a stack of bands, one per page.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".npy", ".npz")
MAX_NAMED = 50  # files named one by one in a warning; the rest are counted


class SkippedImagesWarning(UserWarning):
    """Some files or folders of DATA were left out: undecodable, unreadable, or a run folder (see --strict)."""


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` holds a simsiam run (its marker or checkpoint, or its config with any of the files a run writes)."""
    path = Path(path)
    if (path / "checkpoints" / "last.ckpt").is_file() or (path / MARKER).is_file():
        return True
    return (path / "config.yaml").is_file() and any(
        (path / name).exists() for name in ("metrics.csv", "metrics.json", "training.png", "checkpoints")
    )


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk(root: Path, exclude: set[str]) -> tuple[list[Path], dict[str, tuple[str, str]], list[Path]]:
    """Image files under ``root``; the folders that could not be read (real path -> (name, why)); the folders left out.

    DataError when ``root`` itself cannot be read (os.access does not tell: root may read anything, a network
    file system may refuse what the mode bits allow).
    """
    files: list[Path] = []
    seen: set[str] = set()
    unreadable: dict[str, tuple[str, str]] = {}
    left_out: list[Path] = []

    def note_unreadable(e: OSError) -> None:
        where = root if e.filename is None else e.filename
        if os.path.realpath(where) == os.path.realpath(root):
            raise DataError(f"{show_path(root)}: cannot read the folder ({e.strerror or e})")
        unreadable[os.path.realpath(where)] = (show_path(where), str(e.strerror or e))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=note_unreadable):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        keep = []
        for d in sorted(d for d in dirnames if not _is_hidden(d)):
            sub = Path(dirpath) / d
            if os.path.realpath(sub) in exclude or is_run_folder(sub):
                left_out.append(sub)
            else:
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not _is_hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS) and os.path.realpath(path) not in exclude:
                files.append(path)
    return files, unreadable, left_out


def list_images(root: Path, exclude: Iterable[str | Path] = (), strict: bool = False) -> tuple[list[Path], list[int] | None, list[str]]:
    """Image files under ``root``, and labels when the images sit in class subfolders.

    Hidden files and folders are skipped; symbolic links are followed once (loops
    are cut by remembering the real paths visited); folders that cannot be read
    are skipped with a warning naming them (with ``strict``, the first is a
    DataError naming it: a class must not go missing unnoticed). Simsiam run folders (see
    :func:`is_run_folder`) and the paths in ``exclude`` (files or folders: a
    run's own output folder, say) are never read, and a warning names them.
    """
    root = Path(root)
    if not os.access(root, os.R_OK | os.X_OK):
        raise DataError(f"{show_path(root)}: cannot read the folder (permission denied)")
    excluded = {os.path.realpath(p) for p in exclude} - {os.path.realpath(root)}
    files, unreadable, left_out = _walk(root, excluded)
    if unreadable and strict:
        name, why = min(unreadable.values())
        raise DataError(f"{name}: cannot read the folder ({why}); --strict stops at the first file or folder that cannot be read")
    if unreadable:
        shown = ", ".join(f"{name} ({why})" for name, why in sorted(unreadable.values())[:MAX_NAMED])
        warnings.warn(f"skipped {len(unreadable)} folder(s) that cannot be read: {shown}", SkippedImagesWarning, stacklevel=2)
    if left_out:
        shown = ", ".join(show_path(p.relative_to(root)) for p in left_out[:MAX_NAMED])
        warnings.warn(f"{show_path(root)}: left out {len(left_out)} simsiam run or output folder(s), never read as data: {shown}",
                      SkippedImagesWarning, stacklevel=2)  # fmt: skip
    top_level = [f for f in files if f.parent == root]
    class_dirs = sorted({f.relative_to(root).parts[0] for f in files if f.parent != root})
    if top_level or not class_dirs:
        return files, None, []
    holds_left_out = {p.relative_to(root).parts[0] for p in left_out}
    empty = sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and not _is_hidden(d.name) and d.name not in class_dirs and d.name not in holds_left_out
        and os.path.realpath(d) not in unreadable and os.path.realpath(d) not in excluded
    )  # fmt: skip
    if empty:
        warnings.warn(
            f"{show_path(root)}: class folders with no images are ignored: {', '.join(map(show_path, empty))}",
            SkippedImagesWarning,
            stacklevel=2,
        )
    index = {c: i for i, c in enumerate(class_dirs)}
    labels = [index[f.relative_to(root).parts[0]] for f in files]
    return files, labels, class_dirs
