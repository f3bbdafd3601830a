"""Training: the LightningModule, its optimizer and schedule (train.py runs it end to end).

Lightning owns devices, precision, DDP, SyncBatchNorm, checkpoints and logging.
What is ours: the uint8 image cache living on the training device, batched
augmentation inside the training step, and a step that never forces a
host-device sync except every ``log_every`` steps.
"""

from __future__ import annotations

import csv
import math
import shlex
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, Dataset, Sampler

from .io import atomic_write
from .augment import Augment
from .config import AugmentConfig, TrainConfig
from .data import ImageSet
from .evaluate import collapse_level, extract_features, knn_accuracy, z_std
from .loss import simsiam_loss
from .model import SimSiam

METRIC_COLUMNS = ("epoch", "loss", "z_std", "collapse", "lr", "images_per_s", "knn_top1", "seconds")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(Exception):
    """Training stopped on Ctrl-C (SIGINT); the message says what was saved and how to resume."""


class CollapseWarning(UserWarning):
    """The representation is collapsing: z_std has fallen far below 1/sqrt(d)."""


# -- pure functions of the step ----------------------------------------------------------


def lr_factor(step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """Multiplier of the base lr at ``step``: linear warmup, then cosine decay to 0 (paper, section 4).

    >>> lr_factor(0, 100), lr_factor(50, 100), lr_factor(100, 100)
    (1.0, 0.5, 0.0)
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def describe_collapse(level: float) -> str:
    """Words for a collapse level (z_std relative to 1/sqrt(d); healthy runs sit near 1).

    The projector's output BN keeps every dimension at unit variance over the
    batch, so a collapsed z cannot be one constant vector: it becomes one
    direction with a few samples on the other side, and the level falls to about
    1.6/sqrt(batch) rather than to 0 (0.07 at batch 512, 0.3 at batch 32). Hence
    thresholds well above 0.
    """
    if level < 0.3:
        return "collapsed"
    if level < 0.6:
        return "collapsing"
    return "healthy"


def build_model(cfg: TrainConfig) -> SimSiam:
    m = cfg.model
    return SimSiam(
        backbone=m.backbone,
        small_images=bool(m.small_images),
        proj_dim=m.proj_dim,
        proj_hidden_dim=m.proj_hidden_dim,
        proj_layers=m.proj_layers,
        pred_hidden_dim=m.pred_hidden_dim,
        stop_gradient=m.stop_gradient,
        predictor=m.predictor,
    )


def build_augment(cfg: AugmentConfig, size: int) -> Augment:
    values = {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}
    return Augment(size=size, **values)


# -- batches of indices ---------------------------------------------------------------------


class ShardedBatches(Sampler):
    """Batches of indices into the image cache: one shard per process, reshuffled every epoch.

    Every epoch draws one permutation from (seed, epoch), identical on all
    processes; process r takes positions r, r + world, ... so the shards are
    disjoint and together cover the epoch. The incomplete last batch is dropped
    (batch norm and the loss want full batches).

    Resumable mid-epoch: ``state_dict`` records how many batches of the epoch were
    handed out, and after ``load_state_dict`` the next pass over that epoch skips
    them, so a run stopped mid-epoch continues with the very next batch.
    """

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.n, self.batch_size, self.rank, self.world_size, self.seed = n, batch_size, rank, world_size, seed
        self.epoch = 0
        self.handed_out = 0  # batches of the current epoch yielded so far
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches done) from a checkpoint

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before each epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // (self.batch_size * self.world_size)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.handed_out}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_at = (int(state["epoch"]), int(state["batches"]))

    def __iter__(self) -> Iterator[torch.Tensor]:
        skip = 0
        if self._resume_at is not None:
            epoch, done = self._resume_at
            self._resume_at = None
            skip = done if epoch == self.epoch else 0
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        shard = perm[self.rank :: self.world_size]
        self.handed_out = skip
        for i in range(skip, len(self)):
            # Counted before the yield: Lightning does not prefetch from a loader of known
            # length, so at a batch's end this is the number of batches trained this epoch.
            self.handed_out = i + 1
            yield shard[i * self.batch_size : (i + 1) * self.batch_size]


class _BatchLoader(DataLoader):
    """A DataLoader that Lightning treats as resumable: its sampler's position goes into checkpoints."""

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)


class _Identity(Dataset):
    """A 'dataset' whose item for a batch of indices is that batch: the images stay in the module."""

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        return index


# -- the LightningModule ---------------------------------------------------------------------


class SimSiamModule(L.LightningModule):
    """SimSiam training on a uint8 image cache. Build with a resolved :class:`TrainConfig` dict."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.cfg = TrainConfig.from_dict(config)
        self.model = build_model(self.cfg)
        self.augment = build_augment(self.cfg.augment, self.cfg.image_size)
        self.train_images: torch.Tensor | None = None
        self.bank: ImageSet | None = None  # labeled images whose features vote in the online kNN
        self.query: ImageSet | None = None  # labeled images classified by the online kNN
        self.knn_init: float | None = None  # kNN top-1 of the random-init backbone
        self.rows: list[dict[str, Any]] = []  # one per finished epoch
        self.run_dir: Path | None = None  # where metrics.csv goes (rank 0 writes it)
        self._step_fn = self._compute  # replaced by its compiled version on fit start
        self._render = self.augment.apply  # likewise, with --compile-augment
        self._cudagraphs = False  # the compiled step replays CUDA graphs (--compile-mode reduce-overhead)
        self._sums: torch.Tensor | None = None  # (loss, z_std, steps) summed on the device
        self._epoch_start = time.perf_counter()
        self._resumed_seconds = 0.0  # time already spent in an epoch that a checkpoint stopped mid-way
        self._rng_to_restore: dict[str, Any] | None = None
        self.stop_requested = False  # set by the Ctrl-C handler: save and stop at the end of this step
        self._saved_epochs: int | None = None  # epochs done in the last checkpoint saved or loaded

    def setup(self, stage: str) -> None:
        # Every process resolved the run folder by itself; rank 0's is the run's. (Under
        # torchrun or SLURM the others start together with rank 0 and may see its new
        # folder and number past it; they never write there, but fit() returns this one.)
        if self.run_dir is not None:
            self.run_dir = Path(self.trainer.strategy.broadcast(str(self.run_dir), src=0))

    # data ---------------------------------------------------------------------

    def attach_data(self, train: ImageSet, bank: ImageSet | None = None, query: ImageSet | None = None) -> None:
        self.train_images = train.images
        self.bank, self.query = bank, query

    def train_dataloader(self) -> DataLoader:
        assert self.train_images is not None, "attach_data() first"
        world = self.trainer.world_size
        per_process = self.cfg.batch_size // world
        sampler = ShardedBatches(self.train_images.shape[0], per_process, self.trainer.global_rank, world, self.cfg.seed)
        # Its own generator: making an iterator draws a seed from it, which must not
        # advance the global RNG that the augmentations draw from (a resumed run makes
        # its first iterator at another moment than an uninterrupted one). Pinned, so
        # Lightning's per-step copy of the index batch to the GPU is asynchronous.
        return _BatchLoader(
            _Identity(), sampler=sampler, batch_size=None, num_workers=0, generator=torch.Generator(), pin_memory=self.device.type == "cuda"
        )

    def _move_cache(self) -> None:
        # On a GPU the whole uint8 cache moves once when it fits with room to spare;
        # otherwise it stays in pinned host memory and each batch is copied over.
        images = self.train_images
        if self.device.type == "cuda" and images.device.type != "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if images.numel() < 0.5 * free:
                self.train_images = images.to(self.device)
            elif not images.is_pinned():
                self.train_images = images.pin_memory()

    # the step ---------------------------------------------------------------------

    def _compute(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p1, p2, z1, z2 = self.model(x1, x2)
        loss = simsiam_loss(p1, p2, z1, z2, kind=self.cfg.optim.loss, stop_gradient=self.cfg.model.stop_gradient)
        return loss, z_std(z1.detach())

    def training_step(self, index: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if self._cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are no longer needed
        images = self.train_images
        x = images[index.to(images.device)].to(self.device, non_blocking=True)  # (B, 3, S, S) uint8
        # Augmentation in float32 whatever the training precision (autocast would run the
        # blur's convolution in bf16), and outside autograd.
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            # Both views in one call: 2B samples, each with its own random parameters, at half
            # the kernel launches of two calls (launches add up when the GPU step is short).
            # The parameters are drawn eagerly; only the rendering may be compiled.
            both = torch.cat([x, x])
            params = self.augment.sample(both.shape[0], both.shape[2], both.shape[3], both.device)
            x1, x2 = self._render(both, params).chunk(2)  # (B, 3, s, s) each
        if self.cfg.channels_last:
            x1 = x1.contiguous(memory_format=torch.channels_last)
            x2 = x2.contiguous(memory_format=torch.channels_last)
        loss, std = self._step_fn(x1, x2)
        self._sums += torch.stack([loss.detach().float(), std.float(), torch.ones((), device=loss.device)])
        step = self.global_step + 1
        # Reading the loss is a host-device sync: on a GPU only every log_every steps.
        if self.device.type != "cuda" or step % self.cfg.log_every == 0:
            value = loss.detach().float().item()
            if not math.isfinite(value):
                last = "" if self.device.type != "cuda" else f" (checked every {self.cfg.log_every} steps)"
                raise NonFiniteLossError(
                    f"the loss became {value} at step {step}{last}, epoch {self.current_epoch + 1}; "
                    f"lower the learning rate (--lr, now {self.cfg.optim.base_lr}) or add --warmup-epochs"
                )
            if step % self.cfg.log_every == 0:
                self.log("train/loss_step", value, prog_bar=True, on_step=True, on_epoch=False, batch_size=x.shape[0])
        return loss

    # optimizer ---------------------------------------------------------------------

    def configure_optimizers(self):
        o = self.cfg.optim
        lr = o.base_lr * self.cfg.batch_size / 256
        predictor = list(self.model.predictor.parameters())
        predictor_ids = {id(p) for p in predictor}
        encoder = [p for p in self.model.parameters() if id(p) not in predictor_ids]
        groups = [{"params": encoder, "name": "encoder"}]
        if predictor:
            groups.append({"params": predictor, "name": "predictor"})
        fused = self.device.type == "cuda"
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay, fused=fused or None)
        steps_per_epoch = max(1, self._steps_per_epoch())
        total = steps_per_epoch * self.cfg.epochs
        warmup = int(round(o.warmup_epochs * steps_per_epoch))
        decayed = lambda step: lr_factor(step, total, warmup)  # noqa: E731
        fixed = lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0  # noqa: E731
        lambdas = [decayed] + ([fixed if o.fixed_predictor_lr else decayed] if predictor else [])
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _steps_per_epoch(self) -> int:
        world = self.trainer.world_size if self._trainer is not None else 1
        return self.train_images.shape[0] // (self.cfg.batch_size // world * world)

    # epochs ---------------------------------------------------------------------

    def on_fit_start(self) -> None:
        self._move_cache()
        if self.cfg.channels_last:
            # Weights in the inputs' layout: channels_last inputs with NCHW weights make
            # cuDNN (and inductor) convert at every convolution.
            self.model.to(memory_format=torch.channels_last)
        if self.trainer.world_size > 1:
            # Lightning seeds every process alike: without this, sample i of every
            # process's batch would get the same crop, flip and colour parameters.
            torch.manual_seed(self.cfg.seed + self.trainer.global_rank)
        if self.cfg.compile:
            mode = None if self.cfg.compile_mode == "default" else self.cfg.compile_mode
            self._step_fn = torch.compile(self._compute, mode=mode)
            self._cudagraphs = self.device.type == "cuda" and self.cfg.compile_mode == "reduce-overhead"
        if self.cfg.compile_augment:
            self._render = torch.compile(self.augment.apply)
        if self.knn_init is None and self.bank is not None and self.cfg.knn_every:
            self.knn_init = self.online_knn()
            self.print(f"kNN top-1 of the backbone at random init: {self.knn_init:.4f}")
        self._restore_process_state()

    def _restore_process_state(self) -> None:
        # Resuming: continue an epoch stopped mid-way (Lightning skips on_train_epoch_start
        # then), and each process's random stream exactly where the checkpoint left it.
        # Done here, last in on_fit_start: the device is known, and nothing draws from the
        # RNG before the first training step.
        rank, world = self.trainer.global_rank, self.trainer.world_size
        self._epoch_start = time.perf_counter() - self._resumed_seconds
        rng, sums = self._rng_to_restore, self._sums
        self._rng_to_restore = None
        if rng is not None:
            if rng["torch"].shape[0] == world:
                # clone(): torch.set_rng_state crashes (segfault) on a row view of a larger tensor
                _set_rng_state({k: v[rank].clone() for k, v in rng.items()}, self.device)
            else:  # saved by another number of processes: a fresh stream, still distinct per process
                torch.manual_seed(self.cfg.seed * 1_000_003 + 1_000 * len(self.rows) + rank)
        if sums is not None:
            if sums.shape[0] != world:  # another number of processes: rank 0 carries the epoch's sums so far
                sums = (sums.sum(dim=0, keepdim=True) if rank == 0 else torch.zeros_like(sums[:1])).expand(world, -1)
            self._sums = sums[rank].to(self.device)

    def on_train_epoch_start(self) -> None:
        if self._agree_to_stop():
            self._stop_at_epoch_start()
        self._sums = torch.zeros(3, device=self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Ctrl-C is honoured here, between two steps, never inside one: an optimizer
        # step cut in half would leave some weights updated and others not.
        if self.trainer.world_size > 1 and self.global_step % self.cfg.log_every:
            return  # agreeing to stop is a collective under DDP: done every log_every steps only
        if batch_idx + 1 >= self.trainer.num_training_batches:
            return  # the epoch's last step: its end-of-epoch checkpoint comes next (see on_train_epoch_start)
        if self._agree_to_stop():
            self._save_and_stop()

    def _agree_to_stop(self) -> bool:
        if self.trainer.world_size > 1:  # every process must stop at the same step
            return bool(self.trainer.strategy.reduce_boolean_decision(self.stop_requested, all=False))
        return self.stop_requested

    def _save_and_stop(self) -> None:
        assert self.run_dir is not None, "fit() sets run_dir"
        if not bool(torch.isfinite(self._sums[0])):
            raise NonFiniteLossError(f"the loss became non-finite before step {self.global_step}; no checkpoint saved on stopping")
        path = self.run_dir / "checkpoints" / "last.ckpt"
        self.trainer.save_checkpoint(path)
        done = int(self._sums[2].item())
        raise TrainingInterrupted(
            f"interrupted in epoch {self.current_epoch + 1}/{self.cfg.epochs} after step {self.global_step} "
            f"({done} of its {self.trainer.num_training_batches} steps done); saved {path}; "
            f"continue with: {resume_command(self.run_dir)}"
        )

    def _stop_at_epoch_start(self) -> None:
        # Ctrl-C during an epoch's last step or its end: the end-of-epoch checkpoint is
        # saved by then, and resuming from an epoch boundary is Lightning's plainest case.
        assert self.run_dir is not None, "fit() sets run_dir"
        path = self.run_dir / "checkpoints" / "last.ckpt"
        if self._saved_epochs is None:
            raise TrainingInterrupted("interrupted before the first epoch ended; nothing was saved")
        saved = "saved" if self._saved_epochs == self.current_epoch else f"the last checkpoint ({self._saved_epochs} epochs) is"
        raise TrainingInterrupted(
            f"interrupted after epoch {self.current_epoch}/{self.cfg.epochs} (step {self.global_step}); "
            f"{saved} {path}; continue with: {resume_command(self.run_dir)}"
        )

    def on_train_epoch_end(self) -> None:
        # Summed over the processes, so every process holds the same epoch figures (the
        # monitored kNN top-1 among them); the epoch's one forced sync.
        total_loss, total_std, steps = self.trainer.strategy.reduce(self._sums, reduce_op="sum").tolist()
        seconds = time.perf_counter() - self._epoch_start
        loss, std = total_loss / max(steps, 1), total_std / max(steps, 1)
        images = steps * (self.cfg.batch_size // self.trainer.world_size)
        epoch = self.current_epoch + 1
        level = collapse_level(std, self.model.out_dim)
        row: dict[str, Any] = dict(
            epoch=epoch,
            loss=loss,
            z_std=std,
            collapse=level,
            lr=self.optimizers().param_groups[0]["lr"],
            images_per_s=images / max(seconds, 1e-9),
            knn_top1=None,
            seconds=seconds,
        )
        if self.trainer.world_size > 1 and not self.bn_synchronized:
            self._share_bn_statistics()
        if self.bank is not None and self.cfg.knn_every and (epoch % self.cfg.knn_every == 0 or epoch == self.cfg.epochs):
            row["knn_top1"] = self.online_knn()
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"the loss became {loss} in epoch {epoch}; lower the learning rate (--lr, now {self.cfg.optim.base_lr})"
            )
        self.rows.append(row)
        if self.trainer.is_global_zero and self.run_dir is not None:
            write_metrics_csv(self.run_dir / "metrics.csv", self.rows)
            knn = "" if row["knn_top1"] is None else f", kNN top-1 {row['knn_top1']:.4f}"
            self.print(
                f"epoch {epoch}/{self.cfg.epochs}: loss {loss:.4f}, z_std {std:.4f} ({describe_collapse(level)}), "
                f"lr {row['lr']:.4g}, {row['images_per_s']:.0f} images/s{knn}"
            )
        self.log_dict({f"train/{k}": float(v) for k, v in row.items() if k != "epoch" and v is not None}, sync_dist=False)
        if row["knn_top1"] is not None:
            self.log("knn_top1", row["knn_top1"])  # monitored by the best-checkpoint callback
        state = describe_collapse(level)
        if state != "healthy" and self.trainer.is_global_zero:
            message = (
                f"epoch {epoch}: the representation is {state}: the std of the l2-normalised z is {std:.4f}, "
                f"{level:.2f} of the healthy 1/sqrt(d) = {1 / math.sqrt(self.model.out_dim):.4f}"
            )
            warnings.warn(message, CollapseWarning, stacklevel=1)
        # Ctrl-C during this epoch: it stops at the next epoch's start (see there), with this
        # epoch saved even when --checkpoint-every would skip it.
        if self._agree_to_stop() and epoch % self.cfg.checkpoint_every and epoch < self.cfg.epochs:
            self.trainer.save_checkpoint(self.run_dir / "checkpoints" / "last.ckpt")

    def online_knn(self) -> float:
        """kNN top-1 of the current backbone: bank features vote for the query images.

        Under DDP every process extracts a slice and gathers the rest, so all of them
        compute the same figure (ModelCheckpoint(monitor="knn_top1") decides on each).
        """
        bank, query = self._features(self.bank.images), self._features(self.query.images)
        return knn_accuracy(bank, self.bank.labels, query, self.query.labels, k=self.cfg.knn_k, temperature=self.cfg.knn_temperature)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features (N, D) of uint8 ``images``: this process's slice, gathered from all."""
        world, rank = self.trainer.world_size, self.trainer.global_rank
        per = -(-images.shape[0] // world)
        mine = extract_features(
            self.model, images[rank * per : (rank + 1) * per], device=self.device, channels_last=bool(self.cfg.channels_last)
        )  # (<= per, D): the last slices may be short or empty
        if world == 1:
            return mine
        padded = mine.new_zeros(per, self.model.feature_dim)  # all_gather wants one shape on every process
        padded[: mine.shape[0]] = mine
        return self.all_gather(padded).reshape(world * per, -1)[: images.shape[0]]  # (N, D)

    @property
    def bn_synchronized(self) -> bool:
        """Whether the model's batch norm layers are SyncBatchNorm (Lightning converts them under DDP)."""
        return any(isinstance(m, torch.nn.SyncBatchNorm) for m in self.model.modules())

    def _share_bn_statistics(self) -> None:
        """Give every process rank 0's BN running statistics (plain BN under DDP).

        DDP already treats rank 0's buffers as the model's (it broadcasts them before
        each forward) and rank 0 saves the checkpoints, but every process updates its
        own copy in the epoch's last step. Without this the online kNN would mix
        slices extracted with different statistics.
        """
        buffers = [b for m in self.model.modules() if isinstance(m, _BatchNorm) for b in m.buffers()]
        for mine, rank0 in zip(buffers, self.trainer.strategy.broadcast([b.cpu() for b in buffers], src=0)):
            mine.copy_(rank0)

    # checkpoint extras ------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._saved_epochs = len(self.rows)
        checkpoint["simsiam"] = {
            "knn_init": self.knn_init,
            "rows": self.rows,
            # What a resume needs to continue bit for bit, one row per process (each
            # draws its own augmentations and sums its own shard): the RNG state the
            # augmentations draw from (Lightning does not save it), and the running sums
            # of an epoch stopped mid-way.
            "rng": {k: self._per_process(v) for k, v in _rng_state(self.device).items()},
            "epoch_sums": None if self._sums is None else self._per_process(self._sums.detach()),
            "epoch_seconds": time.perf_counter() - self._epoch_start,
        }

    def _per_process(self, x: torch.Tensor) -> torch.Tensor:
        """(world, ...) on the CPU: ``x`` of every process. A collective under DDP; every process saves checkpoints."""
        if self.trainer.world_size == 1:
            return x.detach().cpu().unsqueeze(0)
        return self.all_gather(x.to(self.device)).cpu()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra = checkpoint.get("simsiam", {})
        self.knn_init = extra.get("knn_init")
        self.rows = list(extra.get("rows", []))
        self._saved_epochs = len(self.rows)
        self._rng_to_restore = extra.get("rng")  # (world, ...) each; applied in on_fit_start, once the device is known
        self._sums = extra.get("epoch_sums")
        self._resumed_seconds = float(extra.get("epoch_seconds") or 0.0)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


# -- the run folder --------------------------------------------------------------------------


def write_metrics_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite metrics.csv from the epoch rows (each epoch once, also after a resume); atomic."""
    with atomic_write(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_COLUMNS})


def resume_command(out: Path) -> str:
    return f"simsiam train --resume --out {shlex.quote(str(out))}"
