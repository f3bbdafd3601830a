"""Looking at what was learned: training curves, embeddings, neighbours and maps.

Everything here takes features that came through ``SimSiam.features`` (see
evaluate.features_of) and the decoded images they came from; nothing reaches
into a model.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402

from .config import ConfigError  # noqa: E402
from .data import ImageSet  # noqa: E402


def plot_training(rows: list[dict[str, Any]], path: Path, feature_dim: int, knn_init: float | None = None) -> None:
    """training.png: loss, z_std against 1/sqrt(d), kNN top-1 and lr over epochs."""
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
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
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the embeddings file ----------------------------------------------------------------------


def write_embeddings(path: str | Path, features: torch.Tensor, images: ImageSet, metadata: dict[str, Any] | None = None) -> None:
    """One row per image: its path, its label and class name when DATA has them, its embedding.

    ``.parquet`` (pyarrow; the embedding is a fixed-size list of float32) or
    ``.npz`` (numpy arrays of the same names), chosen by the suffix. ``metadata``
    (checkpoint, backbone, ...) goes into the file as JSON.

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
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npz":
        np.savez(path, **{k: v.astype(str) if v.dtype == object else v for k, v in columns.items()}, embedding=emb, metadata=np.array(meta))
    elif path.suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrays = {k: pa.array(v) for k, v in columns.items()}
        arrays["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), type=pa.float32()), emb.shape[1])
        table = pa.table(arrays).replace_schema_metadata({"simsiam": meta})
        pq.write_table(table, path)
    else:
        raise ValueError(f"{path}: unknown embeddings format {path.suffix!r}; use .parquet or .npz")


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


def _show(ax, image: torch.Tensor) -> None:
    ax.imshow(image.permute(1, 2, 0).cpu().numpy(), interpolation="lanczos" if image.shape[-1] < 96 else "antialiased")
    ax.set_xticks([])
    ax.set_yticks([])


def _frame(ax, color: str, width: float) -> None:
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


def plot_neighbors(
    query_images: torch.Tensor,
    query_names: list[str],
    query_labels: list[int | None],
    bank: ImageSet,
    sims: torch.Tensor,
    idx: torch.Tensor,
    path: str | Path,
    title: str = "",
) -> None:
    """A grid: one row per query, the query image first, then its neighbours with class and similarity.

    When labels exist a neighbour's frame and title are green when it shares the
    query's class and red when it does not.
    """
    n_rows, k = idx.shape
    fig, axes = plt.subplots(n_rows, k + 1, figsize=(1.45 * (k + 1) + 0.3, 1.8 * n_rows + 0.8), squeeze=False, layout="constrained")
    for r in range(n_rows):
        ax = axes[r, 0]
        _show(ax, query_images[r])
        _frame(ax, "black", 3)
        ax.set_title(f"query\n{_short(query_names[r])}", fontsize=8, fontweight="bold")
        for c in range(k):
            j = int(idx[r, c])
            ax = axes[r, c + 1]
            _show(ax, bank.images[j])
            s = float(sims[r, c])
            if bank.labels is None:
                ax.set_title(f"#{c + 1}\ncos {s:.3f}", fontsize=8)
                _frame(ax, "0.6", 1)
                continue
            label = int(bank.labels[j])
            name = _short(bank.classes[label])
            q = query_labels[r]
            color = "0.2" if q is None else ("tab:green" if label == q else "tab:red")
            ax.set_title(f"{name}\ncos {s:.3f}", fontsize=8, color=color)
            _frame(ax, color if q is not None else "0.6", 2 if q is not None else 1)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _short(text: str, width: int = 14) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# -- the 2-D map ---------------------------------------------------------------------------


def map_method(method: str = "auto") -> str:
    """"UMAP" or "PCA": what ``method`` (auto, umap, pca) means here; auto is UMAP when umap-learn imports."""
    if method not in ("auto", "umap", "pca"):
        raise ConfigError(f"--method: unknown map method {method!r}; choose auto, umap or pca")
    if method == "pca":
        return "PCA"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numba and sklearn deprecation chatter on import
            import umap  # noqa: F401
    except ImportError:
        if method == "umap":
            raise ConfigError("--method umap: umap-learn is not installed (pip install 'simsiam[umap]'); or use --method pca") from None
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
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(n)]
    return [plt.get_cmap("hsv")(i / n) for i in range(n)]


def plot_map(
    coords: np.ndarray,
    images: ImageSet,
    method: str,
    path: str | Path,
    grid: int = 22,
    title: str = "",
) -> int:
    """The map in two panels over the same axes: every image as a point, and thumbnails on a lattice.

    Points and thumbnail frames are coloured by class when labels exist. Returns
    the number of thumbnails drawn.
    """
    labeled = images.labels is not None
    colors = class_colors(len(images.classes)) if labeled else []
    chosen, centres, (x0, x1, y0, y1) = grid_thumbnails(coords, grid)
    # Two square panels placed by hand (inches: 16 x 9 figure, 6.7 x 6.7 panels): a
    # layout engine would fight the square boxes that keep the thumbnails square.
    fig = plt.figure(figsize=(16, 9))
    side_w, side_h = 6.7 / 16, 6.7 / 9
    left = fig.add_axes((0.05, 0.13, side_w, side_h))
    right = fig.add_axes((0.55, 0.13, side_w, side_h))
    point_size = float(np.clip(20000 / max(len(coords), 1), 3, 40))
    if labeled:
        labels = images.labels.cpu().numpy()
        for c, name in enumerate(images.classes):
            mask = labels == c
            left.scatter(coords[mask, 0], coords[mask, 1], s=point_size, color=colors[c], label=name, alpha=0.75, linewidths=0)
    else:
        left.scatter(coords[:, 0], coords[:, 1], s=point_size, color="tab:blue", alpha=0.6, linewidths=0)
    left.set_title(f"all {len(coords)} images" + (", coloured by class" if labeled else " (no labels)"), fontsize=11)
    w, h = (x1 - x0) / grid, (y1 - y0) / grid
    pad = 0.06  # of a cell, on each side: thumbnails never touch
    for i, (cx, cy) in zip(chosen, centres):
        extent = (cx - w * (0.5 - pad), cx + w * (0.5 - pad), cy - h * (0.5 - pad), cy + h * (0.5 - pad))
        right.imshow(images.images[i].permute(1, 2, 0).cpu().numpy(), extent=extent, interpolation="antialiased", zorder=2)
        frame = plt.Rectangle((extent[0], extent[2]), extent[1] - extent[0], extent[3] - extent[2], fill=False, zorder=3)
        if labeled:
            frame.set(edgecolor=colors[int(images.labels[i])], linewidth=2.0)
        else:  # a thin frame keeps pale images apart from the white background
            frame.set(edgecolor="0.55", linewidth=0.8)
        right.add_patch(frame)
    right.set_title(f"{len(chosen)} thumbnails: one per cell of a {grid} x {grid} grid, the image nearest its centre", fontsize=11)
    axis = "UMAP" if method == "UMAP" else "PC"
    for ax in (left, right):
        ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel=f"{axis} 1", ylabel=f"{axis} 2")
        ax.set_aspect("auto")  # imshow asks for 'equal'; square cells come from the square panel instead
    if labeled and len(images.classes) <= 30:
        handles = [plt.Line2D([], [], marker="s", ls="", markersize=9, color=colors[c], label=n) for c, n in enumerate(images.classes)]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(images.classes), 10), fontsize=10, frameon=False, bbox_to_anchor=(0.5, 0.0))
    elif labeled:
        left.set_title(f"all {len(coords)} images, coloured by class ({len(images.classes)} classes, too many for a legend)", fontsize=11)
    fig.suptitle(title, fontsize=13, y=0.965)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return len(chosen)
