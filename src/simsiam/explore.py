"""Looking at what was learned: training curves, neighbours, maps, and the embeddings file.

Everything here takes features that came through ``SimSiam.features`` (see
evaluate.features_of) and the decoded images they came from; only
:func:`neighbor_grid` runs a model, to embed query files.

Figures are drawn on ``matplotlib.figure.Figure`` objects, which need no global
backend (importing this module changes nothing in matplotlib), and every file is
written atomically (see :mod:`simsiam.files`): a failed write leaves the previous
file and raises an OSError that names it.

The embeddings file (:func:`write_embeddings`, :func:`read_embeddings`), which
``simsiam embed`` writes: one row per image, its path, label and class, and its
embedding, as Parquet or as a numpy ``.npz``.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F

from simsiam.data.decode import decode_image
from simsiam.data.sources import ImageSet
from simsiam.errors import ConfigError, DataError
from simsiam.files import atomic_write, show_path

__all__ = ["save_figure", "plot_training", "nearest_neighbors", "shown", "NeighborGrid", "neighbor_grid", "plot_neighbors"]
__all__ += ["map_method", "project_2d", "grid_thumbnails", "class_colors", "plot_map"]
__all__ += ["write_embeddings", "read_embeddings"]  # the embeddings file


def _figure(**kwargs):
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(fig, target: str | Path | IO[bytes], dpi: int = 110) -> None:
    """Write ``fig`` to a path atomically (format from its suffix), or as PNG to an open binary file."""
    if hasattr(target, "write"):
        fig.savefig(target, format="png", dpi=dpi)
        return
    path = Path(target)
    with atomic_write(path) as fh:
        fig.savefig(fh, format=path.suffix.lower().lstrip(".") or "png", dpi=dpi)


def plot_training(rows: list[dict[str, Any]], path: str | Path | IO[bytes], feature_dim: int, knn_init: float | None = None) -> None:
    """training.png: loss, z_std against 1/sqrt(d), kNN top-1 and lr over epochs.

    ``path`` is a file name (written atomically) or an open binary file (PNG).
    """
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    fig = _figure(figsize=(10, 7), layout="constrained")
    axes = fig.subplots(2, 2)
    ax = axes[0, 0]
    ax.plot(epochs, [r["loss"] for r in rows], marker=".")
    ax.axhline(-1, color="gray", lw=0.8, ls=":", label="minimum (-1, cosine)")
    ax.set(title="SimSiam loss", xlabel="epoch", ylabel="loss")
    ax.legend(loc="upper right", fontsize=8)
    ax = axes[0, 1]
    ax.plot(epochs, [r["z_std"] for r in rows], marker=".", label="std of l2-normalised z")
    ax.axhline(1 / math.sqrt(feature_dim), color="green", lw=0.8, ls="--", label=f"healthy: 1/sqrt({feature_dim})")
    ax.axhline(0, color="red", lw=0.8, ls=":", label="collapsed")
    ax.set(title="Collapse monitor", xlabel="epoch", ylabel="z std")
    ax.legend(loc="lower right", fontsize=8)
    ax = axes[1, 0]
    knn = [(r["epoch"], r["knn_top1"]) for r in rows if r.get("knn_top1") is not None]
    if knn:
        ax.plot(*zip(*knn), marker=".", label="trained")
        if knn_init is not None:
            ax.axhline(knn_init, color="gray", ls="--", lw=0.8, label=f"random init ({knn_init:.3f})")
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no labels: kNN not measured", ha="center", va="center", transform=ax.transAxes)
    ax.set(title="Online kNN top-1 (held-out images)", xlabel="epoch", ylabel="accuracy")
    ax = axes[1, 1]
    ax.plot(epochs, [r["lr"] for r in rows], marker=".")
    ax.set(title="Learning rate (end of epoch)", xlabel="epoch", ylabel="lr")
    save_figure(fig, path)


# -- nearest neighbours --------------------------------------------------------------------


def nearest_neighbors(
    queries: torch.Tensor, bank: torch.Tensor, k: int = 8, exclude: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities and indices (Q, k) of the k nearest bank features to each query, best first.

    Features are l2-normalised first. ``exclude`` (Q,) is a bank index per query
    to leave out (the query itself when it comes from the bank), or -1 for none.

    >>> bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    >>> nearest_neighbors(bank[:1], bank, k=2, exclude=torch.tensor([0]))[1]
    tensor([[2, 1]])
    """
    q = F.normalize(queries.float(), dim=1)  # (Q, D)
    b = F.normalize(bank.float().to(q.device), dim=1)  # (N, D)
    sim = q @ b.T  # (Q, N)
    if exclude is not None:
        rows = torch.nonzero(exclude >= 0).flatten()
        sim[rows, exclude[rows].to(sim.device)] = -float("inf")
    k = min(k, b.shape[0] - (1 if exclude is not None and bool((exclude >= 0).any()) else 0))
    return sim.topk(k, dim=1)


def shown(image: torch.Tensor) -> np.ndarray:
    """A (C, H, W) uint8 image as matplotlib shows it: RGB as is, the first three bands of a stack as RGB, else grey (H, W, 3)."""
    bands = image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1)
    return bands.permute(1, 2, 0).cpu().numpy()


def _show(ax, image: torch.Tensor) -> None:
    ax.imshow(shown(image), interpolation="lanczos" if image.shape[-1] < 96 else "antialiased")
    ax.set_xticks([])
    ax.set_yticks([])


def _frame(ax, color: str, width: float) -> None:
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


@dataclass
class NeighborGrid:
    """Queries and their nearest neighbours in a bank of images: what :func:`neighbor_grid` returns."""

    images: torch.Tensor  # (Q, C, S, S) uint8: the query images
    names: list[str]  # a short printable name per query
    labels: list[int | None]  # each query's class in the bank's classes, None when unknown
    bank_index: torch.Tensor  # (Q,) each query's index in the bank, -1 for a file from outside it
    sims: torch.Tensor  # (Q, k) cosine similarities, best first (CPU)
    idx: torch.Tensor  # (Q, k) bank indices of the neighbours (CPU)
    agreement: float | None  # fraction of the neighbours that share their query's class, when every query has one


def neighbor_grid(
    model: torch.nn.Module,
    bank: ImageSet,
    bank_features: torch.Tensor,
    queries: list[str | Path] | None = None,
    num_queries: int = 6,
    k: int = 8,
    seed: int = 0,
    device: torch.device | str | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    crop: int | None = None,
) -> NeighborGrid:
    """The k nearest neighbours in ``bank`` (features (N, D) from ``model``) of each query.

    Queries are the image files ``queries`` (decoded at the bank's image size and
    channels, normalised with ``mean`` and ``std`` as the bank was (None: ImageNet's,
    for RGB), and embedded with ``model`` on ``device``, default the features' device), or
    ``num_queries`` random images of the bank (``seed``). A query that is one of
    the bank's own images is never its own neighbour, and has the bank's label.
    Raises DataError naming a query file that is missing or not an image.
    """
    if len(bank) < 2:
        raise DataError(f"{show_path(bank.source)}: one image only; neighbours need at least two")
    device = torch.device(device) if device is not None else bank_features.device
    if queries:
        images = torch.stack([_decode_query(q, bank.image_size, bank.channels) for q in queries])  # (Q, C, S, S) uint8
        from simsiam.evaluate import features_of

        query_features, _ = features_of(model, images, device, mean=mean, std=std, crop=crop)  # (Q, D); crop: as the bank's
        where = {os.path.realpath(p): i for i, p in enumerate(bank.paths)}
        exclude = torch.tensor([where.get(os.path.realpath(q), -1) for q in queries])
        labels = [None if bank.labels is None or i < 0 else int(bank.labels[i]) for i in exclude.tolist()]
        names = [show_path("/".join(Path(q).parts[-2:])) for q in queries]
    else:
        picks = torch.randperm(len(bank), generator=torch.Generator().manual_seed(seed))[:num_queries]
        images, query_features, exclude = bank.images[picks], bank_features[picks.to(bank_features.device)], picks
        labels = [None if bank.labels is None else int(bank.labels[i]) for i in picks]
        names = [bank.classes[lab] if lab is not None else Path(bank.paths[i]).name for lab, i in zip(labels, picks.tolist())]
        names = [show_path(n) for n in names]
    sims, idx = nearest_neighbors(query_features.to(device), bank_features.to(device), k=k, exclude=exclude)  # (Q, k) each
    sims, idx = sims.cpu(), idx.cpu()
    agreement = None
    if bank.labels is not None and all(lab is not None for lab in labels):
        agreement = (bank.labels[idx] == torch.tensor(labels)[:, None]).float().mean().item()
    return NeighborGrid(images, names, labels, exclude, sims, idx, agreement)


def _decode_query(query: str | Path, size: int, channels: int = 3) -> torch.Tensor:
    if not os.path.lexists(query):
        raise DataError(f"query image {show_path(query)}: no such file")
    try:
        return decode_image(query, size, channels)
    except DataError as e:
        raise DataError(f"query image {e}") from None


def plot_neighbors(grid: NeighborGrid, bank: ImageSet, path: str | Path | IO[bytes], title: str = "") -> None:
    """A grid: one row per query, the query image first, then its neighbours with class and similarity.

    When labels exist a neighbour's frame and title are green when it shares the
    query's class and red when it does not (the title says so).
    """
    n_rows, k = grid.idx.shape
    fig = _figure(figsize=(1.45 * (k + 1) + 0.3, 1.8 * n_rows + 0.8), layout="constrained")
    axes = fig.subplots(n_rows, k + 1, squeeze=False)
    for r in range(n_rows):
        ax = axes[r, 0]
        _show(ax, grid.images[r])
        _frame(ax, "black", 3)
        ax.set_title(f"query\n{_short(grid.names[r])}", fontsize=8, fontweight="bold")
        for c in range(k):
            j, s, ax = int(grid.idx[r, c]), float(grid.sims[r, c]), axes[r, c + 1]
            _show(ax, bank.images[j])
            if bank.labels is None:
                ax.set_title(f"#{c + 1}\ncos {s:.3f}", fontsize=8)
                _frame(ax, "0.6", 1)
                continue
            label, q = int(bank.labels[j]), grid.labels[r]
            color = "0.2" if q is None else ("tab:green" if label == q else "tab:red")
            ax.set_title(f"{_short(show_path(bank.classes[label]))}\ncos {s:.3f}", fontsize=8, color=color)
            _frame(ax, color if q is not None else "0.6", 2 if q is not None else 1)
    if bank.labels is not None and any(lab is not None for lab in grid.labels):
        title = (title + "\n" if title else "") + "green: same class as the query, red: another class"
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def _short(text: str, width: int = 14) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# -- the 2-D map ---------------------------------------------------------------------------


def map_method(method: str = "auto") -> str:
    """ "UMAP" or "PCA": what ``method`` (auto, umap, pca) means here; auto is UMAP when umap-learn imports."""
    if method not in ("auto", "umap", "pca"):
        raise ConfigError(f"unknown map method {method!r}; choose auto, umap or pca", key="method")
    if method == "pca":
        return "PCA"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numba and sklearn deprecation chatter on import
            import umap  # noqa: F401
    except ImportError:
        if method == "umap":
            raise ConfigError("umap-learn is not installed (pip install 'simsiam[umap]'); or use pca", key="method") from None
        return "PCA"
    return "UMAP"


def project_2d(features: torch.Tensor, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates (N, 2) of l2-normalised features and the name of the method used ("UMAP" or "PCA").

    ``method``: "umap" (umap-learn, cosine metric), "pca" (torch.pca_lowrank) or
    "auto" (UMAP when umap-learn is installed, else PCA). UMAP needs more than a
    handful of points; below that PCA is used.
    """
    x = F.normalize(features.float().cpu(), dim=1)  # (N, D)
    if map_method(method) == "UMAP" and x.shape[0] > 3:
        import umap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", tiny-set spectral warnings
            reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(15, x.shape[0] - 1)), metric="cosine", random_state=seed)
            coords = reducer.fit_transform(x.numpy())  # (N, 2)
        return np.asarray(coords, dtype=np.float64), "UMAP"
    centred = x - x.mean(dim=0)
    _, _, v = torch.pca_lowrank(centred, q=min(2, *centred.shape), center=False, niter=4)
    coords = (centred @ v[:, :2]).numpy().astype(np.float64)  # (N, <=2)
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords, "PCA"


def grid_thumbnails(coords: np.ndarray, grid: int) -> tuple[list[int], np.ndarray, tuple[float, float, float, float]]:
    """Pick at most one image per cell of a grid x grid lattice laid over the map.

    Returns the chosen indices, their cells' centres (K, 2) and the lattice's
    extent (x0, x1, y0, y1). Each chosen image is the one nearest its cell's
    centre; a thumbnail drawn inside its own cell can never overlap another.
    """
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    lo, hi = lo - 0.02 * span, hi + 0.02 * span  # keep extreme points off the lattice's edge
    size = (hi - lo) / grid  # (2,)
    cell = np.clip(((coords - lo) / size).astype(int), 0, grid - 1)  # (N, 2)
    centres = lo + (cell + 0.5) * size  # (N, 2)
    dist = (((coords - centres) / size) ** 2).sum(axis=1)
    best: dict[tuple[int, int], int] = {}
    for i in np.argsort(dist, kind="stable"):
        best.setdefault((int(cell[i, 0]), int(cell[i, 1])), int(i))
    chosen = sorted(best.values())
    return chosen, centres[chosen], (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))


def class_colors(n: int) -> list:
    """n distinguishable colours: tab10 up to 10 classes, tab20 up to 20, then a hue circle."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["hsv"](i / n) for i in range(n)]


def plot_map(coords: np.ndarray, images: ImageSet, method: str, path: str | Path | IO[bytes], grid: int = 22, title: str = "") -> int:
    """The map in two panels over the same axes: every image as a point, and thumbnails on a lattice.

    Points and thumbnail frames are coloured by class when labels exist. Returns
    the number of thumbnails drawn. ``path``: a file name (written atomically) or
    an open binary file (PNG).
    """
    from matplotlib.lines import Line2D

    labeled = images.labels is not None
    colors = class_colors(len(images.classes)) if labeled else []
    chosen, centres, (x0, x1, y0, y1) = grid_thumbnails(coords, grid)
    # Two square panels placed by hand (inches: 16 x 9 figure, 6.7 x 6.7 panels): a
    # layout engine would fight the square boxes that keep the thumbnails square.
    fig = _figure(figsize=(16, 9))
    left, right = (fig.add_axes((x, 0.13, 6.7 / 16, 6.7 / 9)) for x in (0.05, 0.55))
    point_size = float(np.clip(20000 / max(len(coords), 1), 3, 40))
    if labeled:
        labels = images.labels.cpu().numpy()
        for c in range(len(images.classes)):
            left.scatter(coords[labels == c, 0], coords[labels == c, 1], s=point_size, color=colors[c], alpha=0.75, linewidths=0)
    else:
        left.scatter(coords[:, 0], coords[:, 1], s=point_size, color="tab:blue", alpha=0.6, linewidths=0)
    left.set_title(f"all {len(coords)} images" + (", coloured by class" if labeled else " (no labels)"), fontsize=11)
    _draw_thumbnails(right, images, chosen, centres, ((x1 - x0) / grid, (y1 - y0) / grid), colors)
    right.set_title(f"{len(chosen)} thumbnails: one per cell of a {grid} x {grid} grid, the image nearest its centre", fontsize=11)
    axis = "UMAP" if method == "UMAP" else "PC"
    for ax in (left, right):
        ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel=f"{axis} 1", ylabel=f"{axis} 2")
        ax.set_aspect("auto")  # imshow asks for 'equal'; square cells come from the square panel instead
    if labeled and len(images.classes) <= 30:
        handles = [
            Line2D([], [], marker="s", ls="", markersize=9, color=colors[c], label=show_path(n)) for c, n in enumerate(images.classes)
        ]
        ncol = min(len(images.classes), 10)
        fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=10, frameon=False, bbox_to_anchor=(0.5, 0.0))
    elif labeled:
        left.set_title(f"all {len(coords)} images, coloured by class ({len(images.classes)} classes, too many for a legend)", fontsize=11)
    fig.suptitle(title, fontsize=13, y=0.965)
    save_figure(fig, path)
    return len(chosen)


def _draw_thumbnails(ax, images: ImageSet, chosen: list[int], centres: np.ndarray, cell: tuple[float, float], colors: list) -> None:
    """Each chosen image inside its own cell (centre, cell size (w, h)), framed in its class's colour."""
    from matplotlib.patches import Rectangle

    (w, h), pad = cell, 0.06  # pad: of a cell, on each side; thumbnails never touch
    for i, (cx, cy) in zip(chosen, centres):
        extent = (cx - w * (0.5 - pad), cx + w * (0.5 - pad), cy - h * (0.5 - pad), cy + h * (0.5 - pad))
        ax.imshow(shown(images.images[i]), extent=extent, interpolation="antialiased", zorder=2)
        frame = Rectangle((extent[0], extent[2]), extent[1] - extent[0], extent[3] - extent[2], fill=False, zorder=3)
        if images.labels is not None:
            frame.set(edgecolor=colors[int(images.labels[i])], linewidth=2.0)
        else:  # a thin frame keeps pale images apart from the white background
            frame.set(edgecolor="0.55", linewidth=0.8)
        ax.add_patch(frame)


# -- the embeddings file -----------------------------------------------------------------------


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
