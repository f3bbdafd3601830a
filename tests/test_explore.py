"""Exploration: neighbours, the embeddings file and the thumbnail map's layout."""

import sys

import numpy as np
import pytest
import torch

from simsiam.config import ConfigError
from simsiam.data import ImageSet
from simsiam.explore import grid_thumbnails, nearest_neighbors, project_2d, read_embeddings, write_embeddings


def test_nearest_neighbors_rank_by_cosine_and_leave_the_query_out():
    bank = torch.tensor([[1.0, 0.0], [10.0, 1.0], [0.0, 1.0], [1.0, 1.0]])  # lengths differ: cosine ignores them
    sims, idx = nearest_neighbors(bank[:1], bank, k=3, exclude=torch.tensor([0]))
    assert idx.tolist() == [[1, 3, 2]]
    assert sims[0].tolist() == pytest.approx([10 / 101**0.5, 2**-0.5, 0.0], abs=1e-6)
    _, idx = nearest_neighbors(torch.tensor([[0.0, 1.0]]), bank, k=1)  # an outside query keeps every bank image
    assert idx.tolist() == [[2]]


@pytest.mark.parametrize("suffix", [".parquet", ".npz"])
@pytest.mark.parametrize("labeled", [True, False])
def test_embeddings_file_round_trip(tmp_path, suffix, labeled):
    feats = torch.randn(5, 7)
    images = ImageSet(
        torch.zeros(5, 3, 8, 8, dtype=torch.uint8),
        torch.tensor([0, 1, 1, 0, 1]) if labeled else None,
        ["cat", "dog"] if labeled else [],
        [f"photos/{i}.jpg" for i in range(5)],
        "photos",
    )
    path = tmp_path / f"emb{suffix}"
    write_embeddings(path, feats, images, {"backbone": "resnet18"})
    table = read_embeddings(path)
    assert np.allclose(table["embedding"], feats.numpy()) and table["embedding"].dtype == np.float32
    assert list(table["path"]) == images.paths
    assert table["metadata"] == {"backbone": "resnet18"}
    if labeled:
        assert table["label"].tolist() == [0, 1, 1, 0, 1]
        assert list(table["class"]) == ["cat", "dog", "dog", "cat", "dog"]
    else:
        assert "label" not in table and "class" not in table


@pytest.mark.parametrize("seed", range(5))
def test_thumbnails_never_overlap(seed):
    g = np.random.default_rng(seed)
    coords = np.concatenate([g.normal(0, 1, (300, 2)), g.normal(5, 0.1, (300, 2))])  # a wide cloud and a tight clump
    grid = 12
    chosen, centres, (x0, x1, y0, y1) = grid_thumbnails(coords, grid)
    w, h = (x1 - x0) / grid, (y1 - y0) / grid
    assert len(chosen) == len(set(chosen)) <= grid * grid
    # Thumbnails are drawn inside their cells; two distinct cells' centres are a cell apart on some axis.
    dx = np.abs(centres[:, None, 0] - centres[None, :, 0]) / w
    dy = np.abs(centres[:, None, 1] - centres[None, :, 1]) / h
    apart = np.maximum(dx, dy) + np.eye(len(chosen)) * 9
    assert apart.min() > 0.999
    # Every chosen image lies in the cell its thumbnail fills.
    assert np.all(np.abs(coords[chosen] - centres) <= np.array([w, h]) / 2 + 1e-9)
    assert np.all((coords[:, 0] >= x0) & (coords[:, 0] <= x1) & (coords[:, 1] >= y0) & (coords[:, 1] <= y1))


def test_map_falls_back_to_pca_without_umap(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # makes `import umap` raise ImportError
    centres = torch.eye(3, 16) * 5
    feats = centres.repeat_interleave(10, dim=0) + 0.1 * torch.randn(30, 16, generator=torch.Generator().manual_seed(0))
    coords, method = project_2d(feats, "auto")
    assert method == "PCA" and coords.shape == (30, 2)
    # Three clusters stay apart in the plane: each point is nearer its own cluster's mean than any other.
    means = np.stack([coords[i * 10 : (i + 1) * 10].mean(axis=0) for i in range(3)])
    nearest = np.linalg.norm(coords[:, None] - means[None], axis=2).argmin(axis=1)
    assert nearest.tolist() == [i for i in range(3) for _ in range(10)]
    with pytest.raises(ConfigError, match="umap-learn"):
        project_2d(feats, "umap")
