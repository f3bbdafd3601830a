"""CIFAR-10 python files, unpickled without running code.

A CIFAR-10 batch is a pickled dict of bytes and numpy arrays. It is read with an
unpickler that admits only the types the format uses (dicts, lists, bytes, str,
numbers, numpy arrays of plain dtypes): a pickle that asks for anything else (a
function to call, a class to build) stops before it runs, and arrays larger than
the file (conjured from a declared shape alone) are refused.

What a pickle builds is bounded as it is built, so that a small file cannot cost
unbounded time or memory: at most :data:`MAX_PICKLE_OPS` opcodes are run (a
50,000-image CIFAR-100 file takes about 500,000), a list, tuple, dict or array is
built once and never referred to a second time (a list of the same list, nested,
is a few kilobytes that expand without bound; hashing a tuple of the same tuple
likewise), nothing is nested more than :data:`MAX_DEPTH` deep, numpy arrays come
only from the bytes in the file, and the file is read into memory first (a
declared length is never allocated). The unpickler is pickle's own Python one
(``pickle._Unpickler``), whose opcodes can be watched one by one. Every failure is
one :class:`~simsiam.errors.DataError` that names the file.
"""

from __future__ import annotations

import functools
import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from simsiam.data.decode import fit_tensor, open_regular
from simsiam.errors import DataError
from simsiam.files import error_text, os_error_text, show_path


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # How protocol-2 pickles written by Python 3 spell bytes: _codecs.encode(text, "latin1").
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


MAX_PICKLE_OPS = 1_000_000  # opcodes a batch may run: a 50,000-image file takes 200,000 to 500,000
MAX_DEPTH = 8  # nesting: a batch is a dict of lists and arrays (3 levels)
_SHARED = (list, tuple, dict, set, frozenset, bytearray, np.ndarray)  # never referred to twice


class _NdarrayClass:
    """What a pickle gets for ``numpy.ndarray``: only :func:`_reconstruct` may use it (calling it would allocate a declared shape)."""

    def __new__(cls, *args, **kwargs):
        raise pickle.UnpicklingError("numpy.ndarray called directly")


def _reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    # numpy pickles an array as _reconstruct(ndarray, (0,), b"b") and then its state (shape, dtype, bytes):
    # an empty array, filled from the file's own bytes. Any other shape would be allocated from its declaration alone.
    if cls is not _NdarrayClass or shape != (0,):
        raise pickle.UnpicklingError("numpy _reconstruct of anything but an empty array")
    core = getattr(np, "_core", None) or np.core
    return core.multiarray._reconstruct(np.ndarray, (0,), dtype)


def _scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.kind not in _PLAIN_KINDS or not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("a numpy scalar that is not plain bytes of a plain type")
    core = getattr(np, "_core", None) or np.core
    return core.multiarray.scalar(dtype, data)


@functools.cache
def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only callables a CIFAR-10 batch refers to: numpy's array and dtype reconstruction, and bytes."""
    core = getattr(np, "_core", None) or np.core
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): _NdarrayClass, ("numpy", "dtype"): np.dtype}
    allowed[("_codecs", "encode")] = _latin1_encode
    for package in ("numpy.core", "numpy._core"):  # numpy 1 writes numpy.core, numpy 2 numpy._core
        allowed[(f"{package}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = _scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return allowed


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _Bounded(pickle.UnpicklingError):
    """The pickle would build more than a batch ever holds: it is refused as it is built."""


class _CountedOps(dict):
    """The unpickler's table of opcodes, counting the opcodes run; past MAX_PICKLE_OPS the load stops."""

    def __init__(self, table: dict) -> None:
        super().__init__(table)
        self.left = MAX_PICKLE_OPS

    def __getitem__(self, key: int) -> Any:
        self.left -= 1
        if self.left < 0:
            raise _Bounded(f"more than {MAX_PICKLE_OPS:,} pickle opcodes")
        return super().__getitem__(key)


def _get_once(load_get: Any) -> Any:
    """A memo opcode that refuses to push a container a second time (a list of the same list, nested, expands without bound)."""

    def load(self: pickle._Unpickler) -> None:
        load_get(self)
        if isinstance(self.stack[-1], _SHARED):
            raise _Bounded(f"a {type(self.stack[-1]).__name__} referred to twice (shared references)")

    return load


class _BatchUnpickler(pickle._Unpickler):
    """An unpickler that admits dicts, lists, tuples, bytes, str, numbers and numpy arrays, and nothing else, in bounded time.

    Anything else a pickle asks for (a function to call, a class to build) stops
    the load before it runs: reading DATA never executes code. It runs at most
    MAX_PICKLE_OPS opcodes and refers to no container twice.
    """

    _table = dict(pickle._Unpickler.dispatch)
    for _op in (pickle.GET, pickle.BINGET, pickle.LONG_BINGET):
        _table[_op[0]] = _get_once(_table[_op[0]])

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file, encoding="bytes")
        self.dispatch = _CountedOps(self._table)

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed_globals().get((module, name))
        if found is None:
            raise _RefusedGlobal(show_path(f"{module}.{name}"[:120]))
        return found


_PLAIN_KINDS = "biufSU"  # bool, integers, floats, byte and text strings: no objects


def _leaf_bytes(obj: Any, depth: int = 0) -> int:
    """The bytes held by the arrays and strings in ``obj``; raises unless it is made only of plain containers, scalars and arrays.

    The walk visits each object once (no container is shared: see _BatchUnpickler),
    so it is as long as the pickle, at most MAX_DEPTH deep.
    """
    if depth > MAX_DEPTH:
        raise pickle.UnpicklingError(f"nested more than {MAX_DEPTH} deep")
    if isinstance(obj, dict):
        return sum(_leaf_bytes(k, depth + 1) + _leaf_bytes(v, depth + 1) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return sum(_leaf_bytes(item, depth + 1) for item in obj)
    if isinstance(obj, (np.ndarray, np.generic)):
        if obj.dtype.kind not in _PLAIN_KINDS:
            raise pickle.UnpicklingError(f"an array of {obj.dtype}")
        return obj.nbytes
    if isinstance(obj, (bytes, str)):
        return len(obj)
    if obj is not None and not isinstance(obj, (int, float)):
        raise pickle.UnpicklingError(f"a {type(obj).__name__}")
    return 0


def read_cifar_pickle(path: Path) -> dict:
    """The dict in a CIFAR-10 python file, unpickled with only the types the format uses; DataError naming it otherwise."""
    try:
        with open_regular(path) as fh:
            blob = fh.read()  # the file's own bytes: a length the pickle declares is never allocated
        size = len(blob)
        obj = _BatchUnpickler(io.BytesIO(blob)).load()
        del blob
        # Array data comes from the file's own bytes; arrays and strings larger than the file
        # were conjured from a declared shape alone (a memory bomb), never by a real batch.
        if _leaf_bytes(obj) > size:
            raise pickle.UnpicklingError(f"arrays and strings larger than the {size}-byte file")
        if not isinstance(obj, dict):
            raise pickle.UnpicklingError(f"a {type(obj).__name__}, not a dict")
    except _RefusedGlobal as e:
        raise DataError(f"{show_path(path)}: damaged, or not a CIFAR-10 python file: it refers to {e}, which the format "
                        "never uses (refused; nothing in it was run)") from None  # fmt: skip
    except OSError as e:
        raise DataError(f"{show_path(path)}: cannot read ({os_error_text(e)})") from None
    except _Bounded as e:
        raise DataError(f"{show_path(path)}: refused: a CIFAR-10 python file never holds {e} (the pickle would build "
                        "without bound)") from None  # fmt: skip
    except RecursionError:
        raise DataError(f"{show_path(path)}: refused: nested too deeply for a CIFAR-10 python file") from None
    except Exception as e:  # a damaged pickle raises many types
        raise DataError(f"{show_path(path)}: damaged, or not a CIFAR-10 python file ({error_text(e, kind=True)})") from None
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


# -- the reader: batches of images and labels ---------------------------------------------


def _cifar_batch(f: Path) -> tuple[np.ndarray, list[int]]:
    batch = read_cifar_pickle(f)
    try:
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = [int(x) for x in batch["labels"]]
        if len(labels) != len(data) or not all(0 <= x < 256 for x in labels):
            raise ValueError(f"{len(data)} images but {len(labels)} labels, or labels out of range")
    except Exception as e:
        raise DataError(f"{show_path(f)}: not a CIFAR-10 python batch ({error_text(e, kind=True)})") from None
    return data, labels


def read_cifar(path: Path, image_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """The CIFAR-10 python version, a folder (its data_batch_* files) or one batch file: (images, labels, classes, paths).

    Images (N, 3, S, S) uint8, resized from 32 px when ``image_size`` is another
    size; labels (N,) int64; class names from batches.meta when it is there.
    """
    files = [path] if path.is_file() else sorted(path.glob("data_batch_*")) or [path / "test_batch"]
    meta = (path.parent if path.is_file() else path) / "batches.meta"
    images, labels, paths = [], [], []
    for f in files:
        data, batch_labels = _cifar_batch(f)
        images.append(torch.from_numpy(data))
        labels += batch_labels
        paths += [f"{f}#{i}" for i in range(len(data))]
    classes = [str(i) for i in range(max(10, max(labels, default=0) + 1))]
    if meta.is_file():
        names = read_cifar_pickle(meta).get("label_names")
        if not isinstance(names, list) or len(names) <= max(labels, default=0):
            raise DataError(f"{show_path(meta)}: not CIFAR-10 batch metadata (no label_names for every label)")
        classes = [c.decode("utf-8", "backslashreplace") if isinstance(c, bytes) else str(c) for c in names]
    x = torch.cat(images)
    if image_size:
        x = fit_tensor(x, image_size)
    return x, torch.tensor(labels, dtype=torch.long), classes, paths
