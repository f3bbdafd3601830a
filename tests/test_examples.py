"""Every script in examples/ runs as documented, with --epochs 1, and prints a kNN figure."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.mark.parametrize(
    "script, args",
    [("pytorch_loop.py", []), ("lightning_trainer.py", []), ("lightning_trainer.py", ["--devices", "2"]), ("own_dataloader.py", [])],
    ids=["pytorch loop", "own Trainer", "own Trainer, DDP over 2 CPU processes", "own DataLoader"],
)
def test_an_example_runs_one_epoch_and_prints_its_knn(tmp_path, script, args):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES and not k.startswith("SLURM_")}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")])), CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, str(EXAMPLES / script), "--epochs", "1", *args]
    if script == "lightning_trainer.py":
        command += ["--save", str(tmp_path / "mine.ckpt")]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    found = re.findall(r"kNN top-1 on the 500 held-out images: ([\d.]+)", done.stdout)
    assert len(found) == 1 and 0.1 < float(found[0]) <= 1, done.stdout  # once, from rank 0 alone under DDP
    assert "Traceback" not in done.stderr
    if script == "lightning_trainer.py":  # the checkpoint of your own Trainer is one the commands take
        from simsiam.cli import main

        assert main(["export", str(tmp_path / "mine.ckpt"), "--format", "torchvision", "--out", str(tmp_path / "b.pt"), "--quiet"]) == 0
