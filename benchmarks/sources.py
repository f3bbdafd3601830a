"""Big folders, side by side: the batch source from memory and from the disk cache (raw, jpeg) against lightly's loader.

    python benchmarks/sources.py source   [--count 3000]   # CPU: images/s delivered at 224 px, and the cache's size
    python benchmarks/sources.py imagenet [--count 8000]   # GPU: ResNet-50 at 224 px end to end vs its step vs lightly

It uses the training rows of benchmarks/throughput.py (ours end to end, the model
step alone, lightly's recipe); throughput.py does not import this file.

The data is a synthetic folder of CIFAR-10 training images upsampled to 256 x 256
JPEGs (quality 90) under /tmp/simsiam-bench, made once from ../shared/data/cifar10
(or --data DIR). Every rate is images per second; an image is one uint8 image
delivered (source rows) or one image with its two views (training rows).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "train"
RESNET50 = dict(backbone="resnet50", small_images=False, proj_dim=2048, proj_layers=3, pred_hidden_dim=512)


def cpu_model() -> str:
    """The CPU's name, its cores, and whether it has bf16 matrix units (AMX)."""
    name = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
        amx = "amx_bf16" in open("/proc/cpuinfo").read()
    except OSError:
        amx = False
    return f"{name}, {os.cpu_count()} cores, {'with' if amx else 'without'} AMX"


def synthetic_folder(count: int, size: int = 256, source: Path = CIFAR) -> Path:
    """``count`` CIFAR-10 training images upsampled to ``size`` px JPEGs (quality 90), one subfolder per class; made once."""
    from PIL import Image

    root = Path(tempfile.gettempdir()) / "simsiam-bench" / f"cifar-up{size}-{count}"
    if root.exists() and sum(1 for _ in root.rglob("*.jpg")) == count:
        return root
    classes = sorted(p for p in source.iterdir() if p.is_dir())
    files = [f for i in range(count) for f in [sorted(classes[i % len(classes)].iterdir())[i // len(classes)]]]
    for i, f in enumerate(files):
        out = root / f.parent.name / f"{i:06d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(f) as img:
            img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC).save(out, quality=90)
    return root


def _epoch_rate(source, batch: int, device: torch.device | None = None, augment=None, seed: int = 0) -> float:
    """Images/s of one shuffled epoch of ``source`` in batches of ``batch`` (with ``augment``: both views rendered too)."""
    from simsiam.data.batches import Batches, ShardedBatches

    batches = Batches(source, ShardedBatches(len(source), batch, seed=seed), device)
    start, n = time.perf_counter(), 0
    for images in batches:
        if augment is not None:
            augment(torch.cat([images, images]))
        n += images.shape[0]
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    return n / (time.perf_counter() - start)


def _evict(entry) -> None:
    """Drop the entry's pages from the page cache (posix_fadvise DONTNEED): the next read comes from the disk."""
    for shard in entry.shards:
        fd = os.open(entry.path / shard["file"], os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def lightly_loader_rate(folder: Path, size: int, batch: int, workers: int, limit: int) -> float:
    """lightly 1.6: LightlyDataset (PIL decode) and SimSiamTransform (both views) in DataLoader workers; one timed epoch after a warm one."""
    os.environ.setdefault("LIGHTLY_DID_VERSION_CHECK", "True")
    from lightly.data import LightlyDataset
    from lightly.transforms import SimSiamTransform

    dataset = torch.utils.data.Subset(LightlyDataset(str(folder), transform=SimSiamTransform(input_size=size)), range(limit))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers, persistent_workers=True
    )
    rates = []
    for _ in range(2):  # the first pass starts the workers
        start, n = time.perf_counter(), 0
        for (x1, _x2), _, _ in loader:
            n += x1.shape[0]
        rates.append(n / (time.perf_counter() - start))
    return rates[-1]


def _table(rows: list[tuple[str, float]], reference: str) -> str:
    ref = dict(rows)[reference]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'pipeline'.ljust(width)}  {'images/s':>10}  {'vs ' + reference[:28]:>32}"]
    lines += [f"{name.ljust(width)}  {rate:>10,.0f}  {rate / ref:>31.2f}x" for name, rate in rows]
    return "\n".join(lines)


def source(args) -> None:
    """CPU: one epoch of uint8 batches at 224 px from memory, from the disk cache (raw warm and cold, jpeg), and lightly's loader."""
    from simsiam import Augment
    from simsiam.data import load
    from simsiam.data.batches import BatchSource

    torch.set_num_threads(args.threads)
    folder = Path(args.data) if args.data else synthetic_folder(args.count, source=Path(args.cifar))
    os.environ.setdefault("SIMSIAM_CACHE", str(Path(tempfile.gettempdir()) / "simsiam-bench" / "cache"))
    print(f"{cpu_model()}; torch {torch.__version__}, {args.threads} threads; {folder}, batch {args.batch_size}\n", flush=True)
    memory = load(folder, 224, progress=False, data_on="memory", cache_format="raw")
    raw = load(folder, 224, progress=False, data_on="disk", cache_format="raw").images
    jpeg = load(folder, 224, progress=False, data_on="disk", cache_format="jpeg").images
    n = len(raw)
    print(f"{n} images at 224 px: raw {raw.entry.data_bytes / n / 1e3:.1f} kB per image, "
          f"jpeg (quality 95) {jpeg.entry.data_bytes / n / 1e3:.1f} kB per image ({raw.entry.data_bytes / jpeg.entry.data_bytes:.1f}x smaller)\n")  # fmt: skip
    best = lambda f: max(f() for _ in range(args.repeats))  # noqa: E731
    rows = [("source, in memory", best(lambda: _epoch_rate(BatchSource.place(memory.images, "cpu"), args.batch_size)))]
    rows.append(
        ("source, disk cache raw (page cache warm)", best(lambda: _epoch_rate(BatchSource.place(raw, "cpu", "disk"), args.batch_size)))
    )

    def cold() -> float:
        _evict(raw.entry)
        return _epoch_rate(BatchSource.place(raw, "cpu", "disk"), args.batch_size)

    rows.append(("source, disk cache raw (pages evicted first)", best(cold)))
    rows.append(
        ("source, disk cache jpeg (decoded in threads)", best(lambda: _epoch_rate(BatchSource.place(jpeg, "cpu", "disk"), args.batch_size)))
    )
    for label, row in rows:
        print(f"  {label}: {row:,.0f}", flush=True)
    augment = Augment(size=224, blur_p=0.5)
    augmented = [
        ("disk raw + Augment (both views, 224 px, blur)", raw),
        ("disk jpeg + Augment (both views, 224 px, blur)", jpeg),
    ]
    for label, images in augmented:
        part = images.subset(range(min(len(images), args.augment_images)))  # rendering 224 px views is slow on a CPU
        rows.append((label, _epoch_rate(BatchSource.place(part, "cpu", "disk"), args.batch_size, augment=augment)))
        print(f"  {label}: {rows[-1][1]:,.0f}", flush=True)
    try:
        rate = lightly_loader_rate(folder, 224, args.batch_size, args.workers, min(n, args.lightly_images))
        rows.append((f"lightly 1.6 DataLoader, PIL + SimSiamTransform(224), {args.workers} workers", rate))
        print(f"  {rows[-1][0]}: {rate:,.0f}", flush=True)
    except ImportError as e:
        print(f"lightly not installed ({e}); its row is skipped")
    print()
    print(_table(rows, reference=rows[-1][0]))
    print()
    print(_table(rows, reference=rows[0][0]))


# -- on a GPU: ResNet-50 at 224 px ----------------------------------------------------------------


def imagenet(args) -> None:
    """GPU: the imagenet recipe end to end from a 256 px jpeg cache on disk, its compiled step alone, the source alone, lightly."""
    from throughput import lightly_recipe, model_step_alone, ours_end_to_end

    from simsiam.data import load
    from simsiam.data.batches import BatchSource

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else cpu_model()
    folder = Path(args.data) if args.data else synthetic_folder(args.count, source=Path(args.cifar))
    os.environ.setdefault("SIMSIAM_CACHE", str(Path(tempfile.gettempdir()) / "simsiam-bench" / "cache"))
    print(f"device: {name}; {folder}; batch {args.batch_size}; ResNet-50, 3-layer projector, 224 px views", flush=True)
    rows = []
    decode = "cuda" if device.type == "cuda" else None
    for fmt in ("jpeg", "raw"):
        images = load(folder, 256, progress=False, decode_device=decode, data_on="disk", cache_format=fmt).images
        rates = [_epoch_rate(BatchSource.place(images, device, "disk"), args.batch_size, device) for _ in range(2)]
        rows.append((f"source alone, disk cache {fmt} at 256 px, to the {device.type}", max(rates)))
        print(f"  {rows[-1][0]}: {rows[-1][1]:,.0f}", flush=True)
    options = dict(image_size=224, cache_size=256, cache_format="jpeg", data_on="disk", augment=dict(blur_p=0.5))
    with tempfile.TemporaryDirectory() as tmp:
        ours = ours_end_to_end(str(folder), args.batch_size, args.epochs, not args.no_compile, Path(tmp) / "run", model=RESNET50, **options)
    rows.append(("simsiam end to end (imagenet recipe, jpeg cache on disk; median of epochs 2+)", ours["images_per_s"]))
    print(f"  {rows[-1][0]}: {rows[-1][1]:,.0f} ({ours})", flush=True)
    bf16 = device.type == "cuda"
    step = model_step_alone(args.batch_size, args.steps, device, bf16, bf16, bf16 and not args.no_compile, net=RESNET50, size=224)
    setting = ("bf16, channels_last" + (", compiled" if not args.no_compile else "")) if bf16 else "fp32"
    rows.append((f"model step alone ({setting})", step))
    print(f"  {rows[-1][0]}: {step:,.0f}", flush=True)
    try:
        for workers in args.lightly_workers:
            rate = lightly_recipe(str(folder), args.batch_size, args.steps, workers, device, model=RESNET50, size=224, blur=0.5)
            rows.append((f"lightly 1.6 recipe at 224 px, {workers} workers, fp32", rate))
            print(f"  {rows[-1][0]}: {rate:,.0f}", flush=True)
    except ImportError as e:
        print(f"lightly not installed ({e}); its rows are skipped")
    print()
    print(_table(rows, reference=rows[2][0]))
    source_rate = rows[0][1]
    print(f"\nsource (jpeg) / model step: {source_rate / step:.1f}x (target: 3x or more)")
    print(f"end to end / model step: {ours['images_per_s'] / step:.0%} (target: 90% or more)")


def add_modes(sub) -> None:
    s = sub.add_parser("source", help="CPU: the batch source from memory and disk (raw, jpeg) vs lightly's loader, at 224 px")
    s.add_argument("--data", help="an image folder (default: a synthetic folder of --count CIFAR images upsampled to 256 px)")
    s.add_argument("--count", type=int, default=3000)
    s.add_argument("--cifar", default=str(CIFAR), help="CIFAR-10 JPEG folder the synthetic folder is made from")
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--workers", type=int, default=2, help="lightly's DataLoader workers")
    s.add_argument("--repeats", type=int, default=2, help="epochs per source row; the best is shown")
    s.add_argument("--augment-images", type=int, default=1024, help="images in the rows that also render the views")
    s.add_argument("--lightly-images", type=int, default=2048)
    g = sub.add_parser("imagenet", help="GPU: ResNet-50 at 224 px end to end vs the compiled step vs lightly; the source alone")
    g.add_argument("--data")
    g.add_argument("--count", type=int, default=8000)
    g.add_argument("--cifar", default=str(CIFAR), help="CIFAR-10 JPEG folder the synthetic folder is made from")
    g.add_argument("--batch-size", type=int, default=256)
    g.add_argument("--epochs", type=int, default=3)
    g.add_argument("--steps", type=int, default=30)
    g.add_argument("--lightly-workers", type=int, nargs="*", default=[16])
    g.add_argument("--no-compile", action="store_true")


MODES = {"source": source, "imagenet": imagenet}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_modes(parser.add_subparsers(dest="mode", required=True))
    args = parser.parse_args()
    MODES[args.mode](args)


if __name__ == "__main__":
    main()
