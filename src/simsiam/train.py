"""One training run, end to end: the run folder, resuming, the Trainer and the final figures.

``fit`` is what ``simsiam train`` calls: it finds (or continues) the run folder,
loads the images, builds the :class:`~simsiam.engine.SimSiamModule` and a
Lightning Trainer (devices, precision, DDP, checkpoints, TensorBoard), trains,
and writes metrics.json, training.png and backbone.pt. The step itself lives in
engine.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities import rank_zero_only

from .io import atomic_write, remove_partial_files
from .checkpoint import AtomicCheckpointIO, CheckpointError, check_weights_fit, read_checkpoint, save_atomic
from .config import TrainConfig
from .engine import NonFiniteLossError, SimSiamModule, TrainingInterrupted, build_model, resume_command


def summary(module: SimSiamModule, wall_seconds: float) -> dict[str, Any]:
    rows = module.rows
    knn = [r["knn_top1"] for r in rows if r.get("knn_top1") is not None]
    last = rows[-1] if rows else {}
    return {
        "epochs": len(rows),
        "final_loss": last.get("loss"),
        "final_z_std": last.get("z_std"),
        "final_collapse": last.get("collapse"),
        "knn_top1": knn[-1] if knn else None,
        "knn_top1_max": max(knn) if knn else None,
        "knn_top1_random_init": module.knn_init,
        "mean_images_per_s": sum(r["images_per_s"] for r in rows) / len(rows) if rows else None,
        "wall_seconds": wall_seconds,
    }


# -- one training run, end to end ------------------------------------------------------------

# Options a resumed run may change; everything else comes from the run's own config.
RESUMABLE_OVERRIDES = (
    "epochs", "accelerator", "devices", "num_nodes", "compile", "compile_mode", "compile_augment", "log_every", "knn_every",
    "precision", "strict", "checkpoint_every",
)  # fmt: skip


class RunError(ValueError):
    """A run folder or data problem; the message names the path or option at fault."""


def default_out(data: str | None) -> Path:
    return Path("runs") / ("demo" if data is None else (Path(data).resolve().name or "data"))


def find_run_folder(cfg: TrainConfig, resume: bool) -> Path:
    """The run folder: --out as given, or runs/<data name>[-N] (a new one, or the latest to resume)."""
    if cfg.out is not None:
        out = Path(cfg.out)
        has_run = (out / "checkpoints" / "last.ckpt").exists()
        # A run killed before its first checkpoint left only its config: --resume starts it over.
        if resume and not has_run and not (out / "config.yaml").is_file():
            raise RunError(f"--resume: {out} holds no checkpoints/last.ckpt to resume from")
        if not resume and has_run:
            raise RunError(f"--out: {out} already holds a run; pass --resume to continue it, or choose another --out")
        return out
    base = default_out(cfg.data)
    candidates = [base] + [base.with_name(f"{base.name}-{i}") for i in range(2, 1000)]
    existing = [c for c in candidates if (c / "checkpoints" / "last.ckpt").exists() or (resume and c.exists())]
    if resume:
        runs = [c for c in existing if (c / "checkpoints" / "last.ckpt").exists()]
        if not runs:
            raise RunError(f"--resume: no run with checkpoints/last.ckpt under {base.parent}/ for this data; pass --out")
        return runs[-1]
    return next(c for c in candidates if not c.exists() or not any(c.iterdir()))


LAUNCHERS = {"LightningEnvironment": "Lightning", "TorchElasticEnvironment": "torchrun", "SLURMEnvironment": "SLURM"}


def launched_processes() -> tuple[str, int] | None:
    """(launcher, number of processes) when torchrun or SLURM's srun started this process; Lightning then joins them."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if TorchElasticEnvironment.detect():
        return "torchrun", int(os.environ["WORLD_SIZE"])
    if SLURMEnvironment.detect():
        return "SLURM", int(os.environ["SLURM_NTASKS"])
    return None


def describe_distributed(trainer: L.Trainer, cfg: TrainConfig, sync_bn: bool, on_gpu: bool) -> str:
    """The log line of a multi-process run: processes, launcher, per-process batch, batch norm."""
    environment = type(trainer.strategy.cluster_environment).__name__
    if sync_bn:
        bn = "synchronized across processes (SyncBatchNorm)"
    elif not cfg.sync_batchnorm:
        bn = "per process, not synchronized (--no-sync-batchnorm)"
    else:
        bn = "per process, not synchronized (torch's SyncBatchNorm needs GPUs; on CPU every process keeps plain BN)"
    nodes, devices = trainer.num_nodes, trainer.num_devices
    per_node = f"{devices} GPU{'s' * (devices > 1)}" if on_gpu else f"{devices} CPU process{'es' * (devices > 1)}"
    return (
        f"distributed: DDP over {trainer.world_size} processes ({nodes} node{'s' * (nodes > 1)} x {per_node}), "
        f"launched by {LAUNCHERS.get(environment, environment)}; batch {cfg.batch_size // trainer.world_size} per process; "
        f"batch norm {bn}"
    )


def _check_resume_overrides(saved: TrainConfig, overrides: dict[str, Any], out: Path) -> None:
    """A resumed run keeps its settings: options given again must agree with them, except RESUMABLE_OVERRIDES."""
    from .cli import TRAIN_FLAGS

    flags = {key: flag for flag, (key, _) in TRAIN_FLAGS.items()}
    values = saved.to_dict()
    for key, given in overrides.items():
        if key in RESUMABLE_OVERRIDES or key in ("out", "data"):
            continue
        had: Any = values
        for part in key.split("."):
            had = had.get(part) if isinstance(had, dict) else None
        if had != given and not (isinstance(had, list) and list(given) == had):
            what = "the checkpoint is of another model: " if key.startswith("model.") else ""
            may = ", ".join(flags.get(k, k) for k in RESUMABLE_OVERRIDES)
            raise RunError(
                f"{flags.get(key, key)}: {what}the run in {out} has {key} = {had!r}, not {given!r}; --resume continues a run "
                f"with its own settings and may change only {may}; to train with another {key}, start a new run with another --out"
            )


def _check_weights_fit_config(path: Path, weights: dict[str, torch.Tensor], cfg: TrainConfig) -> None:
    try:
        with torch.device("meta"):  # shapes only: no memory, no time
            model = build_model(cfg)
    except Exception as e:
        raise CheckpointError(f"{path}: its config does not describe a model this simsiam can build ({type(e).__name__}: {e})") from None
    check_weights_fit(path, weights, {f"model.{k}": v for k, v in model.state_dict().items()})


def fit(cfg: TrainConfig, resume: bool = False, overrides: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Train SimSiam as ``simsiam train`` does; returns the final figures (also in metrics.json).

    ``overrides`` are the options given explicitly with ``resume`` (only
    RESUMABLE_OVERRIDES may change a run).
    """
    from . import data as data_module
    from .config import load_yaml, resolve, save_yaml
    from .explore import plot_training

    started = time.perf_counter()
    # Under DDP this function runs in every process. Until the Trainer exists only the
    # launcher's environment variables (RANK, LOCAL_RANK, SLURM_PROCID) tell them apart;
    # nothing is written before then.
    first = rank_zero_only.rank == 0
    progress = progress and first
    out = find_run_folder(cfg, resume)
    ckpt = out / "checkpoints" / "last.ckpt"
    resume_from, epochs_done = None, 0
    if resume:
        if ckpt.exists():
            saved_state = read_checkpoint(ckpt)
            saved = TrainConfig.from_dict(saved_state["hyper_parameters"]["config"])
            _check_resume_overrides(saved, overrides or {}, out)
            _check_weights_fit_config(ckpt, saved_state["state_dict"], saved)  # before minutes of decoding images
            resume_from, epochs_done = ckpt, len(saved_state.get("simsiam", {}).get("rows", []))
            del saved_state  # Lightning reads the file again; do not hold two copies
        else:
            saved = TrainConfig.from_dict(load_yaml(out / "config.yaml"), where=str(out / "config.yaml"))
            rank_zero_only(print)(f"{out} has no checkpoint yet (the run stopped during its first epoch): starting it from the beginning")
            _check_resume_overrides(saved, overrides or {}, out)
        if cfg.data is not None and (saved.data is None or Path(cfg.data).resolve() != Path(saved.data).resolve()):
            raise RunError(
                f"DATA: the run in {out} trains on {saved.data or 'the demo set'}, not {cfg.data}; --resume continues a run "
                f"on its own data (leave DATA out), or start a new run with another --out"
            )
        changes = {k: v for k, v in (overrides or {}).items() if k in RESUMABLE_OVERRIDES}
        cfg = TrainConfig.from_dict(changes, base=saved)
        cfg.out = str(out)
    L.seed_everything(cfg.seed, verbose=False)

    on_gpu = cfg.accelerator != "cpu" and torch.cuda.is_available()
    if on_gpu:
        torch.set_float32_matmul_precision("high")  # TF32 for whatever runs outside bf16 autocast
    decode_device = "cuda" if on_gpu else None
    dataset = data_module.load(cfg.data, cfg.image_size, strict=cfg.strict, progress=progress, decode_device=decode_device)
    cfg = resolve(cfg, dataset.image_size, on_gpu)
    cfg.out = str(out)

    train_set, bank, query = dataset, None, None
    notes = []
    if cfg.val is not None:
        query = data_module.load(cfg.val, cfg.image_size, strict=cfg.strict, progress=progress, decode_device=decode_device)
        if query.labels is None or dataset.labels is None:
            raise RunError(f"--val: {cfg.val} and DATA both need class subfolders (labels) for the online kNN")
        if query.classes != dataset.classes:
            raise RunError(f"--val: {cfg.val} has classes {query.classes}, DATA has {dataset.classes}")
        bank = dataset
        notes.append(f"online kNN: {len(query)} images of {cfg.val} classified against the {len(bank)} training images")
    elif dataset.labels is not None and len(dataset.classes) < 2:
        notes.append(f"online kNN: off (DATA has the one class {dataset.classes[0]!r}; an accuracy needs two or more)")
    elif dataset.labels is not None and cfg.held_out > 0 and cfg.knn_every:
        train_set, query = dataset.split(cfg.held_out, seed=cfg.seed)
        bank = train_set
        notes.append(
            f"online kNN: holding out {len(query)} labeled images ({cfg.held_out:.0%}) as queries against the "
            f"{len(train_set)} training images; SimSiam trains on those {len(train_set)} only"
        )
        if len(query) == 0:  # every class too small to give up a single image
            train_set, bank, query = dataset, None, None
            notes[-1] = f"online kNN: off (no class has enough images to hold out {cfg.held_out:.0%} of them; see --held-out)"
    else:
        notes.append("online kNN: off (DATA has no class subfolders)" if dataset.labels is None else "online kNN: off")

    devices = cfg.devices if isinstance(cfg.devices, int) else (max(1, torch.cuda.device_count()) if on_gpu else 1)
    world = devices * cfg.num_nodes
    launched = launched_processes()
    if launched is not None and launched[1] != world:
        raise RunError(
            f"--devices {devices} --num-nodes {cfg.num_nodes}: that makes {world} process(es), but {launched[0]} started "
            f"{launched[1]}; set --devices to the processes per node and --num-nodes to the number of nodes"
        )
    if cfg.batch_size % world:
        raise RunError(f"--batch-size: {cfg.batch_size} does not split evenly over {world} processes")
    if cfg.batch_size > len(train_set):
        raise RunError(
            f"--batch-size: {cfg.batch_size} is larger than the {len(train_set)} training images of "
            f"{cfg.data or 'the demo set'}; use --batch-size {max(2, len(train_set) // 2)} or less"
        )

    module = SimSiamModule(cfg.to_dict())
    module.attach_data(train_set, bank, query)
    module.run_dir = out

    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from lightning.pytorch.callbacks import TQDMProgressBar

    # last.ckpt every --checkpoint-every epochs (default 1), so that a kill loses that
    # many epochs at most. Not save_last=True: with save_top_k=0 Lightning writes "last"
    # only when training ends (a last checkpoint follows a top-k save); a monitor-less
    # top-1 named "last" is written every every_n_epochs.
    last = ModelCheckpoint(
        dirpath=out / "checkpoints", filename="last", save_top_k=1, every_n_epochs=cfg.checkpoint_every, enable_version_counter=False
    )
    class ProgressBar(TQDMProgressBar):
        def get_metrics(self, trainer, module):  # the logger's "v_num" means nothing to a simsiam user
            return {k: v for k, v in super().get_metrics(trainer, module).items() if k != "v_num"}

    callbacks: list[L.Callback] = [last] + ([ProgressBar(refresh_rate=10)] if progress else [])
    if bank is not None:
        callbacks.append(ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor="knn_top1", mode="max", save_top_k=1, enable_version_counter=False))
    # torch's SyncBatchNorm refuses CPU tensors: on CPU every process keeps plain BN.
    sync_bn = bool(cfg.sync_batchnorm and world > 1 and on_gpu)
    try:
        trainer = L.Trainer(
            max_epochs=cfg.epochs,
            accelerator="gpu" if on_gpu else "cpu",
            devices=devices,
            num_nodes=cfg.num_nodes,
            strategy="ddp" if world > 1 else "auto",
            sync_batchnorm=sync_bn,
            precision=cfg.precision,
            logger=TensorBoardLogger(save_dir=str(out), name="", version="tensorboard", default_hp_metric=False),
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],  # last.ckpt is always whole: a kill mid-save leaves the previous one
            enable_progress_bar=progress,
            enable_model_summary=False,
            log_every_n_steps=min(cfg.log_every, max(1, len(train_set) // cfg.batch_size)),
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
            benchmark=on_gpu,
            default_root_dir=str(out),
        )
    except MisconfigurationException as e:  # e.g. more devices than the machine has, or a launcher that disagrees
        raise RunError(f"--devices {devices} --num-nodes {cfg.num_nodes}: {e}") from None
    # Everything is checked: only now is the run folder written to, by rank 0 only
    # (Lightning's checkpoints and logger do the same).
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        for folder in (out, out / "checkpoints"):
            remove_partial_files(folder)  # left by a process killed while writing
        if resume_from is None:
            for stale in ("metrics.csv", "metrics.json"):
                (out / stale).unlink(missing_ok=True)
        save_yaml(cfg, out / "config.yaml")
        n_params = sum(p.numel() for p in module.model.parameters())
        lr = cfg.optim.base_lr * cfg.batch_size / 256
        print(f"run folder: {out}")
        print(
            f"data: {len(dataset)} images of {cfg.data or 'the bundled demo set'} at {cfg.image_size}x{cfg.image_size}"
            + (f", {len(dataset.classes)} classes" if dataset.labels is not None else ", unlabeled")
        )
        for note in notes:
            print(note)
        print(
            f"model: {cfg.model.backbone}{' (small-image stem)' if cfg.model.small_images else ''}, "
            f"{cfg.model.proj_layers}-layer projector to {cfg.model.proj_dim}, predictor hidden {cfg.model.pred_hidden_dim}, "
            f"{n_params / 1e6:.1f}M parameters"
        )
        print(
            f"training: {cfg.epochs} epochs, batch {cfg.batch_size} over {trainer.world_size} process(es) "
            f"({cfg.batch_size // trainer.world_size} each), lr {lr:.4g}, {cfg.precision} on {'GPU' if on_gpu else 'CPU'}"
            + (", compiled" if cfg.compile else "")
        )
        if world > 1:
            print(describe_distributed(trainer, cfg, sync_bn, on_gpu))
        if resume_from is not None:
            print(f"resuming from {resume_from} ({epochs_done} of {cfg.epochs} epochs done)")

    with _stop_on_ctrl_c(module):  # a Ctrl-C after the last step lets the result files below finish
        try:
            trainer.fit(module, ckpt_path=str(resume_from) if resume_from else None)
            if trainer.current_epoch % cfg.checkpoint_every:  # the last epochs fell between two saves
                trainer.save_checkpoint(module.run_dir / "checkpoints" / "last.ckpt")
        except NonFiniteLossError as e:
            raise NonFiniteLossError(f"{e}; {_kept(module.run_dir)}") from None
        except CheckpointError as e:
            raise CheckpointError(f"{e}; once that is fixed, continue with: {resume_command(module.run_dir)}") from None
        except OSError as e:  # a full disk or a lost folder while writing metrics or logs
            where = f"{e.filename}: " if e.filename else ""
            raise RunError(
                f"{where}{e.strerror or e}; {_kept(module.run_dir)}; once that is fixed, continue with: {resume_command(module.run_dir)}"
            ) from None
        except SystemExit:
            # Lightning's answer to a KeyboardInterrupt (a second Ctrl-C): stopped at once, nothing new saved.
            raise TrainingInterrupted(
                f"interrupted at once, without saving; {_kept(module.run_dir)}; continue with: {resume_command(module.run_dir)}"
            ) from None

        out = module.run_dir  # rank 0's folder, shared with every process in setup()
        result = summary(module, time.perf_counter() - started)
        result.update(run_folder=str(out), config=cfg.to_dict())
        if trainer.is_global_zero:
            with atomic_write(out / "metrics.json", "w") as fh:
                json.dump(result, fh, indent=2)
            if module.rows:
                with atomic_write(out / "training.png") as fh:  # matplotlib writes PNG to a file object
                    plot_training(module.rows, fh, feature_dim=module.model.out_dim, knn_init=module.knn_init)
            save_atomic(module.model.backbone.state_dict(), out / "backbone.pt")
    return result


def _kept(out: Path) -> str:
    ckpt = out / "checkpoints" / "last.ckpt"
    return f"the last complete checkpoint is kept: {ckpt}" if ckpt.exists() else "no checkpoint had been saved yet"


@contextlib.contextmanager
def _stop_on_ctrl_c(module: SimSiamModule) -> Iterator[None]:
    """While training, a first Ctrl-C asks the module to save and stop after the current step; a second stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers live in the main thread only; Ctrl-C keeps its plain meaning
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if module.stop_requested:
            raise KeyboardInterrupt
        module.stop_requested = True
        if rank_zero_only.rank == 0:
            print("\nCtrl-C: saving a checkpoint after this step, then stopping (Ctrl-C again: stop at once, without saving)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)  # also undoes Lightning's SIG_IGN after a KeyboardInterrupt
