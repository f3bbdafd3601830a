"""Train a recipe on CIFAR-10 and record the kNN curve, the figures and the wall time.

    python benchmarks/cifar10.py --train ../shared/data/cifar10/train --val ../shared/data/cifar10/val --epochs 200

The evaluation is the one the published figures use: kNN top-1 (k=200,
temperature 0.1, cosine, similarity-weighted) of the backbone, trained on the
train split and evaluated on the val split; tuned on val only. The run folder
keeps the full curve (metrics.csv, training.png); one row is appended to
benchmarks/RESULTS.md with the date, device, command and git revision.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import subprocess
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from simsiam.config import TrainConfig, recipe  # noqa: E402
from simsiam.train import fit  # noqa: E402


def git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True)
    parser.add_argument("--val", required=True)
    parser.add_argument("--recipe", default="cifar10")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="base lr (x batch / 256)")
    parser.add_argument("--knn-every", type=int, default=10)
    parser.add_argument("--out", default="runs/cifar10-benchmark")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other options, e.g. optim.warmup_epochs=10")
    args = parser.parse_args()

    values = dict(
        data=args.train, val=args.val, out=args.out, epochs=args.epochs, knn_every=args.knn_every, checkpoint_every=max(1, args.epochs // 4)
    )
    if args.batch_size:
        values["batch_size"] = args.batch_size
    cfg = TrainConfig.from_dict(recipe(args.recipe))
    cfg.recipe = args.recipe
    cfg = TrainConfig.from_dict(values, base=cfg)
    if args.lr:
        cfg.optim.base_lr = args.lr
    for item in args.set:
        key, _, raw = item.partition("=")
        nested: dict = {}
        node = nested
        *sections, last = key.split(".")
        for s in sections:
            node = node.setdefault(s, {})
        node[last] = yaml.safe_load(raw)
        cfg = TrainConfig.from_dict(nested, base=cfg)

    result = fit(cfg, progress=False)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    minutes = result["wall_seconds"] / 60
    line = (
        f"| {datetime.date.today()} | {device} | {args.recipe}, {result['epochs']} epochs, batch {cfg.batch_size} | "
        f"{result['knn_top1']:.4f} | {result['knn_top1_max']:.4f} | {minutes:.1f} min | {result['mean_images_per_s']:,.0f} | "
        f"`python benchmarks/cifar10.py {shlex.join(sys.argv[1:])}` | {git_revision()} |"
    )
    print(line)
    results = Path(args.results)
    with open(results, "a") as fh:
        if results.stat().st_size == 0:
            fh.write(
                "| date | device | setting | kNN top-1, final | kNN top-1, max | wall | images/s | command | revision |\n|---|---|---|---|---|---|---|---|---|\n"
            )
        fh.write(line + "\n")


if __name__ == "__main__":
    main()
