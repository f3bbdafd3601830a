"""Does the batched Augment teach as well as the per-image torchvision pipeline it replaces?

    python benchmarks/augment_fidelity.py --seeds 0 1 2     # about 15 minutes on two CPU cores
    python benchmarks/augment_fidelity.py --views 224       # views at photo size: their statistics, side by side

The second form trains nothing: it renders 2,000 views at the given size both ways
(the demo images upsampled to 8/7 of it; torchvision's recipe with its Gaussian blur,
23 taps at 224 px, p=0.5) and compares the distributions of what a view's pixels
show: brightness, contrast, colourfulness, sharpness (which crop scale, resampling
and blur set), and the share of gray views. Each row gives both means and the
two-sample Kolmogorov-Smirnov distance, against its 1% critical value.

Augment differs from the SimCLR/SimSiam reference pipeline (torchvision transforms
applied image by image in DataLoader workers) in how it gets there: crop, flip and
resize as one bilinear grid_sample, jitter in a fixed order, batched arithmetic.
This trains the same model twice per seed in one plain loop, identical in
everything (data, order of batches, model init, optimizer, schedule) except where
the views come from, and prints the kNN top-1 of each on held-out images. On the
bundled demo set (4,500 training and 500 query images of CIFAR-10's val split)
with the demo recipe's network, so it runs on a CPU.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from simsiam import Augment, SimSiam, simsiam_loss  # noqa: E402
from simsiam.augment import IMAGENET_MEAN, IMAGENET_STD
from simsiam.data import load, load_demo
from simsiam.evaluate import extract_features, knn_accuracy


def reference_views() -> v2.Compose:
    """The reference recipe, one image at a time (as lightly's SimSiamTransform at 32 px, no blur)."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(32, scale=(0.2, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class PairDataset(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor):
        self.images, self.transform = images, reference_views()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        image = self.images[i]
        return self.transform(image), self.transform(image)


def train(pipeline: str, train_images: torch.Tensor, epochs: int, batch: int, seed: int, workers: int) -> SimSiam:
    torch.manual_seed(seed)
    model = SimSiam("resnet10-slim", small_images=False, proj_dim=512, proj_layers=2, pred_hidden_dim=128)
    model = model.to(memory_format=torch.channels_last)
    lr = 0.3 * batch / 256  # the demo recipe
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps = epochs * (train_images.shape[0] // batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    order = torch.Generator().manual_seed(seed)  # the same batches, in the same order, for both pipelines
    augment = Augment(size=32, blur_p=0.0, seed=seed + 1)
    dataset = PairDataset(train_images)
    for _ in range(epochs):
        perm = torch.randperm(train_images.shape[0], generator=order)
        batches = perm[: len(perm) // batch * batch].view(-1, batch)
        if pipeline == "augment":
            views = (augment(torch.cat([train_images[idx]] * 2)).chunk(2) for idx in batches)
        else:
            sampler = [idx.tolist() for idx in batches]
            views = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, persistent_workers=False)
        for x1, x2 in views:
            x1 = x1.contiguous(memory_format=torch.channels_last)
            x2 = x2.contiguous(memory_format=torch.channels_last)
            loss = simsiam_loss(*model(x1, x2))  # float32, the CPU default
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model


def view_statistics(views: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per view (B, 3, S, S normalised): what its pixels show, one value each."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = views * std + mean
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).flatten(1)
    chroma = (x.amax(dim=1) - x.amin(dim=1)).flatten(1).mean(1)
    g = gray.view(len(x), x.shape[2], x.shape[3])
    return {
        "brightness (mean gray)": gray.mean(1),
        "contrast (std of gray)": gray.std(1),
        "colourfulness (mean max-min)": chroma,
        "sharpness (mean |horizontal step|)": (g[:, :, 1:] - g[:, :, :-1]).abs().flatten(1).mean(1),
        "gray view (chroma < 0.002)": (chroma < 0.002).float(),
    }


def ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    values = torch.cat([a, b]).sort().values
    cdf_a = torch.searchsorted(a.sort().values, values, right=True) / len(a)
    cdf_b = torch.searchsorted(b.sort().values, values, right=True) / len(b)
    return float((cdf_a - cdf_b).abs().max())


def compare_views(size: int, count: int) -> None:
    source = round(size * 8 / 7)
    images = load(None, source).images[:count]
    blur = 0.5 if size > 64 else 0.0
    ours = torch.cat([Augment(size, blur_p=blur, seed=0)(torch.cat([b, b])) for b in images.split(128)])
    kernel = max(3, 2 * int(0.05 * size) + 1)
    reference = v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.ToDtype(torch.float32, scale=True),
            v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    torch.manual_seed(0)
    theirs = torch.stack([reference(img) for img in torch.cat([images, images])])
    n = len(ours)
    critical = 1.63 * math.sqrt(2 / n)  # KS at the 1% level, two samples of n
    print(f"{n} views each at {size} px from {source} px (blur p={blur}); KS 1% critical value {critical:.3f}\n")
    print(f"{'statistic':36s}  {'Augment':>8s}  {'torchvision':>11s}  {'KS':>6s}")
    a, b = view_statistics(ours), view_statistics(theirs)
    for name in a:
        d = ks_distance(a[name], b[name])
        flag = "" if d < critical else "  <- differs"
        print(f"{name:36s}  {a[name].mean():8.4f}  {b[name].mean():11.4f}  {d:6.3f}{flag}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, metavar="SIZE", help="compare views at this size instead of training")
    parser.add_argument("--count", type=int, default=1000, help="images for --views (two views each)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference pipeline")
    args = parser.parse_args()
    if args.views:
        compare_views(args.views, args.count)
        return

    demo = load_demo()
    split = torch.randperm(len(demo.labels), generator=torch.Generator().manual_seed(0))
    train_idx, query_idx = split[:4500], split[4500:]
    train_images, train_labels = demo.images[train_idx], demo.labels[train_idx]
    query_images, query_labels = demo.images[query_idx], demo.labels[query_idx]

    results: dict[str, list[tuple[float, float]]] = {"augment": [], "torchvision": []}
    for seed in args.seeds:
        for pipeline in results:
            start = time.perf_counter()
            model = train(pipeline, train_images, args.epochs, args.batch_size, seed, args.workers)
            bank, query = extract_features(model, train_images), extract_features(model, query_images)
            knn20 = knn_accuracy(bank, train_labels, query, query_labels, k=20)
            knn200 = knn_accuracy(bank, train_labels, query, query_labels, k=200)
            results[pipeline].append((knn20, knn200))
            print(
                f"seed {seed}, {pipeline:11s}: kNN top-1 {knn20:.3f} (k=20), {knn200:.3f} (k=200); {time.perf_counter() - start:.0f} s",
                flush=True,
            )

    print(f"\n{args.epochs} epochs of the demo recipe, batch {args.batch_size}, {len(args.seeds)} seeds; mean (min-max)")
    for pipeline, rows in results.items():
        for j, k in enumerate((20, 200)):
            values = [r[j] for r in rows]
            print(f"{pipeline:11s} k={k:<3d}  {statistics.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})")


if __name__ == "__main__":
    main()
