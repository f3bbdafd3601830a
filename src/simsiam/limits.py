"""The bounds of options, and the checks of path options: light, so that the command line can check before importing torch.

Every bound is far past any real run, so that a slip of the keyboard (an extra 0,
1e18) is one line at once, not an allocation that fails or a loop that never ends.
The checks return why a value is wrong, or None (as the ``check`` of an option does).
"""

from __future__ import annotations

import os
from pathlib import Path

from .io import show_path

MAX_IMAGE_SIZE = 1024
MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 16
MAX_KNN_K = 100_000
MAX_PROCESSES = 1024  # per node, and nodes
MAX_STEPS = 10**9
MAX_LR = 100.0  # the linear probe's; training's --lr has none (a diverging run stops in one line)
MAX_WIDTH = 1 << 14  # widest MLP layer: 16384 x 16384 float32 weights are 1 GiB (the paper's are 2048)
MAX_LAYERS = 16  # the paper's projector has 2 or 3


def path_problem(text: str) -> str | None:
    """What every path option refuses: nothing, and a NUL (no file name holds one)."""
    if not text:
        return "is empty; give a path"
    if "\x00" in text:
        return f"{show_path(text)} holds a NUL character, which no path can"
    return None


def existing_path(text: str) -> str | None:
    """DATA, --val and the like: a path that is there (what kind of data it holds, the loader says)."""
    if problem := path_problem(text):
        return problem
    try:
        os.stat(text)
    except FileNotFoundError:
        return f"{show_path(text)}: no such file or folder"
    except OSError as e:  # a name too long, a folder we may not enter
        return f"{show_path(text)}: {e.strerror or e}"
    return None


def output_name_problem(text: str, folder: bool = True) -> str | None:
    """What an output path's text must be: a path, named in UTF-8 (TensorBoard, YAML and the log lines need text)."""
    if problem := path_problem(text):
        return problem
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"{show_path(text)} is not valid UTF-8; choose a {'folder' if folder else 'file'} name in UTF-8"
    return None


def output_problem(text: str, folder: bool) -> str | None:
    """A path to write to: a folder (``folder``) or a file, under folders, named in UTF-8."""
    if problem := output_name_problem(text, folder):
        return problem
    try:
        return _output_kind(Path(text), folder)
    except OSError as e:  # a name too long, a folder we may not enter
        return f"{show_path(text)}: {e.strerror or e}"


def _output_kind(path: Path, folder: bool) -> str | None:
    if path.exists():
        if folder != path.is_dir():
            return f"{show_path(path)} is a file, not a folder" if folder else f"{show_path(path)} is a folder; give a file name"
        return None
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else f"{show_path(parent)} is a file, not a folder"
    return None
