"""Folders larger than memory: the disk-backed cache, the one batch source, and the paths that read from it.

Every test here is small (tens to hundreds of images) with the cache forced to
disk (``--data-on disk``), which takes the same code path a folder of a million
images takes on its own.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

import simsiam
import simsiam.system
from simsiam.checkpoint import read_checkpoint
from simsiam.cli import main
from simsiam.config import layered, load_yaml
from simsiam.data import load
from simsiam.data.batches import Batches, BatchSource, ShardedBatches, in_order
from simsiam.data.disk import DiskImages
from simsiam.errors import TrainingInterrupted
from simsiam.files import CacheWarning
from simsiam.train import fit

from .conftest import TINY, write_class_folder

SRC = str(Path(simsiam.__file__).resolve().parents[1])


def photos(root: Path, n: int, size: tuple[int, int] = (224, 224), seed: int = 0) -> Path:
    """``n`` smooth colour JPEGs (each its own gradient and a little noise): cheap to write, realistic to compress."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        a, b, c = rng.uniform(0.2, 1.0, 3)
        base = np.stack([xx * a * 255 / w, yy * b * 255 / h, (xx + yy) * c * 127 / (w + h)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"{i:04d}.jpg", quality=90)
    return root


def entries(cache: Path) -> list[str]:
    """The names in the image cache, lock files left out."""
    folder = cache / "images"
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.exists() else []


# -- the source -------------------------------------------------------------------------------


def test_the_disk_source_hands_out_what_the_memory_source_does(tmp_path):
    data = write_class_folder(tmp_path / "data", per_class=20)
    in_memory = load(data, progress=False, data_on="memory")
    on_disk = load(data, progress=False, data_on="disk")
    assert isinstance(in_memory.images, torch.Tensor) and isinstance(on_disk.images, DiskImages)
    assert on_disk.paths == in_memory.paths and torch.equal(on_disk.labels, in_memory.labels)
    memory, disk = BatchSource.place(in_memory.images, "cpu"), BatchSource.place(on_disk.images, "cpu", "disk")
    assert (memory.where, disk.where) == ("memory", "disk")
    for epoch in (0, 1):
        a, b = (Batches(s, ShardedBatches(len(s), 8, seed=1)) for s in (memory, disk))
        a.sampler.set_epoch(epoch), b.sampler.set_epoch(epoch)
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert disk.images.rows_read == 2 * len(a) * 8  # what was handed out, read once
    assert torch.equal(torch.cat(list(in_order(on_disk.images, 7))), in_memory.images)
    held, _ = on_disk.split(0.25)  # a view: nothing read
    assert isinstance(held.images, DiskImages) and torch.equal(held.images[:], in_memory.split(0.25)[0].images)


def test_jpeg_cache_is_smaller_and_close_to_raw(tmp_path):
    data = photos(tmp_path / "data", 12, size=(300, 260))
    raw = load(data, image_size=64, progress=False, data_on="disk", cache_format="raw")
    jpeg = load(data, image_size=64, progress=False, data_on="disk", cache_format="jpeg")
    assert raw.images.entry.format == "raw" and jpeg.images.entry.format == "jpeg"
    assert jpeg.images.entry.data_bytes < raw.images.entry.data_bytes / 2
    a, b = raw.images[:].float(), jpeg.images[:].float()
    assert a.shape == b.shape and (a - b).abs().mean() < 3  # quality 95: a few grey levels at most, on average
    index = torch.tensor([5, 0, 11, 3])
    assert torch.equal(jpeg.images[index], torch.stack([jpeg.images[int(i)] for i in index]))


# -- training from disk: bit for bit, resumable ------------------------------------------------------


OPTIONS = {"epochs": 3, "batch_size": 8, "model.backbone": "resnet10-slim", "model.proj_dim": 32, "model.pred_hidden_dim": 8,
           "accelerator": "cpu", "seed": 4, "knn_k": 5}  # fmt: skip


class _CtrlCAt(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step + 1 == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def _fit(data: Path, out: Path, callbacks=(), **options) -> str:
    cfg, _ = layered({**OPTIONS, **options, "data": str(data), "out": str(out)})
    text = io.StringIO()
    with contextlib.redirect_stdout(text), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(cfg, progress=False, callbacks=list(callbacks))
    return text.getvalue()


def test_training_from_disk_is_bit_for_bit_that_from_memory_and_resumes_exactly(tmp_path, capsys):
    data = write_class_folder(tmp_path / "data", per_class=12)  # 22 train, 2 held out: 2 steps of 8 an epoch, and the kNN
    log = _fit(data, tmp_path / "memory", data_on="memory")
    assert "held in memory: --data-on memory" in log
    with pytest.raises(TrainingInterrupted):
        _fit(data, tmp_path / "disk", [_CtrlCAt(3)], data_on="disk")  # stops after the first step of epoch 2
    assert read_checkpoint(tmp_path / "disk" / "checkpoints" / "last.ckpt")["global_step"] == 3
    code = main(["train", "--resume", "--out", str(tmp_path / "disk"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "resuming from" in out and "(epoch 2 of 3, 1 of its 2 steps done)" in out
    assert "kept on disk (" in out and "read in prefetched batches: --data-on disk" in out
    a = read_checkpoint(tmp_path / "memory" / "checkpoints" / "last.ckpt")["state_dict"]
    b = read_checkpoint(tmp_path / "disk" / "checkpoints" / "last.ckpt")["state_dict"]
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_auto_leaves_a_set_larger_than_memory_on_disk_as_jpeg(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(simsiam.system, "memory_available", lambda: 10_000)  # 10 kB free: nothing fits
    monkeypatch.setenv("SIMSIAM_CACHE", str(tmp_path / "cache"))
    data = photos(tmp_path / "data", 16, size=(96, 80))
    code = main(["train", str(data), "--out", str(tmp_path / "run"), *TINY, "--image-size", "32", "--epochs", "1", "--accelerator", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "images: 0.0 MB decoded at 32 px, kept on disk (" in captured.out
    assert "JPEGs decoded per batch) and read in prefetched batches: more than half of the 0.0 MB of free memory" in captured.out
    assert [name.rsplit(".", 1)[1] for name in entries(tmp_path / "cache")] == ["jpeg"]


# -- the ImageNet recipe, end to end at toy scale ----------------------------------------------------------


def test_the_imagenet_recipe_trains_on_large_jpegs_from_a_256_px_jpeg_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SIMSIAM_CACHE", str(tmp_path / "cache"))
    data = photos(tmp_path / "photos", 12, size=(480, 360))
    run = tmp_path / "run"
    args = ["train", str(data), "--recipe", "imagenet", "--backbone", "resnet10-slim", "--epochs", "1", "--batch-size", "4",
            "--accelerator", "cpu", "--cache-format", "jpeg", "--data-on", "disk", "--out", str(run), "--no-progress"]  # fmt: skip
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "images: 2.4 MB decoded at 256 px, kept on disk (" in captured.out and "JPEGs decoded per batch" in captured.out
    cfg = load_yaml(run / "config.yaml")
    assert (cfg["image_size"], cfg["cache_size"], cfg["cache_format"], cfg["augment"]["blur_p"]) == (224, 256, "jpeg", 0.5)
    assert cfg["model"]["proj_layers"] == 3
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 1
    # embed reads the same 256 px cache and takes features of its 224 px centres: from memory, and from disk
    code = main(["embed", str(run), str(data), "--out", str(tmp_path / "memory.npz"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    monkeypatch.setattr(simsiam.system, "memory_available", lambda: 1000)  # nothing fits: read batch by batch from disk
    code = main(["embed", str(run), str(data), "--out", str(tmp_path / "disk.npz"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    from_memory, from_disk = np.load(tmp_path / "memory.npz")["embedding"], np.load(tmp_path / "disk.npz")["embedding"]
    assert from_memory.shape[0] == 12 and np.array_equal(from_memory, from_disk)
    assert [name.rsplit(".", 1)[1] for name in entries(tmp_path / "cache")] == ["jpeg"]  # the training's entry, read again


# -- peak memory stays bounded while the set grows ---------------------------------------------------


PEAK = textwrap.dedent(
    """
    import sys, torch
    from simsiam.data.batches import Batches, BatchSource, ShardedBatches
    from simsiam.data import load
    from simsiam.evaluate import extract_features

    class Pool(torch.nn.Module):  # a model that costs nothing: the test is about the data
        def features(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)

    def peak_kib():
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])

    torch.set_num_threads(1)
    ds = load(sys.argv[1], image_size=224, progress=False, data_on=sys.argv[2])
    source = BatchSource.place(ds.images, "cpu", sys.argv[2])
    for batch in Batches(source, ShardedBatches(len(source), 32, seed=0)):  # an epoch of training batches
        pass
    feats = extract_features(Pool(), ds.images, batch_size=32, device="cpu")  # the kNN, evaluate, embed
    print(peak_kib(), len(ds), feats.shape[0])
    """
)


def _peak(folder: Path, cache: Path, data_on: str = "disk") -> tuple[int, int]:
    env = {**os.environ, "SIMSIAM_CACHE": str(cache), "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}
    done = subprocess.run([sys.executable, "-c", PEAK, str(folder), data_on], capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    peak, n, n_feats = map(int, done.stdout.split())
    assert n == n_feats
    return peak * 1024, n


def copies(root: Path, n: int, of: Path) -> Path:
    """``n`` files, the images of ``of`` again and again under new names: each is decoded and cached like any other."""
    root.mkdir(parents=True)
    originals = sorted(of.iterdir())
    for i in range(n):
        (root / f"{i:05d}.jpg").write_bytes(originals[i % len(originals)].read_bytes())
    return root


def test_peak_memory_does_not_grow_with_the_decoded_set(tmp_path):
    """VmHWM of a process that builds the cache, trains an epoch of batches and extracts features: 300 vs 1,200 images at 224 px."""
    originals = photos(tmp_path / "originals", 24)
    small, large = copies(tmp_path / "small", 300, originals), copies(tmp_path / "large", 1200, originals)
    peak_small, n_small = _peak(small, tmp_path / "cache")
    peak_large, n_large = _peak(large, tmp_path / "cache")
    grown = (n_large - n_small) * 3 * 224 * 224  # 135 MB more decoded images
    print(f"\npeak RSS: {peak_small / 1e6:.0f} MB with {n_small} images, {peak_large / 1e6:.0f} MB with {n_large} "
          f"({(peak_large - peak_small) / 1e6:+.0f} MB for {grown / 1e6:.0f} MB more decoded images)")  # fmt: skip
    assert peak_large - peak_small < 0.3 * grown, (peak_small, peak_large, grown)


# -- a full disk, a disk too small -------------------------------------------------------------------


FULL_DISK = textwrap.dedent(
    """
    import resource, sys
    from simsiam.cli import main
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))  # writes past 200 kB fail, as on a full disk
    sys.exit(main(["train", sys.argv[1], "--out", sys.argv[2], "--image-size", "64", "--data-on", "disk", "--cache-format", "raw",
                   "--epochs", "1", "--no-progress"]))
    """
)


def test_a_full_disk_while_writing_the_cache_is_one_line_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    data = photos(tmp_path / "data", 40, size=(64, 64))  # 40 x 12 kB raw: past the limit midway
    cache = tmp_path / "cache"
    env = {**os.environ, "SIMSIAM_CACHE": str(cache), "PYTHONPATH": SRC}
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(data), str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=240
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"simsiam train: error: cannot write the image cache {cache}/images/") and "(File too large)" in lines[0]
    assert "nothing of it was kept" in lines[0] and "--cache-format jpeg" in lines[0] and "$SIMSIAM_CACHE" in lines[0]
    assert entries(cache) == []  # no entry, no partial folder
    monkeypatch.setenv("SIMSIAM_CACHE", str(cache))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # nothing damaged to warn about: it is simply built
        ds = load(data, image_size=64, progress=False, data_on="disk")
    assert len(ds) == 40 and len(entries(cache)) == 1


def test_a_disk_too_small_for_the_cache_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    import shutil

    import simsiam.data.folder

    real = shutil.disk_usage
    monkeypatch.setattr(simsiam.data.folder.shutil, "disk_usage", lambda p: real(p)._replace(free=50_000))
    monkeypatch.setenv("SIMSIAM_CACHE", str(tmp_path / "cache"))
    data = photos(tmp_path / "data", 8, size=(64, 64))
    code = main(["train", str(data), "--out", str(tmp_path / "run"), "--image-size", "64", "--cache-format", "raw", "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("simsiam train: error: not enough disk for the image cache: 8 images at 64 px take 0.1 MB (raw) in ")
    assert "where 0.1 MB are free; shrink it with --image-size (or --cache-size), --cache-format jpeg" in err[0]
    assert entries(tmp_path / "cache") == [] and not (tmp_path / "run").exists()


def test_a_truncated_jpeg_shard_is_named_and_rebuilt(tmp_path):
    data = photos(tmp_path / "data", 6, size=(80, 80))
    first = load(data, image_size=32, progress=False, data_on="disk", cache_format="jpeg")
    before = first.images[:]
    shard = first.images.entry.path / "shard-000.bin"
    shard.write_bytes(shard.read_bytes()[:-10])
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        again = load(data, image_size=32, progress=False, data_on="disk", cache_format="jpeg")
    messages = [str(w.message) for w in said if issubclass(w.category, CacheWarning)]
    assert len(messages) == 1 and str(shard) in messages[0] and "truncated" in messages[0]
    assert torch.equal(again.images[:], before)  # the same images, encoded again


def test_a_cache_folder_that_cannot_be_made_costs_only_speed(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")  # fails for root too, unlike a chmod
    monkeypatch.setenv("SIMSIAM_CACHE", str(blocker))
    data = photos(tmp_path / "data", 4, size=(40, 40))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        ds = load(data, image_size=16, progress=False)
    messages = [str(w.message) for w in said if issubclass(w.category, CacheWarning)]
    assert len(ds) == 4 and isinstance(ds.images, torch.Tensor)
    assert len(messages) == 1 and "could not write the image cache" in messages[0] and "decoding into memory" in messages[0]


# -- on a GPU (skipped without one; benchmarks/device.sh imagenet runs them) -----------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_every_source_hands_out_the_same_batches(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMSIAM_CACHE", str(tmp_path / "cache"))
    data = photos(tmp_path / "data", 40, size=(96, 80))
    cuda = torch.device("cuda")
    memory = load(data, image_size=48, progress=False, data_on="memory").images
    raw = load(data, image_size=48, progress=False, data_on="disk", cache_format="raw").images
    jpeg = load(data, image_size=48, progress=False, data_on="disk", cache_format="jpeg").images
    sources = {
        "gpu": BatchSource.place(memory, cuda, "gpu"),
        "pinned": BatchSource.place(memory, cuda, "memory"),
        "disk raw": BatchSource.place(raw, cuda, "disk"),
        "disk raw to the gpu": BatchSource.place(raw, cuda, "gpu"),
        "disk jpeg (nvJPEG)": BatchSource.place(jpeg, cuda, "disk"),
    }
    assert [s.where for s in sources.values()] == ["gpu", "memory", "disk", "gpu", "disk"]
    plan = list(ShardedBatches(40, 8, seed=2))
    expected = [memory[i] for i in plan]
    for name, source in sources.items():
        got = list(source.batches(plan, cuda))
        assert all(b.device.type == "cuda" for b in got), name
        for a, b in zip(got, expected, strict=True):
            if name.startswith("disk jpeg"):  # quality 95, and nvJPEG's IDCT is not libjpeg's
                assert (a.cpu().float() - b.float()).abs().mean() < 4, name
            else:
                assert torch.equal(a.cpu(), b), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_a_gpu_training_reads_the_jpeg_cache_from_disk(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SIMSIAM_CACHE", str(tmp_path / "cache"))
    data = photos(tmp_path / "photos", 64, size=(300, 260))
    args = ["train", str(data), "--recipe", "imagenet", "--backbone", "resnet18", "--epochs", "2", "--batch-size", "16",
            "--cache-format", "jpeg", "--data-on", "disk", "--no-compile", "--out", str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "kept on disk (" in captured.out and "JPEGs decoded per batch" in captured.out and "on GPU" in captured.out
