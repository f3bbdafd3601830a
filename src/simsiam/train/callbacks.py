"""What a training run does besides its steps, as Lightning callbacks.

- :class:`OnlineKnn`: the kNN top-1 of the backbone at random init and after epochs;
- :class:`EpochReport`: the epoch's loss and z_std summed on the device, metrics.csv,
  the epoch line, the :class:`CollapseWarning`, ``knn_top1`` for the best checkpoint;
- :class:`GracefulStop`: Ctrl-C saves a checkpoint between two steps and stops;
- :class:`ExactResume`: each process's random stream, saved and restored, so a
  resumed run continues bit for bit (on CPU) as if it had never stopped;
- :class:`FairShare`: on a CPU, the threads follow the cores the machine's other
  processes leave free, so that a busy machine slows training in proportion.

Each keeps its own state in checkpoints (``state_dict``). They run in the order
:func:`simsiam.train.fit` lists them: the report before the stop (an epoch's row
is in the checkpoint saved on stopping at its end), and the RNG restored in
``on_train_start``, after every ``on_fit_start`` (the random-init kNN among them)
and before the first step.

Rank 0 speaks, every process takes part: the small pieces the callbacks and fit() share.

- :func:`say`: a line printed by rank 0, above the progress bar;
- :func:`per_process`: a tensor of every process, gathered (a collective under DDP);
- :class:`ProgressBar`: Lightning's bar, counting epochs from 1 as the epoch lines do;
- :class:`RankZeroRunFolder`: rank 0's run folder made the run's for every process.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm.auto import tqdm

from simsiam.config.schema import TrainConfig
from simsiam.data.batches import take
from simsiam.data.sources import ImageSet
from simsiam.errors import ConfigError, NonFiniteLossError, TrainingInterrupted
from simsiam.evaluate import collapse_level, extract_features, knn_accuracy
from simsiam.run_folder import RunFolder
from simsiam.system import OthersMeter

__all__ = [
    "CollapseWarning",
    "describe_collapse",
    "OnlineKnn",
    "share_bn_statistics",
    "EpochReport",
    "GracefulStop",
    "ExactResume",
    "FairShare",
]
__all__ += ["say", "per_process", "ProgressBar", "RankZeroRunFolder"]  # shared with fit()


class CollapseWarning(UserWarning):
    """The representation is collapsing: z_std has fallen far below 1/sqrt(d)."""


def describe_collapse(level: float) -> str:
    """Words for a collapse level (z_std relative to 1/sqrt(d); healthy runs sit near 1).

    The projector's output BN keeps every dimension at unit variance over the
    batch, so a collapsed z cannot be one constant vector: it becomes one
    direction with a few samples on the other side, and the level falls to about
    1.6/sqrt(batch) rather than to 0 (0.07 at batch 512, 0.3 at batch 32). Hence
    thresholds well above 0.

    >>> describe_collapse(0.9), describe_collapse(0.5), describe_collapse(0.1)
    ('healthy', 'collapsing', 'collapsed')
    """
    if level < 0.3:
        return "collapsed"
    if level < 0.6:
        return "collapsing"
    return "healthy"


class OnlineKnn(L.Callback):
    """kNN top-1 of the backbone during training: ``bank`` images vote for the classes of ``query`` images.

    Measured once at random init (``init_top1``) and every ``every`` epochs and at
    the last, with l2-normalised features, cosine similarity, ``k`` neighbours and
    similarity weights exp(s / ``temperature``) (:func:`~simsiam.evaluate.knn_accuracy`).
    ``bank`` and ``query`` are labeled :class:`~simsiam.data.ImageSet` s or
    (uint8 images, labels) pairs. It works with any LightningModule whose ``model``
    (or itself) has ``features(x)``; images are normalised with ``mean`` and
    ``std`` (default: the module's config, else ImageNet's) and centre-cropped to
    ``crop``. With ``report`` (the default) it logs ``knn_top1`` (a ModelCheckpoint may monitor it)
    and prints a line::

        L.Trainer(callbacks=[OnlineKnn(train_set, val_set, k=200)]).fit(module, data)

    ``simsiam train`` builds it with :meth:`of_config` and reports it in its epoch
    lines. Under DDP every process extracts a slice and gathers the rest, so all of
    them compute the same figure.
    """

    def __init__(
        self,
        bank: Any,
        query: Any,
        k: int = 200,
        temperature: float = 0.1,
        every: int = 1,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        crop: int | None = None,
        channels_last: bool | None = None,
        report: bool = True,
    ):
        self.bank, self.query = _labeled(bank, "bank"), _labeled(query, "query")
        self.k, self.temperature, self.every = k, temperature, every
        self.mean, self.std, self.crop, self.channels_last = mean, std, crop, channels_last
        self.report = report  # log knn_top1 and print a line at epoch ends (simsiam train's EpochReport does that itself)
        self.init_top1: float | None = None

    @classmethod
    def of_config(cls, bank: ImageSet, query: ImageSet, cfg: TrainConfig) -> OnlineKnn:
        """The online kNN of a ``simsiam train`` run: its options, reported by :class:`EpochReport`."""
        mean, std = cfg.normalization()  # as the views are normalised
        options = dict(mean=mean, std=std, crop=cfg.image_size, channels_last=bool(cfg.channels_last), report=False)
        return cls(bank, query, k=cfg.knn_k, temperature=cfg.knn_temperature, every=cfg.knn_every, **options)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.init_top1 is None and self.every:
            self.init_top1 = self.top1(trainer, pl_module)
            say(trainer, f"kNN top-1 of the backbone at random init: {self.init_top1:.4f}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.report:
            return
        top1 = self.measure(trainer, pl_module, trainer.current_epoch + 1)
        if top1 is not None:
            pl_module.log("knn_top1", top1, sync_dist=True)  # the same on every process: the mean is that figure
            say(trainer, f"epoch {trainer.current_epoch + 1}: kNN top-1 {top1:.4f}")

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> float | None:
        """The top-1 after ``epoch`` (1-based) when one is due, else None; called by every process at every epoch end."""
        if trainer.world_size > 1 and not any(isinstance(m, torch.nn.SyncBatchNorm) for m in pl_module.modules()):
            share_bn_statistics(trainer, pl_module)
        if self.every and (epoch % self.every == 0 or epoch == trainer.max_epochs):
            return self.top1(trainer, pl_module)
        return None

    def top1(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        bank, query = self._features(trainer, pl_module, self.bank.images), self._features(trainer, pl_module, self.query.images)
        return knn_accuracy(bank, self.bank.labels, query, self.query.labels, k=self.k, temperature=self.temperature)

    def _features(self, trainer: L.Trainer, pl_module: L.LightningModule, images: torch.Tensor) -> torch.Tensor:
        """Backbone features (N, D) of uint8 ``images``: this process's slice, gathered from all."""
        world, rank = trainer.world_size, trainer.global_rank
        model = getattr(pl_module, "model", pl_module)
        cfg = getattr(pl_module, "cfg", None)
        mean, std = (self.mean, self.std) if self.mean is not None else cfg.normalization() if cfg is not None else (None, None)
        crop = self.crop if self.crop is not None else getattr(cfg, "image_size", None)
        channels_last = self.channels_last if self.channels_last is not None else bool(getattr(cfg, "channels_last", False))
        per = -(-images.shape[0] // world)
        slice_ = take(images, slice(rank * per, (rank + 1) * per))  # from disk: a view, read batch by batch
        mine = extract_features(model, slice_, device=pl_module.device, channels_last=channels_last, mean=mean, std=std, crop=crop)
        if world == 1:
            return mine
        padded = mine.new_zeros(per, mine.shape[1])  # all_gather wants one shape on every process
        padded[: mine.shape[0]] = mine
        return trainer.strategy.all_gather(padded).reshape(world * per, -1)[: images.shape[0]]  # (N, D)

    def state_dict(self) -> dict[str, Any]:
        return {"init_top1": self.init_top1}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.init_top1 = state.get("init_top1")

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if legacy := _legacy_state(self, checkpoint):  # a checkpoint of the previous version
            self.load_state_dict({"init_top1": legacy.get("knn_init")})


def _labeled(images: Any, name: str) -> ImageSet:
    """An ImageSet, or (images, labels) made one: the kNN needs labels."""
    if isinstance(images, ImageSet):
        found = images
    else:
        try:
            x, y = images
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: an ImageSet or an (images, labels) pair, got {type(images).__name__}") from None
        found = ImageSet(x, torch.as_tensor(y), [], [], name)
    if found.labels is None:
        raise ConfigError(f"{name}: the online kNN needs labeled images (class subfolders)")
    return found


def share_bn_statistics(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
    """Give every process rank 0's BN running statistics (plain BN under DDP).

    DDP already treats rank 0's buffers as the model's (it broadcasts them before
    each forward) and rank 0 saves the checkpoints, but every process updates its
    own copy in the epoch's last step. Without this the online kNN would mix
    slices extracted with different statistics.
    """
    buffers = [b for m in pl_module.modules() if isinstance(m, _BatchNorm) for b in m.buffers()]
    for mine, rank0 in zip(buffers, trainer.strategy.broadcast([b.cpu() for b in buffers], src=0)):
        mine.copy_(rank0)


class EpochReport(L.Callback):
    """Per epoch: the mean loss and z_std, the lr, images/s and the kNN top-1, as a row of metrics.csv and a line.

    The sums of loss, z_std and steps stay on the device during the epoch (no
    sync per step); they are reduced over the processes once, at its end. A
    collapsing representation gets a :class:`CollapseWarning`. ``rows`` holds
    every finished epoch, also those before a resume.
    """

    def __init__(self, run: RunFolder, cfg: TrainConfig, knn: OnlineKnn | None = None):
        self.run, self.cfg, self.knn = run, cfg, knn
        self.rows: list[dict[str, Any]] = []
        self._sums: torch.Tensor | None = None  # (loss, z_std, steps) of this process's epoch so far
        self._epoch_start = time.perf_counter()
        self._restored: dict[str, Any] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Resumed mid-epoch, Lightning skips on_train_epoch_start: the epoch goes on from its sums.
        self._sums = torch.zeros(3, device=pl_module.device)
        self._epoch_start = time.perf_counter()
        restored, self._restored = self._restored, None
        if restored is None or restored.get("sums") is None:
            return
        sums, rank, world = restored["sums"], trainer.global_rank, trainer.world_size
        if sums.shape[0] != world:  # saved by another number of processes: rank 0 carries the epoch's sums so far
            sums = (sums.sum(dim=0, keepdim=True) if rank == 0 else torch.zeros_like(sums[:1])).expand(world, -1)
        self._sums = sums[rank].to(pl_module.device)
        self._epoch_start -= float(restored.get("seconds") or 0.0)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sums = torch.zeros(3, device=pl_module.device)
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss, std = outputs["loss"].detach().float(), outputs["z_std"].detach().float()
        self._sums += torch.stack([loss, std, torch.ones_like(loss)])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        row = self._row(trainer, pl_module)
        if not math.isfinite(row["loss"]):
            raise NonFiniteLossError(
                f"the loss became {row['loss']} in epoch {row['epoch']}; lower the learning rate (--lr, now {self.cfg.optim.base_lr})"
            )
        self.rows.append(row)
        level, state = row["collapse"], describe_collapse(row["collapse"])
        if trainer.is_global_zero:
            self.run.write_metrics(self.rows)
            knn = "" if row["knn_top1"] is None else f", kNN top-1 {row['knn_top1']:.4f}"
            say(
                trainer,
                f"epoch {row['epoch']}/{self.cfg.epochs}: loss {row['loss']:.4f}, z_std {row['z_std']:.4f} ({state}), "
                f"lr {row['lr']:.4g}, {row['images_per_s']:.0f} images/s{knn}",
            )
        pl_module.log_dict({f"train/{k}": float(v) for k, v in row.items() if k != "epoch" and v is not None}, sync_dist=False)
        if row["knn_top1"] is not None:
            pl_module.log("knn_top1", row["knn_top1"])  # monitored by the best-checkpoint callback
        if state != "healthy" and trainer.is_global_zero:
            dim = pl_module.model.out_dim
            message = (
                f"epoch {row['epoch']}: the representation is {state}: the std of the l2-normalised z is {row['z_std']:.4f}, "
                f"{level:.2f} of the healthy 1/sqrt(d) = {1 / math.sqrt(dim):.4f}"
            )
            warnings.warn(message, CollapseWarning, stacklevel=1)

    def _row(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        # Summed over the processes, so every process holds the same epoch figures (the
        # monitored kNN top-1 among them); the epoch's one forced sync.
        total_loss, total_std, steps = trainer.strategy.reduce(self._sums, reduce_op="sum").tolist()
        seconds = time.perf_counter() - self._epoch_start
        loss, std = total_loss / max(steps, 1), total_std / max(steps, 1)
        epoch = trainer.current_epoch + 1
        images = steps * (self.cfg.batch_size // trainer.world_size)
        knn = self.knn.measure(trainer, pl_module, epoch) if self.knn is not None else None
        return dict(
            epoch=epoch,
            loss=loss,
            z_std=std,
            collapse=collapse_level(std, pl_module.model.out_dim),
            lr=trainer.optimizers[0].param_groups[0]["lr"],
            images_per_s=images / max(seconds, 1e-9),
            knn_top1=knn,
            seconds=seconds,
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer  # state_dict() gathers every process's sums

    def state_dict(self) -> dict[str, Any]:
        sums = None if self._sums is None else per_process(self._trainer, self._sums)
        return {"rows": self.rows, "sums": sums, "seconds": time.perf_counter() - self._epoch_start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state.get("rows", []))
        self._restored = state  # the sums go to the device in on_train_start

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if legacy := _legacy_state(self, checkpoint):
            self.load_state_dict({"rows": legacy.get("rows", []), "sums": legacy.get("epoch_sums"), "seconds": legacy.get("epoch_seconds")})


class GracefulStop(L.Callback):
    """Ctrl-C: save a checkpoint after the current step and stop, with the command that continues the run.

    :meth:`request` is what the SIGINT handler calls. The stop happens between
    two steps, never inside one (an optimizer step cut in half would leave some
    weights updated and others not); under DDP all processes agree to stop at
    the same step, checked every ``log_every`` steps (agreeing is a collective).
    Ends training with :class:`~simsiam.errors.TrainingInterrupted`.
    """

    def __init__(self, run: RunFolder, cfg: TrainConfig):
        self.run, self.cfg = run, cfg
        self.requested = False
        self.saved_epochs: int | None = None  # epochs done in the newest last.ckpt, if any

    def request(self) -> bool:
        """Ask to stop after the current step; False when that was asked already."""
        first, self.requested = not self.requested, True
        return first

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.saved_epochs = trainer.current_epoch if trainer.ckpt_path else None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.world_size > 1 and trainer.global_step % self.cfg.log_every:
            return
        if batch_idx + 1 >= trainer.num_training_batches:
            return  # the epoch's last step: its end-of-epoch checkpoint comes next (see on_train_epoch_start)
        if self._agreed(trainer):
            self._save_and_stop(trainer, pl_module, done=batch_idx + 1)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Ctrl-C during an epoch's last step or its end: the end-of-epoch checkpoint is
        # saved by then, and resuming from an epoch boundary is Lightning's plainest case.
        if not self._agreed(trainer):
            return
        if self.saved_epochs is None:
            raise TrainingInterrupted("interrupted before the first epoch ended; nothing was saved")
        epoch = trainer.current_epoch
        saved = "saved" if self.saved_epochs == epoch else f"the last checkpoint ({self.saved_epochs} epochs) is"
        raise TrainingInterrupted(
            f"interrupted after epoch {epoch}/{self.cfg.epochs} (step {trainer.global_step}); "
            f"{saved} {self.run.last_checkpoint}; continue with: {self.run.resume_command()}"
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch, every = trainer.current_epoch + 1, self.cfg.checkpoint_every
        if epoch % every == 0:
            self.saved_epochs = epoch  # last.ckpt's own callback saves this epoch
        elif epoch < self.cfg.epochs and self._agreed(trainer):
            # Ctrl-C during this epoch: it stops at the next epoch's start, with this
            # epoch saved even though --checkpoint-every would skip it.
            trainer.save_checkpoint(self.run.last_checkpoint)
            self.saved_epochs = epoch

    def _agreed(self, trainer: L.Trainer) -> bool:
        if trainer.world_size > 1:  # every process must stop at the same step
            return bool(trainer.strategy.reduce_boolean_decision(self.requested, all=False))
        return self.requested

    def _save_and_stop(self, trainer: L.Trainer, pl_module: L.LightningModule, done: int) -> None:
        # On a GPU the loss is read every log_every steps only: a non-finite one in
        # between has reached the weights, and such a checkpoint must not replace a good one.
        if not bool(torch.stack([p.detach().isfinite().all() for p in pl_module.parameters()]).all()):
            raise NonFiniteLossError(f"the loss became non-finite before step {trainer.global_step}; no checkpoint saved on stopping")
        trainer.save_checkpoint(self.run.last_checkpoint)
        raise TrainingInterrupted(
            f"interrupted in epoch {trainer.current_epoch + 1}/{self.cfg.epochs} after step {trainer.global_step} "
            f"({done} of its {trainer.num_training_batches} steps done); saved {self.run.last_checkpoint}; "
            f"continue with: {self.run.resume_command()}"
        )


class ExactResume(L.Callback):
    """Each process's random stream, in every checkpoint and back before the first step of a resumed run.

    The augmentations draw from torch's global RNG (Lightning does not save it).
    Saved one row per process (each draws its own views); restored in
    ``on_train_start``, when the device is known and nothing else will draw
    before the first step. A fresh run under DDP gets a stream per process
    (Lightning seeds every process alike: without this, sample i of every
    process's batch would get the same crop, flip and colour parameters).
    """

    def __init__(self, seed: int):
        self.seed = seed
        self._restored: dict[str, torch.Tensor] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer  # state_dict() gathers every process's RNG state

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rank, world, device = trainer.global_rank, trainer.world_size, pl_module.device
        rng, self._restored = self._restored, None
        if rng is not None and rng["torch"].shape[0] == world:
            torch.set_rng_state(rng["torch"][rank].clone())  # clone(): a row view of a larger tensor segfaults
            if device.type == "cuda" and rng.get("cuda") is not None:
                torch.cuda.set_rng_state(rng["cuda"][rank].clone(), device)
        elif rng is not None:  # saved by another number of processes: a fresh stream, still one per process
            torch.manual_seed(self.seed * 1_000_003 + 1_000 * trainer.current_epoch + rank)
        elif world > 1:
            torch.manual_seed(self.seed + rank)

    def state_dict(self) -> dict[str, Any]:
        device = self._trainer.strategy.root_device
        state = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(device)
        return {"rng": {k: per_process(self._trainer, v) for k, v in state.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restored = state.get("rng")

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if legacy := _legacy_state(self, checkpoint):
            self.load_state_dict({"rng": legacy.get("rng")})


class FairShare(L.Callback):
    """Training on a CPU that other processes share: as many threads as they leave cores free.

    Every ``every`` seconds (at a step boundary) it reads how much of the machine the
    other processes used since the last reading and sets torch's thread count; a
    line says when it drops and when it comes back. It never goes above the count
    the run started with, and stays out of the way where that count was chosen:
    OMP_NUM_THREADS set, a GPU, or several processes (Lightning gives each its share).
    """

    def __init__(self, every: float = 2.0):
        self.every = every
        self.meter = OthersMeter()  # its first window runs from here (loading, setup) to the first step
        self.ceiling: int | None = None
        self._since = time.monotonic()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        chosen = "OMP_NUM_THREADS" in os.environ or pl_module.device.type != "cpu" or trainer.world_size > 1
        self.ceiling = None if chosen else torch.get_num_threads()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.ceiling is None or time.monotonic() - self._since < self.every:
            return
        self._since = time.monotonic()
        others = self.meter.reading()
        if others is None:
            return
        # Why not always one thread per core: torch's intra-op threads (OpenMP) meet at a
        # barrier after every operation, and while one of them waits for a core the others
        # spin. Beside busy processes each barrier waits for the scheduler to run every
        # thread of the team, and a run with more threads than free cores fell to 5% of its
        # speed (benchmarks/busy.py; a third would be its fair share). So the team shrinks to
        # the cores the others leave free (rounded, so a background flicker keeps it whole)
        # and grows back when they go. A run that changes its thread count rounds
        # differently from one that does not: OMP_NUM_THREADS fixes the count.
        threads = max(1, min(self.ceiling, round(self.meter.cores - others)))
        now = torch.get_num_threads()
        if threads == now:
            return
        torch.set_num_threads(threads)
        if threads < now:
            say(
                trainer,
                f"the machine is busy (other processes keep {others:.1f} of its {self.meter.cores} cores busy): training on {threads} thread{'s' if threads > 1 else ''}",
            )
        else:
            say(trainer, f"the machine has {self.meter.cores - others:.1f} cores free again: training on {threads} threads")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.ceiling is not None:
            torch.set_num_threads(self.ceiling)  # what comes after (the kNN, the next run in this process) as before


def _legacy_state(callback: L.Callback, checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The previous version's run state ("simsiam" in the checkpoint), when the callback has no state of its own there."""
    if callback.state_key in checkpoint.get("callbacks", {}):
        return None
    return checkpoint.get("simsiam")


# -- rank 0 speaks, every process takes part -------------------------------------------------


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
