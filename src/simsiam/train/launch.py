"""Where a run's processes are: the GPU or the CPU, how many per node, who launched them.

One process per GPU (or one on a CPU) unless --devices says otherwise; under
torchrun or SLURM's srun the launcher started them, and Lightning joins them.
:func:`check_processes` refuses, before the run folder is touched, a run whose
processes disagree with the launcher's, a multi-node run that no launcher
started (it would wait for peers that never come), or a batch that does not
split over the processes; :func:`check_batch` a batch larger than the data.
The processes wait for each other at most :func:`ddp_timeout` seconds (the
``SIMSIAM_DDP_TIMEOUT`` environment variable, default 30 minutes), and
:func:`waited_error` says what they waited for.
:func:`describe_distributed` is the log line of a multi-process run.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import lightning as L
import torch

from simsiam import system
from simsiam.config.schema import TrainConfig
from simsiam.errors import ConfigError, RunError

LAUNCHERS = {"LightningEnvironment": "Lightning", "TorchElasticEnvironment": "torchrun", "SLURMEnvironment": "SLURM"}
DDP_TIMEOUT = "SIMSIAM_DDP_TIMEOUT"
DEFAULT_DDP_TIMEOUT_S = 1800.0
# Set by a launcher (torchrun, srun) or by hand on each node (Lightning's NODE_RANK): without any, no peer will come.
LAUNCH_VARIABLES = ("WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "SLURM_NTASKS")


def uses_gpu(cfg: TrainConfig) -> bool:
    """Whether the run trains on the GPU (:func:`simsiam.system.uses_gpu` of its --accelerator)."""
    return system.uses_gpu(cfg.accelerator)


def processes_per_node(cfg: TrainConfig) -> int:
    """Processes per node: --devices, or all GPUs (one process on a CPU)."""
    if isinstance(cfg.devices, int):
        return cfg.devices
    return max(1, torch.cuda.device_count()) if uses_gpu(cfg) else 1


def syncs_batchnorm(cfg: TrainConfig, world: int) -> bool:
    # torch's SyncBatchNorm refuses CPU tensors: on CPU every process keeps plain BN.
    return bool(cfg.sync_batchnorm and world > 1 and uses_gpu(cfg))


def launched_processes() -> tuple[str, int] | None:
    """(launcher, number of processes) when torchrun or SLURM's srun started this process; Lightning then joins them."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if TorchElasticEnvironment.detect():
        return "torchrun", int(os.environ["WORLD_SIZE"])
    if SLURMEnvironment.detect():
        return "SLURM", int(os.environ["SLURM_NTASKS"])
    return None


def describe_distributed(trainer: L.Trainer, cfg: TrainConfig, on_gpu: bool) -> str:
    """The log line of a multi-process run: processes, launcher, per-process batch, batch norm."""
    environment = type(trainer.strategy.cluster_environment).__name__
    if syncs_batchnorm(cfg, trainer.world_size):
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


def ddp_timeout() -> float:
    """Seconds the processes of a run wait for each other (to meet, and in every collective): $SIMSIAM_DDP_TIMEOUT, else 30 min."""
    text = os.environ.get(DDP_TIMEOUT)
    if text is None:
        return DEFAULT_DDP_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < 1e7:
        raise ConfigError(f"{DDP_TIMEOUT}: must be a number of seconds above 0, got {text!r}")
    return seconds


def ddp_strategy(world: int) -> Any:
    """Lightning's strategy for ``world`` processes: DDP whose waits end after :func:`ddp_timeout` seconds, or "auto" for one."""
    if world == 1:
        return "auto"
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(timeout=datetime.timedelta(seconds=ddp_timeout()))


def waited_error(e: Exception, cfg: TrainConfig, started: bool) -> RunError:
    """The one line for processes that did not all answer in time (torch's DistError): what was waited for, where, how long."""
    world = processes_per_node(cfg) * cfg.num_nodes
    where = f"{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{os.environ.get('MASTER_PORT', '?')}"
    what = "answer in a collective step" if started else f"meet at {where}"
    reason = " ".join(str(e).split())[:200]
    return RunError(
        f"--num-nodes {cfg.num_nodes} --devices {processes_per_node(cfg)}: waited {ddp_timeout():.0f} s for the {world} processes "
        f"of the run to {what} ({reason}); start every node's processes together (torchrun, srun), or set {DDP_TIMEOUT} to wait longer"
    )


def check_processes(cfg: TrainConfig) -> None:
    """RunError unless the processes are the launcher's, a launcher started a multi-node run, and the batch splits over them."""
    devices = processes_per_node(cfg)
    world = devices * cfg.num_nodes
    launched = launched_processes()
    if launched is not None and launched[1] != world:
        raise RunError(
            f"--devices {devices} --num-nodes {cfg.num_nodes}: that makes {world} process(es), but {launched[0]} started "
            f"{launched[1]}; set --devices to the processes per node and --num-nodes to the number of nodes"
        )
    if cfg.num_nodes > 1 and launched is None and not any(os.environ.get(name) for name in LAUNCH_VARIABLES):
        raise RunError(
            f"--num-nodes {cfg.num_nodes}: no launcher started this process (none of {', '.join(LAUNCH_VARIABLES)} is set), "
            "so the other nodes would never join; start the run on every node with torchrun or srun, or leave out --num-nodes"
        )
    if world > 1:
        ddp_timeout()  # a bad SIMSIAM_DDP_TIMEOUT is refused now, not after the data are read
    if cfg.batch_size % world:
        raise RunError(f"--batch-size: {cfg.batch_size} does not split evenly over {world} processes")


def check_batch(cfg: TrainConfig, n_train: int) -> None:
    """RunError unless the batch fits in the training images."""
    if cfg.batch_size > n_train:
        raise RunError(
            f"--batch-size: {cfg.batch_size} is larger than the {n_train} training images of "
            f"{cfg.data or 'the demo set'}; use --batch-size {max(2, n_train // 2)} or less"
        )
