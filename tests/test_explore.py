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


# -- the neighbours grid, as `simsiam neighbors` draws it ------------------------------------------


@pytest.fixture
def bank(tmp_path):
    from PIL import Image

    from simsiam.data import load

    rng = np.random.default_rng(0)
    for c, colour in enumerate([(220, 30, 30), (30, 30, 220)]):
        (tmp_path / "bank" / f"class{c}").mkdir(parents=True)
        for i in range(5):
            pixels = np.asarray(colour) + rng.normal(0, 15, (16, 16, 3))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(tmp_path / "bank" / f"class{c}" / f"{i}.png")
    return load(tmp_path / "bank", progress=False)


def _model_and_features(bank):
    from simsiam.evaluate import features_of
    from simsiam.model import SimSiam

    model = SimSiam("resnet10-slim", small_images=True, proj_dim=16).eval()
    return model, features_of(model, bank.images, "cpu")[0]


def test_neighbor_grid_of_random_queries_leaves_each_query_out(bank, tmp_path):
    from simsiam.explore import neighbor_grid, plot_neighbors

    model, feats = _model_and_features(bank)
    grid = neighbor_grid(model, bank, feats, num_queries=4, k=3, seed=1)
    assert grid.images.shape == (4, 3, 16, 16) and grid.idx.shape == grid.sims.shape == (4, 3)
    for query, image, row in zip(grid.bank_index.tolist(), grid.images, grid.idx.tolist()):
        assert torch.equal(bank.images[query], image) and query not in row
    assert all(lab is not None for lab in grid.labels) and 0 <= grid.agreement <= 1
    expected = (bank.labels[grid.idx] == torch.tensor(grid.labels)[:, None]).float().mean().item()
    assert grid.agreement == pytest.approx(expected)
    plot_neighbors(grid, bank, tmp_path / "n.png", title="t")
    assert (tmp_path / "n.png").stat().st_size > 1000


def test_neighbor_grid_of_query_files(bank, tmp_path):
    from PIL import Image

    from simsiam.data import DataError
    from simsiam.explore import neighbor_grid

    model, feats = _model_and_features(bank)
    inside = bank.paths[7]  # one of the bank's own files: not its own neighbour, and its label is known
    outside = tmp_path / "outside.png"
    Image.new("RGB", (20, 20), (200, 40, 40)).save(outside)
    grid = neighbor_grid(model, bank, feats, queries=[inside, outside], k=9)
    assert grid.bank_index.tolist() == [7, -1] and 7 not in grid.idx[0].tolist() and grid.idx.shape == (2, 9)
    assert grid.labels == [int(bank.labels[7]), None] and grid.agreement is None
    assert grid.names[1] == f"{tmp_path.name}/outside.png"
    with pytest.raises(DataError, match=r"^query image .*missing\.png: no such file$"):
        neighbor_grid(model, bank, feats, queries=[tmp_path / "missing.png"])
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DataError, match=r"^query image .*notes\.png: not an image"):
        neighbor_grid(model, bank, feats, queries=[tmp_path / "notes.png"])
    with pytest.raises(DataError, match="one image only"):
        neighbor_grid(model, bank.subset(torch.tensor([0])), feats[:1])


def test_importing_simsiam_changes_no_global_state():
    """No Lightning, no pyplot, no matplotlib backend chosen, Pillow's limits untouched: until a function needs them."""
    import subprocess

    code = (
        "import sys, matplotlib, PIL.Image as I; limit = I.MAX_IMAGE_PIXELS; "
        "backend = matplotlib.rcParams._get_backend_or_none(); "
        "import simsiam, simsiam.data, simsiam.data.decode, simsiam.evaluate, simsiam.explore, simsiam.export; "
        "print(sorted(m for m in ('lightning', 'matplotlib.pyplot') if m in sys.modules), "
        "I.MAX_IMAGE_PIXELS == limit, matplotlib.rcParams._get_backend_or_none() == backend)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[] True True", done.stderr[-2000:]
