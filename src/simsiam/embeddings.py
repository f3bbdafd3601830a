"""The embeddings file: one row per image, its path, label and class, and its embedding.

``simsiam embed`` writes it (:func:`write_embeddings`) as Parquet or as a numpy
``.npz``, atomically; :func:`read_embeddings` reads either back as numpy arrays.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simsiam.data.sources import ImageSet
from simsiam.errors import ConfigError
from simsiam.files import atomic_write, show_path


def write_embeddings(path: str | Path, features: torch.Tensor, images: ImageSet, metadata: dict[str, Any] | None = None) -> None:
    """One row per image: its path, its label and class name when DATA has them, its embedding.

    ``.parquet`` (pyarrow; the embedding is a fixed-size list of float32) or
    ``.npz`` (numpy arrays of the same names), chosen by the suffix. ``metadata``
    (checkpoint, backbone, ...) goes into the file as JSON. The file is written
    atomically.

    >>> import pyarrow.parquet as pq  # doctest: +SKIP
    >>> table = pq.read_table("embeddings.parquet")  # doctest: +SKIP
    >>> X = np.stack(table["embedding"].to_numpy(zero_copy_only=False))  # (N, D)  # doctest: +SKIP
    """
    path = Path(path)
    emb = features.detach().float().cpu().numpy()  # (N, D)
    columns: dict[str, Any] = {"path": np.array(images.paths, dtype=object)}
    if images.labels is not None:
        labels = images.labels.cpu().numpy().astype(np.int64)
        columns["label"] = labels
        columns["class"] = np.array([images.classes[i] for i in labels], dtype=object)
    meta = json.dumps(metadata or {})
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".parquet"):
        raise ConfigError(f"{show_path(path)}: unknown embeddings format {suffix!r}; use .parquet or .npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npz":
        arrays = {k: v.astype(str) if v.dtype == object else v for k, v in columns.items()}
        with atomic_write(path) as fh:
            np.savez(fh, **arrays, embedding=emb, metadata=np.array(meta))
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Parquet text is UTF-8: a file name that is not shows its odd bytes as \xNN escapes (as in every message).
    utf8 = np.vectorize(lambda t: t.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"), otypes=[object])
    arrays = {k: pa.array(utf8(v) if v.dtype == object and len(v) else v) for k, v in columns.items()}
    arrays["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), type=pa.float32()), emb.shape[1])
    table = pa.table(arrays).replace_schema_metadata({"simsiam": meta})
    with atomic_write(path) as fh:
        pq.write_table(table, fh)


def read_embeddings(path: str | Path) -> dict[str, Any]:
    """The columns of an embeddings file as numpy arrays (``embedding`` as (N, D) float32), and its metadata."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        with np.load(path) as z:
            out = {k: z[k] for k in z.files if k != "metadata"}
            out["metadata"] = json.loads(str(z["metadata"]))
        return out
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    out = {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names if name != "embedding"}
    column = table["embedding"].combine_chunks()
    out["embedding"] = column.flatten().to_numpy().reshape(len(column), -1)
    out["metadata"] = json.loads((table.schema.metadata or {}).get(b"simsiam", b"{}"))
    return out
