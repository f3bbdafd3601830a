"""The LightningModule (the model, the views, the step, the optimizer and its schedule) and the DataModule.

Both are public (:mod:`simsiam.lightning`): ``simsiam train`` and your own Trainer
use the same two classes.

Lightning owns devices, precision, DDP, SyncBatchNorm, checkpoints and logging;
everything else about a run (the online kNN, the epoch report, Ctrl-C, exact
resume) is a callback in :mod:`simsiam.train.callbacks`, and the batches come from
:mod:`simsiam.data.batches`. What is here: batched augmentation inside the step, on
the training device, and a step that never forces a host-device sync on a GPU
except every ``log_every`` steps.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import lightning as L
import torch

from simsiam.augment import Augment
from simsiam.checkpoint import rename_legacy_weights
from simsiam.config.schema import TrainConfig
from simsiam.errors import ConfigError, NonFiniteLossError, TrainingInterrupted
from simsiam.loss import simsiam_loss, z_std
from simsiam.model.siamese import SimSiam

__all__ = ["SimSiamModule", "SimSiamDataModule", "config_from_options", "lr_factor", "NonFiniteLossError", "TrainingInterrupted"]


def config_from_options(options: dict[str, Any]) -> TrainConfig:
    """A resolved TrainConfig from options by their plain names (``backbone=``, ``base_lr=``, ``blur_p=``...).

    Each name is the last part of a config key (``model.backbone`` is ``backbone``);
    an unknown one is a ConfigError naming the closest. ``image_size`` is required:
    it sizes the views and the networks, as DATA's size does for ``simsiam train``.

    >>> config_from_options({"backbone": "resnet10-tiny", "image_size": 32}).model.proj_layers
    2
    """
    from simsiam.config.layers import check, resolve
    from simsiam.options import closest, nest, walk

    keys = {key.rsplit(".", 1)[-1]: key for key, _, _ in walk(TrainConfig)}
    for name in options:
        if name not in keys:
            guess = closest(name, keys)
            raise ConfigError(f"{name}: not an option of SimSiamModule" + (f"; did you mean {guess}?" if guess else ""))
    if options.get("image_size") is None:
        raise ConfigError("image_size: SimSiamModule needs the size of the views (the images' side, or less), e.g. image_size=32")
    cfg = TrainConfig.from_dict(nest({keys[name]: value for name, value in options.items()}), where="SimSiamModule")
    names = {keys[name]: name for name in options}
    check(cfg, names)
    return resolve(cfg, cfg.image_size, on_gpu=False, names=names)  # devices and precision are the Trainer's


def lr_factor(step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """Multiplier of the base lr at ``step``: linear warmup, then cosine decay to 0 (paper, section 4).

    >>> lr_factor(0, 100), lr_factor(50, 100), lr_factor(100, 100)
    (1.0, 0.5, 0.0)
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class SimSiamModule(L.LightningModule):
    """SimSiam training on batches of uint8 images, for ``simsiam train`` and for your own Trainer.

    Give it options by name, as the command line has them (``backbone``,
    ``image_size``, ``proj_dim``, ``base_lr``, ``blur_p``, ...: every option of the
    model, the views, the loss and the optimizer, with the same defaults, checks
    and one-line errors); ``image_size`` is the views' size. Its batches are
    (B, C, H, W) uint8 image tensors, or (images, labels) pairs, from any
    DataLoader; the lr schedule is sized from the Trainer's steps. Its checkpoints
    carry the resolved options, so ``simsiam export``, ``embed``, ``evaluate``,
    ``neighbors`` and ``map`` take them::

        module = SimSiamModule(backbone="resnet10-tiny", image_size=32, base_lr=0.3)
        L.Trainer(max_epochs=10).fit(module, my_uint8_loader)

    ``simsiam train`` builds it from a resolved :class:`TrainConfig` as a dict
    (``config``) and the steps of its epoch (``steps_per_epoch``).
    ``training_step`` returns the loss and the batch's z_std.
    """

    def __init__(self, config: dict[str, Any] | None = None, steps_per_epoch: int | None = None, **options: Any):
        super().__init__()
        if config is None:
            config = config_from_options(options).to_dict()
        elif options:
            raise TypeError("give either config (a resolved TrainConfig as a dict) or options by name, not both")
        self.save_hyperparameters({"config": config})
        self.cfg = TrainConfig.from_dict(config)
        self.steps_per_epoch = None if steps_per_epoch is None else max(1, steps_per_epoch)
        # The image size builds ViTs for it and checks every backbone at it; channels, mean and std are the data's.
        self.model = SimSiam(**dataclasses.asdict(self.cfg.model), image_size=self.cfg.image_size)
        mean, std = self.cfg.normalization()
        self.augment = Augment(
            self.cfg.image_size, channels=self.cfg.model.channels, mean=mean, std=std, **dataclasses.asdict(self.cfg.augment)
        )
        self._step_fn = self._compute  # replaced by its compiled version on fit start
        self._render = self.augment.apply  # likewise, with --compile-augment
        self._cudagraphs = False  # the compiled step replays CUDA graphs (--compile-mode reduce-overhead)
        self._views: torch.Tensor | None = None  # the last step's views (CPU), written over by the next

    def setup(self, stage: str) -> None:
        if self.cfg.channels_last:
            # Weights in the inputs' layout: channels_last inputs with NCHW weights make
            # cuDNN (and inductor) convert at every convolution. Here, before the strategy
            # wraps the model in DDP: DDP lays its gradient buckets out with the strides the
            # parameters have then (changed later, every step copies and warns that the
            # "grad strides do not match bucket view strides").
            self.model.to(memory_format=torch.channels_last)

    def on_fit_start(self) -> None:
        if self.cfg.compile:
            mode = None if self.cfg.compile_mode == "default" else self.cfg.compile_mode
            self._step_fn = torch.compile(self._compute, mode=mode)
            self._cudagraphs = self.device.type == "cuda" and self.cfg.compile_mode == "reduce-overhead"
        if self.cfg.compile_augment:
            self._render = torch.compile(self.augment.apply)

    # the step ---------------------------------------------------------------------

    def _compute(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p1, p2, z1, z2 = self.model(x1, x2)  # z1, z2 come back detached: the stop-gradient
        return simsiam_loss(p1, p2, z1, z2, kind=self.cfg.optim.loss), z_std(z1.detach())

    def training_step(self, batch: torch.Tensor | tuple[torch.Tensor, ...], batch_idx: int) -> dict[str, torch.Tensor]:
        if isinstance(batch, (tuple, list)):  # (images, labels) from a labeled dataset: the labels are not used
            batch = batch[0]
        if self._cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are no longer needed
        # Augmentation in float32 whatever the training precision (autocast would run the
        # blur's convolution in bf16), and outside autograd.
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            # Both views in one call: 2B samples, each with its own random parameters, at half
            # the kernel launches of two calls (launches add up when the GPU step is short).
            # The parameters are drawn eagerly; only the rendering may be compiled.
            both = torch.cat([batch, batch])
            params = self.augment.sample(both.shape[0], both.shape[2], both.shape[3], both.device)
            # On a CPU the views go into the last step's views, whose step is over: fresh
            # memory would cost its first touch (Augment.apply). Not kept past an epoch's
            # last step, so that the epoch-end work (the kNN) has that memory.
            reuse = self._views if self._views is not None and self._views.shape[0] == both.shape[0] else None
            views = self._render(both, params, out=reuse)
            trainer = self._trainer
            last = trainer is not None and batch_idx + 1 >= trainer.num_training_batches
            self._views = views if views.device.type == "cpu" and not self._cudagraphs and not last else None
            x1, x2 = views.chunk(2)  # (B, C, s, s) each
        if self.cfg.channels_last:
            x1 = x1.contiguous(memory_format=torch.channels_last)
            x2 = x2.contiguous(memory_format=torch.channels_last)
        loss, std = self._step_fn(x1, x2)
        self._watch(loss, batch.shape[0])
        return {"loss": loss, "z_std": std}

    def _watch(self, loss: torch.Tensor, batch_size: int) -> None:
        """Stop on a non-finite loss, before it reaches the weights; show the loss every log_every steps.

        Reading the loss is a host-device sync: on a GPU only every log_every steps.
        """
        step, every = self.global_step + 1, self.cfg.log_every
        if self.device.type == "cuda" and step % every:
            return
        value = loss.detach().float().item()
        if not math.isfinite(value):
            last = "" if self.device.type != "cuda" else f" (checked every {every} steps)"
            raise NonFiniteLossError(
                f"the loss became {value} at step {step}{last}, epoch {self.current_epoch + 1}; "
                f"lower the learning rate (--lr, now {self.cfg.optim.base_lr}) or add --warmup-epochs"
            )
        if step % every == 0:
            self.log("train/loss_step", value, prog_bar=True, on_step=True, on_epoch=False, batch_size=batch_size)

    # optimizer and schedule ----------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.cfg.optim
        predictor = list(self.model.predictor.parameters())
        predictor_ids = {id(p) for p in predictor}
        encoder = [p for p in self.model.parameters() if id(p) not in predictor_ids]
        groups = [{"params": encoder, "name": "encoder"}]
        if predictor:
            groups.append({"params": predictor, "name": "predictor"})
        fused = self.device.type == "cuda"
        optimizer = torch.optim.SGD(groups, lr=self.cfg.lr, momentum=o.momentum, weight_decay=o.weight_decay, fused=fused or None)
        if self.steps_per_epoch is not None:  # simsiam train: its epochs of known length
            per_epoch, total = self.steps_per_epoch, self.steps_per_epoch * self.cfg.epochs
        else:  # your Trainer: its steps, from its max_epochs (or max_steps) and its loader
            total = max(1, int(self.trainer.estimated_stepping_batches))
            per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        warmup = int(round(o.warmup_epochs * per_epoch))
        decayed = lambda step: lr_factor(step, total, warmup)
        fixed = lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
        lambdas = [decayed] + ([fixed if o.fixed_predictor_lr else decayed] if predictor else [])
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A checkpoint of the previous model layout resumes too (Lightning calls this
        # before it loads the weights).
        checkpoint["state_dict"] = rename_legacy_weights(checkpoint["state_dict"])


class SimSiamDataModule(L.LightningDataModule):
    """DATA decoded once into the image cache and served as uint8 batches, as ``simsiam train`` serves them.

    Where the images live is decided as for the command line (on the GPU when they
    fit, else pinned memory, else read from the disk cache in prefetched batches;
    ``data_on`` forces it), and under DDP each process trains on its own shard of
    every epoch. ``batch_size`` is the global batch, split over the processes, as
    ``--batch-size`` is. Any option of :class:`~simsiam.data.DataOptions` may be
    given by name (``channels``, ``cache_format``, ``strict``, ...)::

        data = SimSiamDataModule("path/to/images", batch_size=256, image_size=32)
        L.Trainer(max_epochs=10).fit(SimSiamModule(image_size=32), data)

    ``simsiam train`` hands it the images it has already decoded (``images``).
    The decoded set, with its labels, is :attr:`dataset` once set up.
    """

    def __init__(
        self,
        data: str | None = None,
        batch_size: int = 512,
        image_size: int | None = None,
        *,
        seed: int = 0,
        images: Any = None,
        **data_options: Any,
    ):
        super().__init__()
        from simsiam.data.folder import DataOptions

        self.data, self.batch_size, self.seed, self.images = data, batch_size, seed, images
        self.options = DataOptions(image_size=image_size, **data_options)
        self.dataset = None
        self.source = None

    def setup(self, stage: str) -> None:
        if self.images is None:  # every process decodes, or finds, the same cache entry (one builds it, the others wait)
            from simsiam.data.sources import load

            self.dataset = load(self.data, options=self.options)
            self.images = self.dataset.images

    def train_dataloader(self):
        from simsiam.data.batches import Batches, BatchSource, ShardedBatches
        from simsiam.train.callbacks import say

        t = self.trainer
        device = t.strategy.root_device
        if t.world_size > self.batch_size:
            raise ConfigError(f"batch_size: {self.batch_size} images cannot be split over {t.world_size} processes", key="batch_size")
        self.source = BatchSource.place(self.images, device, self.options.data_on, self.options.processes)
        say(t, self.source.describe())
        sampler = ShardedBatches(len(self.source), self.batch_size // t.world_size, t.global_rank, t.world_size, self.seed)
        return Batches(self.source, sampler, device)
