"""Rank 0 speaks, every process takes part: the small pieces a run's callbacks and fit() share.

- :func:`say`: a line printed by rank 0, above the progress bar;
- :func:`per_process`: a tensor of every process, gathered (a collective under DDP);
- :class:`ProgressBar`: Lightning's bar, counting epochs from 1 as the epoch lines do;
- :class:`RankZeroRunFolder`: rank 0's run folder made the run's for every process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from tqdm.auto import tqdm

from simsiam.run_folder import RunFolder


def say(trainer: L.Trainer, text: str) -> None:
    """Print a line on rank 0: above the progress bar when one is drawn, plainly when none is (yet)."""
    if trainer.is_global_zero:
        tqdm.write(text)


def per_process(trainer: L.Trainer, x: torch.Tensor) -> torch.Tensor:
    """(world, ...) on the CPU: ``x`` of every process. A collective under DDP (every process saves checkpoints)."""
    if trainer.world_size == 1:
        return x.detach().cpu().unsqueeze(0)
    return trainer.strategy.all_gather(x.detach().to(trainer.strategy.root_device)).cpu()


class ProgressBar(TQDMProgressBar):
    """Lightning's bar, counting epochs as the epoch lines do ("Epoch 5/30"), without the logger's version number."""

    @property
    def train_description(self) -> str:
        return f"Epoch {self.trainer.current_epoch + 1}/{self.trainer.max_epochs}"

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return {k: v for k, v in super().get_metrics(trainer, pl_module).items() if k != "v_num"}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.train_progress_bar.total = self.total_train_batches  # resumed mid-epoch, the epoch start below is skipped

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        # Lightning's own would show its 0-based "Epoch 4" for a moment first.
        self.train_progress_bar.set_description(self.train_description, refresh=False)
        self.train_progress_bar.reset(total=self.total_train_batches)


class RankZeroRunFolder(L.Callback):
    """Under torchrun or SLURM every process chose the run folder by itself; rank 0's is the run's.

    (The others start together with rank 0 and may see its new folder and number
    past it; they never write there, but every callback and fit() report this one.)
    """

    def __init__(self, run: RunFolder):
        self.run = run

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.run.path = Path(trainer.strategy.broadcast(str(self.run.path), src=0))
