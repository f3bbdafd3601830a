"""Runs ``simsiam train`` through the library, with every DDP process recording what the tests compare.

    python tests/ddp_worker.py RECORD_DIR train DATA --devices 2 ...

The arguments after RECORD_DIR are those of the ``simsiam`` command; they become
a config as the command makes it, and go to :func:`simsiam.train.fit` with one
test-only callback. Lightning starts the other processes by re-running this
script with the same arguments, so each of them records too: at the end of
training, process r writes RECORD_DIR/rank<r>.pt with its model's state_dict, the
images its training steps saw in each epoch, whether its batch norm layers
were SyncBatchNorm and, when the images are read from the disk cache, the rows
of the cache its training source read in each epoch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

from simsiam.cli import build_parser, train_config
from simsiam.train import fit


class Recorder(L.Callback):
    """Keeps every uint8 batch this process trains on, and saves them with the weights when training ends."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.seen: dict[int, list[torch.Tensor]] = {}  # epoch -> the image batches of this process
        self.rows: dict[int, list[int]] = {}  # epoch -> the rows of the disk cache its source read
        self.source = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        source = trainer.datamodule.source
        if source.where == "disk":
            self.source = source
            source.images.log = []  # every batch's rows, as they are read

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.source is not None:
            self.rows[trainer.current_epoch] = [int(r) for rows in self.source.images.log for r in rows]
            self.source.images.log.clear()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: torch.Tensor, batch_idx: int) -> None:
        self.seen.setdefault(trainer.current_epoch, []).append(batch.detach().cpu().clone())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record = {
            "world": trainer.world_size,
            "state": {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()},
            "seen": {epoch: torch.cat(batches) for epoch, batches in self.seen.items()},
            "sync_bn": any(isinstance(m, torch.nn.SyncBatchNorm) for m in pl_module.modules()),
            "rows": self.rows,
        }
        torch.save(record, self.folder / f"rank{trainer.global_rank}.pt")
        trainer.strategy.barrier()  # every rank's file exists before rank 0 returns


def train(record: Path, argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    cfg, flags, _, _ = train_config(args)
    fit(cfg, resume=args.resume, overrides=flags, progress=not (args.quiet or args.no_progress), callbacks=[Recorder(record)])


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    train(folder, sys.argv[2:])
