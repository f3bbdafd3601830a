"""Training throughput, side by side in one run: this project end to end, the model step
alone, and lightly's SimSiam recipe; plus GPU JPEG decoding. The views alone on a CPU are
benchmarks/views.py's; training on a busy CPU, benchmarks/busy.py's.

    python benchmarks/throughput.py gpu     --data DIR   # (a) ours end to end, (b) model step alone, (c) lightly
    python benchmarks/throughput.py decode               # GPU vs CPU decoding of a synthetic folder of 256x256 JPEGs
    python benchmarks/throughput.py cpu [--data DIR]     # CPU: the step in float32 / channels_last / bf16; end to end vs lightly

Big folders at 224 px (the batch source from memory and disk, ResNet-50 end to end)
are benchmarks/sources.py's, which builds on the rows here.

The setting is the issue's: CIFAR ResNet-18 (small-image stem), 2-layer 2048-d
projector, 512-d predictor hidden layer, batch 512, SGD. Each figure is images/s
(an image = its two views). Ratios are only meaningful within one run: the same
machine, the same images, at the same moment. lightly is optional (`pip install
-e .[bench]`); without it its rows are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from simsiam import Augment, SimSiam, simsiam_loss  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _table(rows: list[tuple[str, float]], reference: str) -> str:
    ref = dict(rows)[reference]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'pipeline'.ljust(width)}  {'images/s':>10}  {'vs ' + reference:>14}"]
    for name, rate in rows:
        lines.append(f"{name.ljust(width)}  {rate:>10,.0f}  {rate / ref:>13.2f}x")
    return "\n".join(lines)


# -- (a) this project, end to end -------------------------------------------------------------

# The setting: CIFAR ResNet-18, 2-layer 2048-d projector, 512-d predictor hidden layer.
CIFAR_RESNET18 = dict(backbone="resnet18", small_images=True, proj_dim=2048, proj_layers=2, pred_hidden_dim=512)
# The demo recipe's network, which a CPU trains in minutes.
DEMO_NET = dict(backbone="resnet10-tiny", small_images=False, proj_dim=512, proj_layers=2, pred_hidden_dim=128)


def ours_end_to_end(data: str, batch: int, epochs: int, compile_: bool, out: Path, model: dict = CIFAR_RESNET18, **options) -> dict:
    """The real `simsiam train` path (Lightning Trainer, GPU cache, augmentation, logging, checkpoints).

    Figures are the images/s of metrics.csv (epoch start to epoch end: data,
    augmentation, model, optimizer, logging); the first epoch, which compiles, is
    left out.
    """
    from simsiam.config import TrainConfig
    from simsiam.train import fit

    cfg = TrainConfig.from_dict(
        dict(
            data=data,
            out=str(out),
            epochs=epochs,
            batch_size=batch,
            knn_every=0,
            compile=compile_,
            **options,
            model=model,
            optim=dict(base_lr=0.03, weight_decay=5e-4),
        )
    )
    torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
    result = fit(cfg, progress=False)
    import csv

    with open(out / "metrics.csv") as fh:
        rates = [float(r["images_per_s"]) for r in csv.DictReader(fh)][1:]
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    return {"images_per_s": statistics.median(rates), "epochs_timed": len(rates), "peak_gib": peak, "wall_s": result["wall_seconds"]}


# -- (b) the model step alone ---------------------------------------------------------------------


def model_step_alone(
    batch: int,
    steps: int,
    device: torch.device,
    bf16: bool,
    channels_last: bool,
    compile_: bool,
    augment: bool = False,
    mode: str = "default",
    compile_augment: bool = False,
    net: dict = CIFAR_RESNET18,
    size: int = 32,
) -> float:
    """Forward, loss, backward and fused SGD step on ready (pre-augmented) tensors (``net`` at ``size`` px).

    augment=True: the same step in a plain loop (no Lightning) that first renders
    both views from a uint8 batch with Augment, as the training step does. Between
    this row, the model-alone row and ours end to end, the cost of augmentation and
    of Lightning's loop can be told apart. mode="reduce-overhead" replays the compiled
    step as CUDA graphs; compile_augment compiles the rendering of the views (their
    random parameters are still drawn eagerly), which fuses its ~140 small kernels.
    """
    torch.manual_seed(0)
    model = SimSiam(**net).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4, fused=device.type == "cuda" or None)
    views = [torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt) for _ in range(4)]
    images = [torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device) for _ in range(4)]
    aug = Augment(size=size)

    def step(x1, x2):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            p1, p2, z1, z2 = model(x1, x2)
            return simsiam_loss(p1, p2, z1, z2)

    fn = torch.compile(step, mode=mode) if compile_ else step
    render = torch.compile(aug.apply) if compile_augment else aug.apply
    warmup = 15 if compile_ else 5
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        if mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs may be reused
        if augment:
            with torch.no_grad():
                both = images[i % 4].repeat(2, 1, 1, 1)
                x1, x2 = render(both, aug.sample(2 * batch, size, size, device)).chunk(2)
            loss = fn(x1.contiguous(memory_format=fmt), x2.contiguous(memory_format=fmt))
        else:
            loss = fn(views[i % 4], views[(i + 1) % 4])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


def augment_alone(batch: int, steps: int, device: torch.device) -> float:
    """Images/s of Augment rendering both views of uint8 batches already on the device."""
    aug = Augment(size=32)
    images = [torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device) for _ in range(4)]
    for i in range(5 + steps):
        if i == 5:
            _sync(device)
            start = time.perf_counter()
        aug(images[i % 4].repeat(2, 1, 1, 1))
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


# -- (c) lightly's recipe -----------------------------------------------------------------------


def lightly_recipe(
    data: str, batch: int, steps: int, workers: int, device: torch.device, model: dict = CIFAR_RESNET18, size: int = 32, blur: float = 0.0
) -> float:
    """lightly 1.6's SimSiam recipe: PIL decode + SimSiamTransform in DataLoader workers, fp32 model step."""
    os.environ.setdefault("LIGHTLY_DID_VERSION_CHECK", "True")
    from lightly.data import LightlyDataset
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead
    from lightly.transforms import SimSiamTransform

    from simsiam.model import build_backbone

    transform = SimSiamTransform(input_size=size, gaussian_blur=blur)
    dataset = LightlyDataset(data, transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers, persistent_workers=workers > 0, pin_memory=True
    )
    backbone, dim = build_backbone(model["backbone"], small_images=model["small_images"])
    projector = SimSiamProjectionHead(dim, model["proj_dim"], model["proj_dim"])
    predictor = SimSiamPredictionHead(model["proj_dim"], model["pred_hidden_dim"], model["proj_dim"])
    modules = torch.nn.ModuleList([backbone, projector, predictor]).to(device)
    criterion = NegativeCosineSimilarity()
    opt = torch.optim.SGD(modules.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    warmup, done, start = 5, 0, None
    while done < warmup + steps:
        for (x1, x2), _, _ in loader:
            if done == warmup:
                _sync(device)
                start = time.perf_counter()
            x1, x2 = x1.to(device, non_blocking=True), x2.to(device, non_blocking=True)
            z1, z2 = projector(backbone(x1)), projector(backbone(x2))
            p1, p2 = predictor(z1), predictor(z2)
            loss = 0.5 * (criterion(p1, z2.detach()) + criterion(p2, z1.detach()))
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == warmup + steps:
                break
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


def gpu(args) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    print(f"device: {name}; data: {args.data}; batch {args.batch_size}", flush=True)
    rows, extra = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        ours = ours_end_to_end(args.data, args.batch_size, args.epochs, not args.no_compile, Path(tmp) / "run")
        label = "simsiam end to end (bf16, channels_last" + (")" if args.no_compile else ", compiled)")
        rows.append((label, ours["images_per_s"]))
        extra["ours"] = ours
        print(f"  ours: {ours} ({time.perf_counter() - t:.0f} s)", flush=True)
    for label, bf16, cl, comp, with_aug in [
        ("model step alone, fp32", False, False, False, False),
        ("model step alone, bf16 + channels_last", True, True, False, False),
        ("model step alone, bf16 + channels_last + compile", True, True, not args.no_compile, False),
        ("augmentation + compiled step, plain loop (no Lightning)", True, True, not args.no_compile, True),
    ]:
        t = time.perf_counter()
        rows.append((label, model_step_alone(args.batch_size, args.steps, device, bf16, cl, comp, augment=with_aug)))
        print(f"  {label}: {rows[-1][1]:,.0f} ({time.perf_counter() - t:.0f} s)", flush=True)
    # Candidates for closing the gap to the compiled step, timed here before they go into
    # the engine: CUDA graphs for the step, and a compiled augmentation.
    candidates = [
        ("model step alone, bf16 + channels_last + compile, CUDA graphs", dict(mode="reduce-overhead")),
        ("compiled augmentation + compiled step, plain loop", dict(augment=True, compile_augment=True)),
        ("compiled augmentation + step with CUDA graphs, plain loop", dict(augment=True, compile_augment=True, mode="reduce-overhead")),
    ]
    for label, options in candidates if device.type == "cuda" and not args.no_compile and not args.no_candidates else []:
        t = time.perf_counter()
        try:
            rate = model_step_alone(args.batch_size, args.steps, device, True, True, True, **options)
        except Exception as e:  # a diagnostic row: report it and go on to the next
            print(f"  {label}: failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})", flush=True)
            continue
        rows.append((label, rate))
        print(f"  {label}: {rows[-1][1]:,.0f} ({time.perf_counter() - t:.0f} s)", flush=True)
    rows.append(("augmentation alone (both views)", augment_alone(args.batch_size, args.steps, device)))
    print(f"  {rows[-1][0]}: {rows[-1][1]:,.0f}", flush=True)
    # The same candidates end to end (--compile-mode, --compile-augment; off by default
    # until a GPU run shows they pay).
    e2e = [
        ("simsiam end to end, --compile-augment", dict(compile_augment=True)),
        (
            "simsiam end to end, --compile-augment --compile-mode reduce-overhead",
            dict(compile_augment=True, compile_mode="reduce-overhead"),
        ),
    ]
    for label, options in e2e if device.type == "cuda" and not args.no_compile and not args.no_candidates else []:
        t = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                result = ours_end_to_end(args.data, args.batch_size, args.epochs, True, Path(tmp) / "run", **options)
        except Exception as e:  # a diagnostic row: report it and go on
            print(f"  {label}: failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})", flush=True)
            continue
        rows.append((label, result["images_per_s"]))
        extra[label] = result
        print(f"  {label}: {result} ({time.perf_counter() - t:.0f} s)", flush=True)
    for workers in args.lightly_workers:
        try:
            t = time.perf_counter()
            rows.append(
                (f"lightly 1.6 recipe, {workers} workers, fp32", lightly_recipe(args.data, args.batch_size, args.steps, workers, device))
            )
            print(f"  {rows[-1][0]}: {rows[-1][1]:,.0f} ({time.perf_counter() - t:.0f} s)", flush=True)
        except ImportError as e:
            print(f"  lightly not installed ({e}); its rows are skipped", flush=True)
            break
    print()
    print(_table(rows, reference=rows[0][0]))
    model_alone = rows[3][1]
    print(f"\nend to end / model step alone (compiled): {ours['images_per_s'] / model_alone:.1%}")
    lightly_rows = [r for r in rows if r[0].startswith("lightly")]
    if lightly_rows:
        best = max(lightly_rows, key=lambda r: r[1])
        print(f"end to end / {best[0]}: {ours['images_per_s'] / best[1]:.1f}x")
    print(f"peak GPU memory (end to end): {ours['peak_gib']:.2f} GiB")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "rows": rows, **extra}, indent=2))


def cpu(args) -> None:
    """CPU training step (forward, loss, backward, SGD) in each precision and layout, side by side.

    The figures behind the CPU defaults (config.resolve): channels_last wherever torch
    has oneDNN, bf16 autocast where the CPU has bf16 matrix units (AMX).
    """
    from simsiam.config import cpu_has_bf16_units

    torch.set_num_threads(args.threads)
    print(f"{os.cpu_count()} CPU cores, {args.threads} threads; bf16 matrix units (AMX): {cpu_has_bf16_units()}\n")
    settings = [
        ("CIFAR ResNet-18 (cifar10 recipe)", CIFAR_RESNET18, 64),
        ("resnet10-tiny (demo recipe)", DEMO_NET, 128),
    ]
    for name, arch, batch in settings:
        rows = []
        for label, bf16, channels_last in [
            ("float32", False, False),
            ("float32, channels_last", False, True),
            ("bf16 autocast, channels_last", True, True),
        ]:
            torch.manual_seed(0)
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            model = SimSiam(**arch).to(memory_format=fmt)
            opt = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
            x1, x2 = (torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt) for _ in range(2))
            for i in range(1 + args.steps):
                if i == 1:  # the first step allocates and picks kernels
                    start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    p1, p2, z1, z2 = model(x1, x2)
                    loss = simsiam_loss(p1, p2, z1, z2)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            rows.append((label, args.steps * batch / (time.perf_counter() - start)))
        print(f"{name}, batch {batch}, 32x32 images")
        print(_table(rows, reference="float32") + "\n")
    if args.data:
        # End to end on the CPU, the demo recipe's network: `simsiam train`'s path with its
        # CPU defaults against lightly's recipe (PIL transforms in DataLoader workers, float32).
        cpu_device = torch.device("cpu")
        with tempfile.TemporaryDirectory() as tmp:
            ours = ours_end_to_end(args.data, 128, 3, False, Path(tmp) / "run", model=DEMO_NET, accelerator="cpu")
        rows = [("simsiam end to end (defaults; median of epochs 2-3)", ours["images_per_s"])]
        try:
            rate = lightly_recipe(args.data, 128, args.lightly_steps, args.threads, cpu_device, model=DEMO_NET)
            rows.append((f"lightly 1.6 recipe, {args.threads} DataLoader workers, float32", rate))
        except ImportError as e:
            print(f"lightly not installed ({e}); its row is skipped")
        print(f"end to end, resnet10-tiny (demo recipe network), batch 128, {args.data}")
        print(_table(rows, reference=rows[-1][0]))


def decode(args) -> None:
    """Building the cache from a synthetic folder of 256x256 JPEGs: Pillow threads vs nvJPEG on the GPU."""
    import numpy as np
    from PIL import Image

    from simsiam.data import list_images
    from simsiam.data.bulk import decode_files

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        for i in range(args.count):
            tile = Image.fromarray(np.roll(base, i, axis=0)).resize((256, 256), Image.Resampling.BICUBIC)
            tile.save(root / f"{i:05d}.jpg", quality=90)
        files, _, _ = list_images(root)
        rows = []
        start = time.perf_counter()
        decode_files(files, 224, progress=False)
        rows.append((f"Pillow, {min(16, (os.cpu_count() or 1) + 1)} threads", len(files) / (time.perf_counter() - start)))
        if torch.cuda.is_available():
            decode_files(files[:256], 224, progress=False, jpeg_device="cuda")  # warm up nvJPEG
            start = time.perf_counter()
            decode_files(files, 224, progress=False, jpeg_device="cuda")
            rows.append(("nvJPEG on the GPU (torchvision.io.decode_jpeg)", len(files) / (time.perf_counter() - start)))
        print(f"{len(files)} synthetic 256x256 JPEGs decoded, resized to 224 and centre-cropped\n")
        print(_table(rows, reference=rows[0][0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    g = sub.add_parser("gpu")
    g.add_argument("--data", required=True)
    g.add_argument("--batch-size", type=int, default=512)
    g.add_argument("--epochs", type=int, default=4, help="end-to-end epochs; the first (compiling) one is not timed")
    g.add_argument("--steps", type=int, default=100, help="timed steps of the model-alone and lightly rows")
    g.add_argument("--lightly-workers", type=int, nargs="*", default=[8, 16])
    g.add_argument("--no-compile", action="store_true")
    g.add_argument("--no-candidates", action="store_true", help="skip the CUDA-graph and compiled-augmentation rows")
    g.add_argument("--json")
    d = sub.add_parser("decode")
    d.add_argument("--count", type=int, default=4000)
    c = sub.add_parser("cpu")
    c.add_argument("--steps", type=int, default=4)
    c.add_argument("--threads", type=int, default=2, help="torch threads, and lightly's DataLoader workers")
    c.add_argument("--data", help="an image folder for the end-to-end rows (ours vs lightly); none: step rows only")
    c.add_argument("--lightly-steps", type=int, default=60)
    args = parser.parse_args()
    {"gpu": gpu, "decode": decode, "cpu": cpu}[args.mode](args)


if __name__ == "__main__":
    main()
