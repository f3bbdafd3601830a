"""One training run, end to end: a RunFolder, the data, the Trainer, the summary.

``fit`` is what ``simsiam train`` calls. In order: it checks the processes,
claims the run folder (new, empty or a run's; see :meth:`RunFolder.claim`) and
locks it before reading any data, records DATA and --val (absolute, with a
fingerprint; checked on resume, below), loads the images, builds the
:class:`~simsiam.train.module.SimSiamModule`, the callbacks of :mod:`simsiam.train.callbacks`
and a Lightning Trainer (devices, precision, DDP, checkpoints, TensorBoard),
trains, and writes metrics.json, training.png and backbone.pt.

The data a run trains on are recorded in its run folder and checked on ``--resume``
(:func:`simsiam.run_folder.settle_data`). A run records DATA and --val as absolute paths (a resume from another working
directory finds the same files), each with a fingerprint taken from the listing
alone, without decoding: the number of files, their total bytes, and a hash of
their names (relative to DATA) and sizes. ``--resume`` continues on the data
recorded, and refuses in one line data that no longer match, saying what
changed. DATA (or --val) named again on ``--resume`` continues on the data as
they are now (also moved elsewhere, when its files are the same), and the log
line says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

import simsiam.data.sources as sources  # through the module: a test stubs sources.load to stop where DATA is read
from simsiam.checkpoint import check_training_state, config_of, read_checkpoint
from simsiam.config.layers import default_precision, load_yaml, resolve, resume_config, save_yaml
from simsiam.config.recipes import RECIPES
from simsiam.config.schema import TrainConfig
from simsiam.data.folder import DataOptions
from simsiam.data.sources import ImageSet, channel_stats
from simsiam.errors import CheckpointError, ConfigError, NonFiniteLossError, RunError, TrainingInterrupted
from simsiam.files import atomic_write, error_text, os_error_text, save_torch_atomic, write_json
from simsiam.model.backbones import load_weights, read_weights
from simsiam.run_folder import RunFolder, settle_data
from simsiam.settings import has_small_stem, small_stem
from simsiam.system import cpu_has_bf16_units
from simsiam.train.callbacks import EpochReport, ExactResume, FairShare, GracefulStop, OnlineKnn, ProgressBar, RankZeroRunFolder
from simsiam.train.launch import (
    LAUNCHERS,
    check_batch,
    check_processes,
    ddp_strategy,
    describe_distributed,
    launched_processes,
    processes_per_node,
    syncs_batchnorm,
    uses_gpu,
    waited_error,
)
from simsiam.train.module import SimSiamDataModule, SimSiamModule

__all__ = ["fit", "summary", "AtomicCheckpointIO", "CTRL_C"]
__all__ += ["LAUNCHERS", "launched_processes", "describe_distributed"]  # the processes of a run, from simsiam.train.launch

_DIST_ERRORS = (torch.distributed.DistError,) if torch.distributed.is_available() else ()
CTRL_C = "saving a checkpoint after this step, then stopping (Ctrl-C again: stop at once, without saving)"


def fit(
    cfg: TrainConfig,
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
    callbacks: list[L.Callback] | tuple[L.Callback, ...] = (),
) -> dict[str, Any]:
    """Train SimSiam as ``simsiam train`` does; returns the final figures (also in metrics.json).

    ``overrides`` are the options typed with ``resume`` ({dotted key: value});
    only the resumable ones may change a run. ``callbacks`` are Lightning
    callbacks of the caller's, run after simsiam's own.
    """
    started = time.perf_counter()
    # Under DDP this function runs in every process; until the Trainer exists only the
    # launcher's environment variables tell them apart. Rank 0 alone claims, locks and writes.
    rank0 = rank_zero_only.rank == 0
    if not resume:
        check_processes(cfg)  # flags only: a new run's folder is not touched for a run that cannot start
    run = RunFolder.choose(cfg.out, cfg.data, resume)
    try:
        if rank0:
            run.claim(create=not resume)  # before any data are read: a folder of other files, or in use, is refused
        run.expect(resume)
        given = cfg if resume else None
        cfg, resumed = _continue(run, cfg, overrides or {}) if resume else (cfg, None)
        finished = resumed is not None and resumed.epochs_done is not None and resumed.epochs_done >= cfg.epochs
        if finished and all(f.is_file() for f in (run.metrics_json, run.backbone, run.training_png)):
            return _finished(run, cfg, resumed.epochs_done)  # nothing to train, nothing changed
        # Finished but stopped before its results were written (killed at the very end): the run below trains no
        # step and writes them.
        if resume:
            check_processes(cfg)  # the run's own --devices and --num-nodes, unless typed again
        cfg, notes = settle_data(run, cfg, given, record=rank0)  # absolute paths; on resume, the data checked against the run's
        for note in notes:
            rank_zero_only(print)(note)
        L.seed_everything(cfg.seed, verbose=False)
        cfg, images = _load_images(dataclasses.replace(cfg, out=str(run.path)), run, progress and rank0)
        check_batch(cfg, len(images.train))
        start = None
        if cfg.init_weights is not None and resumed is None:  # a new run: its starting weights, and their hash in its config
            cfg = dataclasses.replace(cfg, init_weights=os.path.abspath(cfg.init_weights), init_weights_sha256=_sha256(cfg.init_weights))
            start = read_weights(cfg.init_weights)
        module = SimSiamModule(cfg.to_dict(), steps_per_epoch=len(images.train) // cfg.batch_size)
        if start is not None:
            said = load_weights(module.model.backbone, start, strict=not cfg.init_weights_nonstrict, where=cfg.init_weights)
            rank_zero_only(print)(f"init weights: {cfg.init_weights} (sha256 {cfg.init_weights_sha256[:16]}...): {said}")
            del start
        knn = OnlineKnn.of_config(images.bank, images.query, cfg) if images.bank is not None else None
        report, stop = EpochReport(run, cfg, knn), GracefulStop(run, cfg)
        own = [RankZeroRunFolder(run), *([knn] if knn else []), report, stop, ExactResume(cfg.seed), FairShare()]  # the order they run in
        trainer = _trainer(cfg, run, module, [*own, *callbacks], progress and rank0, with_best=knn is not None)
        if trainer.is_global_zero:
            run.prepare(fresh=resumed is None or resumed.checkpoint is None)
            save_yaml(cfg, run.config)
            _print_header(run, cfg, images, trainer, module, resumed)
        with _stop_on_ctrl_c(stop):  # a Ctrl-C after the last step lets the result files below finish
            data = SimSiamDataModule(
                images=images.train.images, batch_size=cfg.batch_size, seed=cfg.seed, data_on=cfg.data_on, processes=processes_per_node(cfg)
            )
            _train(trainer, module, data, run, resumed)
            knn_init = knn.init_top1 if knn else None
            result = summary(report.rows, knn_init, time.perf_counter() - started)
            result.update(run_folder=str(run.path), config=cfg.to_dict())
            if trainer.is_global_zero:
                _write_results(run, result, report.rows, module, knn_init)
            _finish_loggers(trainer)
        return result
    finally:
        run.release()


def _finish_loggers(trainer: L.Trainer) -> None:
    """End the experiment loggers' runs (W&B writes its summary then), so that a next fit() in this process starts its own."""
    from lightning.pytorch.loggers import WandbLogger  # Lightning's class: importing it does not import wandb

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and trainer.is_global_zero:
            logger.experiment.finish()


# -- the steps of fit() ------------------------------------------------------------------------


@dataclass
class _Resumed:
    """Where a resumed run continues from: a checkpoint and its step, or (None, 0) to start it over."""

    checkpoint: Path | None
    global_step: int
    epochs_done: int | None = None  # whole epochs the checkpoint has trained (None: not recorded)


def _continue(run: RunFolder, cfg: TrainConfig, given: dict[str, Any]) -> tuple[TrainConfig, _Resumed]:
    """The config of the run to resume, with the options that may change, and where it continues from."""
    if run.has_run:
        state = read_checkpoint(run.last_checkpoint)
        saved = config_of(run.last_checkpoint, state)  # weights that fit, before minutes of decoding images
        check_training_state(run.last_checkpoint, state)  # and an optimizer that does not make the next step NaN
        resumed = _Resumed(run.last_checkpoint, int(state.get("global_step", 0)), _epochs_done(state))
        del state  # Lightning reads the file again; do not hold two copies
    else:
        saved = TrainConfig.from_dict(load_yaml(run.config), where=str(run.config))
        resumed = _Resumed(None, 0)
    cfg = resume_config(saved, given, run.path)
    if resumed.checkpoint is None:
        rank_zero_only(print)(f"{run.path} has no checkpoint yet (the run stopped during its first epoch): starting it from the beginning")
    return dataclasses.replace(cfg, out=str(run.path)), resumed


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _epochs_done(state: dict[str, Any]) -> int | None:
    """Whole epochs a Lightning checkpoint has trained (its fit loop's processed epochs); None when it does not say."""
    try:
        done = state["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
    except (KeyError, TypeError):
        return None
    return done if isinstance(done, int) and done >= 0 else None


def _finished(run: RunFolder, cfg: TrainConfig, done: int) -> dict[str, Any]:
    """A resumed run that has trained all its epochs: one line that says so and how to train longer; its figures."""
    rank_zero_only(print)(
        f"the run in {run.path} has finished: it trained {done} of its {cfg.epochs} epochs; nothing changed. "
        f"To train it longer, resume with more epochs: --resume --epochs {max(done, cfg.epochs) + 10} (say)"
    )
    try:
        result = json.loads(run.metrics_json.read_text())
    except (OSError, ValueError):
        result = {}
    return {**(result if isinstance(result, dict) else {}), "already_finished": True, "epochs": done, "run_folder": str(run.path)}


@dataclass
class _Images:
    """The images of a run: those it trains on, and the online kNN's bank and queries (None: no kNN)."""

    data: ImageSet  # DATA as decoded
    train: ImageSet
    bank: ImageSet | None
    query: ImageSet | None
    note: str  # the log line about the online kNN
    stem: str = ""  # which stem the backbone got and why


def _load_images(cfg: TrainConfig, run: RunFolder, progress: bool) -> tuple[TrainConfig, _Images]:
    """DATA (and --val) decoded, and the config resolved for their size and the device."""
    on_gpu = uses_gpu(cfg)
    if on_gpu:
        torch.set_float32_matmul_precision("high")  # TF32 for whatever runs outside bf16 autocast
    elif cfg.data_on == "gpu":
        raise ConfigError("gpu asked for, but training runs on the CPU (no CUDA GPU, or --accelerator cpu)", key="data_on")
    options = DataOptions(
        image_size=cfg.cache_size or cfg.image_size,
        channels=cfg.model.channels,
        strict=cfg.strict,
        progress=progress,
        decode_device="cuda" if on_gpu else None,
        exclude=(str(run.path),),
        data_on=cfg.data_on,
        cache_format=cfg.cache_format,
        processes=processes_per_node(cfg),  # the copies of the images on this machine, for the memory rule
    )
    dataset = sources.load(cfg.data, options=options)
    # Not RGB: the views, the kNN and the exports are normalised with the data's own per-channel mean and std.
    stem = _stem_note(cfg, cfg.image_size or dataset.image_size)
    cfg = resolve(
        cfg,
        cfg.image_size or dataset.image_size,
        on_gpu,
        channels=dataset.channels,
        statistics=lambda: channel_stats(dataset.images),
    )
    cfg = dataclasses.replace(cfg, cache_size=dataset.image_size)  # the views are random crops of images this size
    options = dataclasses.replace(options, image_size=cfg.cache_size, channels=cfg.model.channels)
    val = sources.load(cfg.val, options=options) if cfg.val is not None else None
    return cfg, dataclasses.replace(_knn_sets(cfg, dataset, val), stem=stem)


def _stem_note(cfg: TrainConfig, image_size: int) -> str:
    """Which stem the backbone gets and why, for the header (the rule: simsiam.settings.small_stem)."""
    small, why = small_stem(cfg.model.small_images, image_size, cfg.model.backbone)
    from_recipe = RECIPES.get(cfg.recipe or "", {}).get("model", {}).get("small_images")
    if cfg.model.small_images is not None and from_recipe == cfg.model.small_images:
        why = f"the {cfg.recipe} recipe's"
    if small:
        return f"the small-image stem (3x3 stride-1 conv1, no max-pool): {why}"
    if has_small_stem(cfg.model.backbone):
        return f"the ImageNet stem (7x7 stride-2 conv1, max-pool): {why}"
    return f"{cfg.model.backbone}'s own: {why}"


def _knn_sets(cfg: TrainConfig, dataset: ImageSet, val: ImageSet | None) -> _Images:
    """The online kNN's images: --val against DATA, or a held-out part of labeled DATA against the rest, or none."""
    if val is not None:
        if val.labels is None or dataset.labels is None:
            raise RunError(f"--val: {cfg.val} and DATA both need class subfolders (labels) for the online kNN")
        if val.classes != dataset.classes:
            raise RunError(f"--val: {cfg.val} has classes {val.classes}, DATA has {dataset.classes}")
        note = f"online kNN: {len(val)} images of {cfg.val} classified against the {len(dataset)} training images"
        return _Images(dataset, dataset, dataset, val, note)
    off = lambda why: _Images(dataset, dataset, None, None, f"online kNN: off{why}")
    if dataset.labels is None:
        return off(" (DATA has no class subfolders)")
    if len(dataset.classes) < 2:
        return off(f" (DATA has the one class {dataset.classes[0]!r}; an accuracy needs two or more)")
    if cfg.held_out == 0 or not cfg.knn_every:
        return off("")
    train, query = dataset.split(cfg.held_out, seed=cfg.seed)
    if len(query) == 0:  # every class too small to give up a single image
        return off(f" (no class has enough images to hold out {cfg.held_out:.0%} of them; see --held-out)")
    note = (
        f"online kNN: holding out {len(query)} labeled images ({cfg.held_out:.0%}) as queries against the "
        f"{len(train)} training images; SimSiam trains on those {len(train)} only"
    )
    return _Images(dataset, train, train, query, note)


def loggers(cfg: TrainConfig, run: RunFolder) -> list[Any]:
    """Lightning's loggers named by --logger, each set up from --logger-option KEY=VALUE; every one gets the same metrics."""
    settings = dict(item.partition("=")[::2] for item in cfg.logger_option)
    made: list[Any] = []
    for name in dict.fromkeys(cfg.logger):  # each once, in the order given
        if name == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            made.append(TensorBoardLogger(save_dir=str(run.path), name="", version=run.tensorboard.name, default_hp_metric=False))
        elif name == "csv":
            from lightning.pytorch.loggers import CSVLogger

            made.append(CSVLogger(save_dir=str(run.path), name="", version="csv"))  # <run>/csv/metrics.csv
        elif name == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            made.append(WandbLogger(project=settings.get("wandb.project", "simsiam"), name=settings.get("wandb.name", run.path.name),
                                    entity=settings.get("wandb.entity"), save_dir=str(run.path)))  # fmt: skip
        elif name == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger

            uri = settings.get("mlflow.tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
            if uri is None:  # our default: a file store in the run folder, which MLflow 3 wants opted into
                uri = (run.path / "mlruns").resolve().as_uri()
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            made.append(MLFlowLogger(experiment_name=settings.get("mlflow.experiment", "simsiam"), tracking_uri=uri,
                                     run_name=settings.get("mlflow.run_name", run.path.name)))  # fmt: skip
    return made


def _trainer(
    cfg: TrainConfig, run: RunFolder, module: SimSiamModule, callbacks: list[L.Callback], progress: bool, with_best: bool
) -> L.Trainer:
    """The Trainer: devices, precision, DDP, the two checkpoints, TensorBoard, the progress bar."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    # last.ckpt every --checkpoint-every epochs (default 1), so that a kill loses that
    # many epochs at most. Not save_last=True: with save_top_k=0 Lightning writes "last"
    # only when training ends (a last checkpoint follows a top-k save); a monitor-less
    # top-1 named "last" is written every every_n_epochs. No version counter: the files
    # are overwritten, never joined by a last-v1.ckpt.
    def checkpoint(path: Path, **options: Any) -> ModelCheckpoint:
        return ModelCheckpoint(dirpath=path.parent, filename=path.stem, save_top_k=1, enable_version_counter=False, **options)

    checkpoints = [checkpoint(run.last_checkpoint, every_n_epochs=cfg.checkpoint_every)]
    if with_best:
        checkpoints.append(checkpoint(run.best_checkpoint, monitor="knn_top1", mode="max"))
    on_gpu, devices = uses_gpu(cfg), processes_per_node(cfg)
    world = devices * cfg.num_nodes
    try:
        made_loggers = loggers(cfg, run)
    except Exception as e:  # a tracking server that refuses, a project name W&B rejects: one line, before training
        raise RunError(f"--logger: {' / '.join(cfg.logger)} could not start ({error_text(e, kind=True)})") from None
    try:
        return L.Trainer(
            max_epochs=cfg.epochs,
            accelerator="gpu" if on_gpu else "cpu",
            devices=devices,
            num_nodes=cfg.num_nodes,
            strategy=ddp_strategy(world),  # its waits for the other processes end, with a line saying what for
            sync_batchnorm=syncs_batchnorm(cfg, world),
            precision=cfg.precision,
            logger=made_loggers,
            callbacks=[*callbacks, *checkpoints, *([ProgressBar(refresh_rate=10)] if progress else [])],
            plugins=[AtomicCheckpointIO()],  # last.ckpt is always whole: a kill mid-save leaves the previous one
            enable_progress_bar=progress,
            enable_model_summary=False,
            log_every_n_steps=min(cfg.log_every, module.steps_per_epoch),
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
            benchmark=on_gpu,
            default_root_dir=str(run.path),
        )
    except MisconfigurationException as e:  # e.g. more devices than the machine has, or a launcher that disagrees
        raise RunError(f"--devices {devices} --num-nodes {cfg.num_nodes}: {e}") from None


def _print_header(
    run: RunFolder, cfg: TrainConfig, images: _Images, trainer: L.Trainer, module: SimSiamModule, resumed: _Resumed | None
) -> None:
    """What the run is about to do, before the first step (rank 0)."""
    data, on_gpu, world = images.data, uses_gpu(cfg), trainer.world_size
    labels = f", {len(data.classes)} classes" if data.labels is not None else ", unlabeled"
    n_params = sum(p.numel() for p in module.model.parameters())
    m = cfg.model
    print(f"run folder: {run.path}")
    channels = f", {data.channels} channel{'s' if data.channels > 1 else ''}" if data.channels != 3 else ""
    print(f"data: {len(data)} images of {cfg.data or 'the bundled demo set'} at {cfg.image_size}x{cfg.image_size}{channels}{labels}")
    print(images.note)
    print(
        f"model: {m.backbone}, {m.proj_layers}-layer projector to {m.proj_dim}, "
        f"predictor hidden {m.pred_hidden_dim}, {n_params / 1e6:.1f}M parameters"
    )
    print(f"stem: {images.stem}")
    print(f"backbone: {module.model.backbone_info.description}")
    if cfg.mean is not None:
        mean, std = (", ".join(f"{v:.3f}" for v in values) for values in cfg.normalization())
        print(f"normalisation: per-channel mean [{mean}], std [{std}] (config.yaml: mean, std)")
    for note in module.augment.notes:
        print(f"views: {note}")
    print(
        f"training: {cfg.epochs} epochs, batch {cfg.batch_size} over {world} process(es) ({cfg.batch_size // world} each), "
        f"lr {cfg.lr:.4g}, {cfg.precision} on {'GPU' if on_gpu else 'CPU'}{_precision_note(cfg, on_gpu)}"
        + (", compiled" if cfg.compile else "")
    )
    if world > 1:
        print(describe_distributed(trainer, cfg, on_gpu))
    if resumed is not None and resumed.checkpoint is not None:
        steps = module.steps_per_epoch
        epoch, done = divmod(resumed.global_step, steps)
        if epoch >= cfg.epochs:
            print(f"resuming from {resumed.checkpoint}: all {cfg.epochs} epochs are trained; writing the run's results")
        else:
            print(f"resuming from {resumed.checkpoint} (epoch {epoch + 1} of {cfg.epochs}, {done} of its {steps} steps done)")


def _precision_note(cfg: TrainConfig, on_gpu: bool) -> str:
    """Why this precision, when it is the default (see simsiam.config.layers.default_precision)."""
    if on_gpu or cfg.precision != default_precision(on_gpu):
        return ""
    units = "this CPU has bf16 matrix units (AMX), but " if cpu_has_bf16_units() else ""
    return f" ({units}bf16 cost accuracy on CPUs, same speed with AMX: --precision bf16-mixed asks for it)"


def _train(trainer: L.Trainer, module: SimSiamModule, images: L.LightningDataModule, run: RunFolder, resumed: _Resumed | None) -> None:
    """trainer.fit, with its failures turned into one line that says what is kept and how to continue."""
    ckpt = str(resumed.checkpoint) if resumed is not None and resumed.checkpoint is not None else None
    try:
        trainer.fit(module, datamodule=images, ckpt_path=ckpt)
        if trainer.current_epoch % module.cfg.checkpoint_every:  # the last epochs fell between two saves
            trainer.save_checkpoint(run.last_checkpoint)
    except NonFiniteLossError as e:
        raise NonFiniteLossError(f"{e}; {run.kept()}") from None
    except CheckpointError as e:
        raise CheckpointError(f"{e}; once that is fixed, continue with: {run.resume_command()}") from None
    except OSError as e:  # a full disk or a lost folder while writing metrics or logs
        where = f"{e.filename}: " if e.filename else ""
        raise RunError(f"{where}{os_error_text(e)}; {run.kept()}; once that is fixed, continue with: {run.resume_command()}") from None
    except _DIST_ERRORS as e:  # processes that did not all come, or stopped answering
        raise waited_error(e, module.cfg, started=trainer.global_step > 0) from None
    except SystemExit:
        # Lightning's answer to a KeyboardInterrupt (a second Ctrl-C): stopped at once, nothing new saved.
        raise TrainingInterrupted(f"interrupted at once, without saving; {run.kept()}; continue with: {run.resume_command()}") from None


def _write_results(
    run: RunFolder, result: dict[str, Any], rows: list[dict[str, Any]], module: SimSiamModule, knn_init: float | None
) -> None:
    """metrics.json, training.png and backbone.pt (rank 0)."""
    from simsiam.explore import plot_training

    write_json(run.metrics_json, result)
    if rows:
        with atomic_write(run.training_png) as fh:  # matplotlib writes PNG to a file object
            plot_training(rows, fh, feature_dim=module.model.out_dim, knn_init=knn_init)
    save_torch_atomic(module.model.backbone.state_dict(), run.backbone)


def summary(rows: list[dict[str, Any]], knn_init: float | None, wall_seconds: float) -> dict[str, Any]:
    """The final figures of a run (metrics.json) from its epoch rows."""
    knn = [r["knn_top1"] for r in rows if r.get("knn_top1") is not None]
    last = rows[-1] if rows else {}
    figures = {
        "epochs": len(rows),
        "final_loss": last.get("loss"),
        "final_z_std": last.get("z_std"),
        "final_collapse": last.get("collapse"),
        "knn_top1": knn[-1] if knn else None,
        "knn_top1_max": max(knn) if knn else None,
        "knn_top1_random_init": knn_init,
        "mean_images_per_s": sum(r["images_per_s"] for r in rows) / len(rows) if rows else None,
        "wall_seconds": wall_seconds,
    }
    # Six significant digits: the float32 figures carry noise past that (0.3799999952316284).
    return {k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in figures.items()}


# -- pieces ----------------------------------------------------------------------------------


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's TorchCheckpointIO with an atomic, fsync'ed write to local paths (:func:`simsiam.files.save_torch_atomic`).

    It reads with ``weights_only=True`` (nothing in a checkpoint runs code), after
    :func:`simsiam.checkpoint.read_checkpoint` has checked the same file.

    >>> trainer = L.Trainer(plugins=[AtomicCheckpointIO()], logger=False, enable_progress_bar=False)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage: fsspec's own transaction is the atomic write there
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        had_previous = path.exists()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_torch_atomic(checkpoint, path)
        except OSError as e:
            kept = "the previous checkpoint there is kept" if had_previous else "no checkpoint was written"
            raise CheckpointError(f"{path}: cannot save the checkpoint ({os_error_text(e)}); {kept}") from e

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Lightning's read of the file --resume continues from: tensors and plain values only, whatever torch's default."""
        options = {} if map_location is None else {"map_location": map_location}  # else Lightning's own default
        return super().load_checkpoint(path, weights_only=True, **options)


@contextlib.contextmanager
def _stop_on_ctrl_c(stop: GracefulStop) -> Iterator[None]:
    """While training, a first Ctrl-C asks to save and stop after the current step; a second stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers live in the main thread only; Ctrl-C keeps its plain meaning
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if not stop.request():
            raise KeyboardInterrupt
        if rank_zero_only.rank == 0:
            print(f"\nCtrl-C: {CTRL_C}", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)  # also undoes Lightning's SIG_IGN after a KeyboardInterrupt
