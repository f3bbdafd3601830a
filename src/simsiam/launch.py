"""Where a run's processes are: the GPU or the CPU, how many per node, who launched them.

One process per GPU (or one on a CPU) unless --devices says otherwise; under
torchrun or SLURM's srun the launcher started them, and Lightning joins them.
:func:`check_processes` refuses a run whose processes disagree with the launcher's
or whose batch does not split over them, before any training;
:func:`describe_distributed` is the log line of a multi-process run.
"""

from __future__ import annotations

import os

import lightning as L
import torch

from .config import TrainConfig
from .errors import RunError

LAUNCHERS = {"LightningEnvironment": "Lightning", "TorchElasticEnvironment": "torchrun", "SLURMEnvironment": "SLURM"}


def uses_gpu(cfg: TrainConfig) -> bool:
    """Whether the run trains on the GPU: there is one, and --accelerator is not cpu."""
    return cfg.accelerator != "cpu" and torch.cuda.is_available()


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


def check_processes(cfg: TrainConfig, n_train: int) -> None:
    """RunError unless the processes are the launcher's and the batch splits over them and fits in the training images."""
    devices = processes_per_node(cfg)
    world = devices * cfg.num_nodes
    launched = launched_processes()
    if launched is not None and launched[1] != world:
        raise RunError(
            f"--devices {devices} --num-nodes {cfg.num_nodes}: that makes {world} process(es), but {launched[0]} started "
            f"{launched[1]}; set --devices to the processes per node and --num-nodes to the number of nodes"
        )
    if cfg.batch_size % world:
        raise RunError(f"--batch-size: {cfg.batch_size} does not split evenly over {world} processes")
    if cfg.batch_size > n_train:
        raise RunError(
            f"--batch-size: {cfg.batch_size} is larger than the {n_train} training images of "
            f"{cfg.data or 'the demo set'}; use --batch-size {max(2, n_train // 2)} or less"
        )
