"""DDP on CPU: two processes over gloo, launched by Lightning from the CLI.

The two-process runs share one module-scoped run (about 15 s each on two cores):
a fresh 1-epoch run, then the same run resumed to 2 epochs. Each goes through
tests/ddp_worker.py, which runs the command's config through the library's fit()
with a test-only callback that records what every process trained on.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from simsiam.cli import main
from simsiam.data.batches import ShardedBatches

SRC = Path(__file__).resolve().parents[1] / "src"
WORKER = Path(__file__).with_name("ddp_worker.py")
TINY = ["--backbone", "resnet10-slim", "--proj-dim", "64", "--pred-hidden-dim", "16", "--knn-k", "5", "--no-progress"]
TWO_CPU_PROCESSES = ["--accelerator", "cpu", "--devices", "2", "--batch-size", "8"]
# 80 labeled images, 10% held out for the online kNN: 72 train, 9 steps of 2 x 4 per epoch.
N_TRAIN, STEPS = 72, 9
# Variables of an outer launcher (a SLURM job, torchrun) would make Lightning join it instead of launching.
LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def make_images(root: Path, per_class: int = 40, size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    for label in range(2):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 128, (size, size, 3)) + 127 * label
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


# -- shards -----------------------------------------------------------------------------------


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_of_an_epoch_cover_the_data_once(world):
    n, batch = 96, 4  # 96 = 4 x 24 splits into full batches for every world size here
    for epoch in (0, 1):
        shards = []
        for rank in range(world):
            sampler = ShardedBatches(n, batch, rank, world, seed=3)
            sampler.set_epoch(epoch)
            batches = list(sampler)
            assert len(batches) == len(sampler) == n // (batch * world)  # the same step count on every process
            assert all(b.shape == (batch,) for b in batches)
            shards.append(torch.cat(batches))
        union = torch.cat(shards)
        assert union.sort().values.tolist() == list(range(n))


@pytest.mark.parametrize("world", [2, 3])
def test_shards_drop_only_the_incomplete_batches_and_reshuffle_each_epoch(world):
    n, batch = 50, 4
    epochs = []
    for epoch in (0, 1):
        samplers = [ShardedBatches(n, batch, rank, world, seed=0) for rank in range(world)]
        for s in samplers:
            s.set_epoch(epoch)
        shards = [torch.cat(list(s)) for s in samplers]
        union = torch.cat(shards)
        assert len(union.unique()) == len(union) == (n // (batch * world)) * batch * world  # no repeats
        assert all(len(s) == len(shards[0]) for s in shards)
        epochs.append(shards[0])
    assert not torch.equal(epochs[0], epochs[1])


# -- options that cannot work ------------------------------------------------------------------


def test_a_batch_that_does_not_split_over_the_processes_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SIMSIAM_CACHE", str(tmp_path / "cache"))
    data = make_images(tmp_path / "data", per_class=4)
    code = main(["train", str(data), "--out", str(tmp_path / "run"), "--batch-size", "9", "--devices", "2", "--accelerator", "cpu"])
    assert code == 2
    assert "--batch-size: 9 does not split evenly over 2 processes" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_devices_that_disagree_with_torchrun_are_refused(tmp_path, monkeypatch, capsys):
    # What torchrun --nproc-per-node 2 sets; without --devices 2 each process would train alone.
    monkeypatch.setenv("SIMSIAM_CACHE", str(tmp_path / "cache"))
    torchrun = dict(TORCHELASTIC_RUN_ID="test", WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", GROUP_RANK="0")
    for key, value in torchrun.items():
        monkeypatch.setenv(key, value)
    data = make_images(tmp_path / "data", per_class=4)
    code = main(["train", str(data), "--out", str(tmp_path / "run"), "--batch-size", "4", "--accelerator", "cpu", "--epochs", "1"])
    assert code == 2
    assert "that makes 1 process(es), but torchrun started 2" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# -- two processes, end to end ----------------------------------------------------------------


def run_worker(cwd: Path, record: Path, args: list[str], timeout: float = 300) -> str:
    """Run tests/ddp_worker.py in ``cwd``; its stdout. On a timeout (a deadlock) kill every process it started."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES and not k.startswith("SLURM_")}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")])), SIMSIAM_CACHE=str(cwd / "cache"))
    command = [sys.executable, str(WORKER), str(record), "train", "data", *TINY, *TWO_CPU_PROCESSES, *args]
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with subprocess.Popen(command, cwd=cwd, env=env, start_new_session=True, **pipes) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # Lightning's child processes are in this session too
            out, err = proc.communicate()
            pytest.fail(f"the two-process run did not finish in {timeout} s\n{out}\n{err}")
    assert proc.returncode == 0, f"{out}\n{err}"
    # DDP's bucket views must match the gradients' layout (channels_last parameters made before DDP wraps them).
    assert "strides do not match bucket view strides" not in err, err
    return out


def records(folder: Path) -> list[dict]:
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(2)]


def epochs_in_csv(run: Path) -> list[int]:
    with open(run / "metrics.csv") as fh:
        return [int(row["epoch"]) for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("ddp")
    make_images(cwd / "data")
    # No --out: the auto-numbered run folder must be one folder for both processes.
    log = run_worker(cwd, cwd / "record-fresh", ["--epochs", "1"])
    return SimpleNamespace(cwd=cwd, log=log, run=cwd / "runs" / "data", ranks=records(cwd / "record-fresh"))


def assert_same_weights(ranks: list[dict]) -> None:
    a, b = (r["state"] for r in ranks)
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"the ranks' weights differ in {differ}"


def test_two_processes_end_with_identical_weights(fresh_run):
    assert [r["world"] for r in fresh_run.ranks] == [2, 2]
    assert_same_weights(fresh_run.ranks)  # parameters through DDP, BN statistics through rank 0's broadcast
    assert not any(r["sync_bn"] for r in fresh_run.ranks)  # torch's SyncBatchNorm refuses CPU tensors


def distinct_images(batches: list[torch.Tensor]) -> int:
    """How many different images there are among (n, 3, S, S) uint8 batches (every test image is distinct)."""
    return len(torch.cat(batches).flatten(1).unique(dim=0))


def test_each_process_trains_on_its_own_shard(fresh_run):
    shards = [r["seen"][0] for r in fresh_run.ranks]
    assert [len(s) for s in shards] == [STEPS * 4, STEPS * 4]
    assert distinct_images(shards) == N_TRAIN  # disjoint, and together the whole training set


def test_rank_zero_alone_writes_one_run_folder_and_says_how_it_trains(fresh_run):
    assert [p.name for p in (fresh_run.cwd / "runs").iterdir()] == ["data"]
    assert {"config.yaml", "metrics.csv", "metrics.json", "backbone.pt", "training.png"} <= {p.name for p in fresh_run.run.iterdir()}
    assert epochs_in_csv(fresh_run.run) == [1]
    log = fresh_run.log
    assert log.count("run folder: runs/data\n") == 1 and log.count("epoch 1/1: loss") == 1
    assert "batch 8 over 2 process(es) (4 each)" in log
    assert "distributed: DDP over 2 processes (1 node x 2 CPU processes), launched by Lightning; batch 4 per process" in log
    assert "batch norm per process, not synchronized (torch's SyncBatchNorm needs GPUs" in log


def test_a_resumed_two_process_run_continues_from_its_checkpoint(fresh_run):
    cwd = fresh_run.cwd
    first_epoch = fresh_run.ranks[0]["seen"][0]
    log = run_worker(cwd, cwd / "record-resumed", ["--resume", "--epochs", "2"])
    assert "epoch 2/2" in log and "epoch 1/2" not in log
    assert [p.name for p in (cwd / "runs").iterdir()] == ["data"]
    assert epochs_in_csv(fresh_run.run) == [1, 2]
    ckpt = torch.load(fresh_run.run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2 * STEPS
    ranks = records(cwd / "record-resumed")
    assert all(list(r["seen"]) == [1] for r in ranks)  # only the second epoch was trained
    assert not torch.equal(ranks[0]["seen"][1], first_epoch)  # reshuffled for the new epoch
    assert distinct_images([r["seen"][1] for r in ranks]) == N_TRAIN
    assert_same_weights(ranks)


# -- the images left in the disk cache ------------------------------------------------------------


@pytest.fixture(scope="module")
def disk_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("ddp-disk")
    make_images(cwd / "data")
    # Both processes load DATA at once: one builds the cache under its lock, the other waits and reads it.
    log = run_worker(cwd, cwd / "record", ["--epochs", "1", "--data-on", "disk"])
    return SimpleNamespace(cwd=cwd, log=log, ranks=records(cwd / "record"))


def test_each_process_reads_only_its_shard_from_the_disk_cache(disk_run, fresh_run):
    rows = [r["rows"][0] for r in disk_run.ranks]
    assert [len(r) for r in rows] == [STEPS * 4, STEPS * 4]  # what each trained on, read once, nothing more
    assert not set(rows[0]) & set(rows[1]) and len(set(rows[0]) | set(rows[1])) == N_TRAIN
    for disk, memory in zip(disk_run.ranks, fresh_run.ranks):  # the same shards, batch for batch, as from memory
        assert torch.equal(disk["seen"][0], memory["seen"][0])
    assert disk_run.log.count("kept on disk (") == 1 and "read in prefetched batches: --data-on disk" in disk_run.log
    assert_same_weights(disk_run.ranks)
