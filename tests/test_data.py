import numpy as np
import pytest
import torch
from PIL import Image

from simsiam.data import DataError, load, load_demo

FORMATS = [".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"]


def test_every_supported_format_is_read(tmp_path):
    rng = np.random.default_rng(0)
    for ext in FORMATS:
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / f"img{ext}")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = load(tmp_path, image_size=16, progress=False)
    assert len(ds) == len(FORMATS) and ds.labels is None
    assert ds.images.shape == (len(FORMATS), 3, 16, 16) and ds.images.dtype == torch.uint8


def test_class_subfolders_become_labels(class_folder):
    ds = load(class_folder, progress=False)
    assert ds.classes == ["a", "b"] and ds.labels.bincount().tolist() == [12, 12]
    assert ds.image_size == 16  # auto size: the images' own


def test_changed_files_invalidate_the_cache(class_folder):
    first = load(class_folder, progress=False)
    Image.fromarray(np.full((16, 16, 3), 7, dtype=np.uint8)).save(class_folder / "a" / "new.png")
    assert len(load(class_folder, progress=False)) == len(first) + 1


def test_cifar_python_batches(tmp_path):
    import pickle

    data = np.random.default_rng(0).integers(0, 255, (10, 3072), dtype=np.uint8)
    with open(tmp_path / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": data, b"labels": list(range(10))}, fh)
    with open(tmp_path / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    ds = load(tmp_path)
    assert ds.images.shape == (10, 3, 32, 32) and ds.classes[3] == "c3"
    assert torch.equal(ds.images[2].flatten(), torch.from_numpy(data[2]))


def test_demo_set_is_bundled():
    ds = load_demo()
    assert ds.images.shape == (5000, 3, 32, 32) and ds.labels.bincount().tolist() == [500] * 10


def test_split_is_stratified_and_disjoint(class_folder):
    ds = load(class_folder, progress=False)
    rest, held = ds.split(0.25, seed=0)
    assert held.labels.bincount().tolist() == [3, 3]
    assert not set(rest.paths) & set(held.paths) and len(rest) + len(held) == len(ds)


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        load(tmp_path / "nowhere")
