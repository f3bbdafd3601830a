"""Runs the ``simsiam`` command with every DDP process recording what the tests compare.

    python tests/ddp_worker.py RECORD_DIR train DATA --devices 2 ...

Lightning starts the other processes by re-running this script with the same
arguments, so each of them records too: at the end of training, process r writes
RECORD_DIR/rank<r>.pt with its model's state_dict, the image indices its training
steps saw in each epoch, and whether its batch norm layers were SyncBatchNorm.

Test-only: it wraps two hooks of SimSiamModule rather than adding hooks to the library.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from simsiam.cli import main
from simsiam.engine import SimSiamModule


def record_into(folder: Path) -> None:
    seen: dict[int, list[torch.Tensor]] = {}  # epoch -> the index batches of this process
    training_step = SimSiamModule.training_step

    def recording_step(self: SimSiamModule, index: torch.Tensor, batch_idx: int) -> torch.Tensor:
        seen.setdefault(self.current_epoch, []).append(index.detach().cpu().clone())
        return training_step(self, index, batch_idx)

    def on_train_end(self: SimSiamModule) -> None:
        torch.save(
            {
                "world": self.trainer.world_size,
                "state": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "seen": {epoch: torch.cat(batches) for epoch, batches in seen.items()},
                "sync_bn": self.bn_synchronized,
            },
            folder / f"rank{self.trainer.global_rank}.pt",
        )
        self.trainer.strategy.barrier()  # every rank's file exists before rank 0 returns

    SimSiamModule.training_step = recording_step
    SimSiamModule.on_train_end = on_train_end


if __name__ == "__main__":
    record = Path(sys.argv[1])
    record.mkdir(parents=True, exist_ok=True)
    record_into(record)
    sys.exit(main(sys.argv[2:]))
