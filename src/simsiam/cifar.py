"""CIFAR-10 python files, unpickled without running code.

A CIFAR-10 batch is a pickled dict of bytes and numpy arrays. It is read with an
unpickler that admits only the types the format uses (dicts, lists, bytes, str,
numbers, numpy arrays of plain dtypes): a pickle that asks for anything else (a
function to call, a class to build) stops before it runs, and arrays larger than
the file (conjured from a declared shape alone) are refused. Every failure is one
:class:`~simsiam.errors.DataError` that names the file.
"""

from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError
from .guards import open_regular
from .io import show_path


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # How protocol-2 pickles written by Python 3 spell bytes: _codecs.encode(text, "latin1").
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


@functools.cache
def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only callables a CIFAR-10 batch refers to: numpy's array and dtype reconstruction, and bytes."""
    core = getattr(np, "_core", None) or np.core
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    allowed[("_codecs", "encode")] = _latin1_encode
    for package in ("numpy.core", "numpy._core"):  # numpy 1 writes numpy.core, numpy 2 numpy._core
        allowed[(f"{package}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = core.multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return allowed


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that admits dicts, lists, tuples, bytes, str, numbers and numpy arrays, and nothing else.

    Anything else a pickle asks for (a function to call, a class to build) stops
    the load before it runs: reading DATA never executes code.
    """

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed_globals().get((module, name))
        if found is None:
            raise _RefusedGlobal(show_path(f"{module}.{name}"[:120]))
        return found


_PLAIN_KINDS = "biufSU"  # bool, integers, floats, byte and text strings: no objects


def _array_bytes(obj: Any, depth: int = 0) -> int:
    """The bytes held by the arrays in ``obj``; raises unless it is made only of plain containers, scalars and arrays."""
    if depth > 8:
        raise pickle.UnpicklingError("nested too deeply")
    if isinstance(obj, dict):
        return sum(_array_bytes(k, depth + 1) + _array_bytes(v, depth + 1) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return sum(_array_bytes(item, depth + 1) for item in obj)
    if isinstance(obj, (np.ndarray, np.generic)):
        if obj.dtype.kind not in _PLAIN_KINDS:
            raise pickle.UnpicklingError(f"an array of {obj.dtype}")
        return obj.nbytes
    if obj is not None and not isinstance(obj, (bytes, str, int, float)):
        raise pickle.UnpicklingError(f"a {type(obj).__name__}")
    return 0


def read_cifar_pickle(path: Path) -> dict:
    """The dict in a CIFAR-10 python file, unpickled with only the types the format uses; DataError naming it otherwise."""
    try:
        with open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            obj = _BatchUnpickler(fh, encoding="bytes").load()
        # Array data comes from the file's own bytes; an array larger than the file was
        # conjured from a declared shape alone (a memory bomb), never by a real batch.
        if _array_bytes(obj) > size:
            raise pickle.UnpicklingError(f"arrays larger than the {size}-byte file")
        if not isinstance(obj, dict):
            raise pickle.UnpicklingError(f"a {type(obj).__name__}, not a dict")
    except _RefusedGlobal as e:
        raise DataError(f"{show_path(path)}: damaged, or not a CIFAR-10 python file: it refers to {e}, which the format "
                        "never uses (refused; nothing in it was run)") from None  # fmt: skip
    except OSError as e:
        raise DataError(f"{show_path(path)}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # a damaged pickle raises many types
        text = " ".join(str(e).split())[:160]
        raise DataError(f"{show_path(path)}: damaged, or not a CIFAR-10 python file ({type(e).__name__}: {text})") from None
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
