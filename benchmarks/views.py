"""The views on a CPU, side by side in one run: Augment against lightly's SimSiamTransform.

    python benchmarks/views.py                   # 224 px from 256 px images, blur p=0.5; then 32 px
    python benchmarks/views.py --sizes 96 224    # other view sizes (the source is 8/7 of the view)

Both sides make both views of the same decoded images, with no decoding on either:
the bundled demo images upsampled to the source size, as a uint8 batch for ours and
as PIL images in memory for lightly's. Ours is what `simsiam train` runs on a CPU
each step: `Augment` over the batch twice over (`torch.cat([batch, batch])`, one call,
the views written into the previous step's buffer), in torch's threads (one per core).
lightly's is its SimSiamTransform(input_size) in a DataLoader with 2 worker processes
(--workers), batches of the same size. After an untimed epoch of each (lightly's
starts its workers), the two sides take turns for --rounds epochs each and the best
epoch of each side counts. Above 64 px both blur with p=0.5 (the ImageNet recipe); at 32 px neither does
(the CIFAR recipe). lightly must be installed (`pip install -e .[bench]`).

Every rate is images per second, an image being its two views.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sources import cpu_model  # noqa: E402

from simsiam import Augment  # noqa: E402
from simsiam.data import load  # noqa: E402


def ours(images: torch.Tensor, size: int, batch: int):
    """An epoch at a time: both views of every image, a batch at a time, as a training step makes them."""
    aug = Augment(size, seed=0, blur_p=0.5 if size > 64 else 0.0)
    out = None
    while True:
        start = time.perf_counter()
        for b in images.split(batch):
            both = torch.cat([b, b])
            if out is None or out.shape[0] != len(both):
                out = torch.empty(len(both), 3, size, size)
            aug(both, out=out)
        yield len(images) / (time.perf_counter() - start)


def lightly(images: torch.Tensor, size: int, batch: int, workers: int):
    """An epoch at a time: lightly's SimSiamTransform in a DataLoader with ``workers`` processes."""
    os.environ.setdefault("LIGHTLY_DID_VERSION_CHECK", "True")
    from lightly.transforms import SimSiamTransform
    from PIL import Image

    pictures = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]
    transform = SimSiamTransform(input_size=size, gaussian_blur=0.5 if size > 64 else 0.0)

    class Pictures(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(pictures)

        def __getitem__(self, i: int):
            return transform(pictures[i])

    loader = torch.utils.data.DataLoader(Pictures(), batch_size=batch, num_workers=workers, persistent_workers=True)
    while True:
        start = time.perf_counter()
        for _ in loader:
            pass
        yield len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 32], help="view sizes, one pair of rows each")
    parser.add_argument("--count", type=int, default=1024, help="images (at 32 px, 4x as many)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="lightly's DataLoader workers")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs of each side, taken in turns")
    args = parser.parse_args()
    print(f"{cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.2f}\n")
    width = 52
    print(f"{'views'.ljust(width)}  {'images/s':>9}  {'vs lightly':>10}")
    for size in args.sizes:
        source = 32 if size <= 32 else round(size * 8 / 7)
        count = args.count * 4 if size <= 64 else args.count
        images = load(None, source).images[:count]
        mine, theirs = ours(images, size, args.batch_size), lightly(images, size, args.batch_size, args.workers)
        try:
            next(mine), next(theirs)  # warm up; lightly's starts its workers
        except ImportError as e:
            sys.exit(f"lightly is not installed ({e}): pip install -e .[bench]")
        # Epochs taken in turns, the best of each side: the machine's slow moments fall on both.
        rates = [(next(mine), next(theirs)) for _ in range(args.rounds)]
        rate, reference = max(r[0] for r in rates), max(r[1] for r in rates)
        blur = "blur p=0.5" if size > 64 else "no blur"
        print(f"{f'simsiam Augment, {size} px from {source} px, {blur}'.ljust(width)}  {rate:>9,.0f}  {rate / reference:>9.2f}x")
        print(f"{f'lightly SimSiamTransform, {args.workers} workers'.ljust(width)}  {reference:>9,.0f}  {1:>9.2f}x", flush=True)


if __name__ == "__main__":
    main()
