"""Looking at what was learned: training curves, embeddings, neighbours and maps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402


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
