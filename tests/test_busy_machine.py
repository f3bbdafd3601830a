"""Training beside busy processes: the run steps down to the cores they leave free, and says so."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from simsiam.system import OthersMeter, cores

SRC = str(Path(__file__).resolve().parents[1] / "src")

needs_proc = pytest.mark.skipif(not Path("/proc/stat").exists() or shutil.which("yes") is None, reason="reads /proc/stat; uses yes")


def busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(n)]


@needs_proc
def test_the_meter_sees_other_processes_not_this_one():
    meter = OthersMeter()
    others = busy(1)
    try:
        sum(i * i for i in range(3_000_000))  # this process busy too: not counted
        reading = meter.reading()
    finally:
        for p in others:
            p.kill()
            p.wait()
    assert reading is not None and 0.5 <= reading <= meter.cores


@needs_proc
@pytest.mark.skipif(cores() < 2, reason="one core: there is no thread to give up")
def test_training_beside_busy_processes_gives_up_threads(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # set, it fixes the thread count
    env["PYTHONPATH"] = SRC
    cmd = [
        sys.executable,
        "-m",
        "simsiam.cli",
        "train",
        "--epochs",
        "1",
        "--knn-every",
        "0",
        "--no-progress",
        "--out",
        str(tmp_path / "run"),
    ]
    others = busy(2 * cores())
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    finally:
        for p in others:
            p.kill()
            p.wait()
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("the machine is busy"))
    threads = int(re.search(rf"of its {cores()} cores busy\): training on (\d+) threads?$", line).group(1))
    assert 1 <= threads < cores()
    assert (tmp_path / "run" / "backbone.pt").is_file()
