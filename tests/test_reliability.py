"""Faults: kills, Ctrl-C, a full disk, damaged checkpoints, a non-finite loss. Nothing may be lost.

Every interrupted run here is resumed to the end and must give exactly the
weights of one uninterrupted run with the same seed (CPU, one thread: bit for
bit), with each epoch once in metrics.csv. The fault-injection test kills real
``python -m simsiam train`` processes at random moments; SIMSIAM_FAULT_SEED
picks other moments.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import simsiam
from simsiam import Augment
from simsiam.checkpoint import read_checkpoint
from simsiam.cli import main
from simsiam.config import layered
from simsiam.errors import NonFiniteLossError, TrainingInterrupted
from simsiam.files import atomic_write, partial_path
from simsiam.run_folder import RunFolder
from simsiam.train import fit

EPOCHS = 4
FLAGS = [
    "--epochs", str(EPOCHS), "--batch-size", "8", "--backbone", "resnet10-slim", "--no-small-images",
    "--proj-dim", "32", "--pred-hidden-dim", "8", "--accelerator", "cpu", "--seed", "3", "--no-progress",
]  # fmt: skip
# FLAGS as config keys, for the tests that call the library's fit() with a test-only callback.
OPTIONS = {
    "epochs": EPOCHS, "batch_size": 8, "model.backbone": "resnet10-slim", "model.small_images": False,
    "model.proj_dim": 32, "model.pred_hidden_dim": 8, "accelerator": "cpu", "seed": 3,
}  # fmt: skip
SRC = str(Path(simsiam.__file__).resolve().parents[1])
REPORT: dict[str, list[str]] = {"faults": []}


@contextlib.contextmanager
def one_thread():
    # Bit-for-bit comparisons need the same reduction order in every run: one thread,
    # as the child processes get through OMP_NUM_THREADS=1.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_cli(*args: str) -> tuple[int, str, str]:
    """``simsiam train ...`` in this process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with one_thread(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        # Warnings printed to stderr as the command prints them, not recorded by pytest.
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(message, category, filename, lineno, line)
        )
        rc = main(["train", *args])
    return rc, out.getvalue(), err.getvalue()


def fit_with(env, out: Path, callback: L.Callback) -> None:
    """What ``simsiam train DATA FLAGS --out OUT`` does, through the library, with a test-only Lightning callback."""
    cfg, _ = layered({**OPTIONS, "data": env.data, "out": str(out)})
    with one_thread(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(cfg, progress=False, callbacks=[callback])


class AtStep(L.Callback):
    """Test-only: does ``action(pl_module)`` as training step ``step`` (1-based) begins."""

    def __init__(self, step: int, action):
        self.step, self.action = step, action

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step + 1 == self.step:
            self.action(pl_module)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """24 good 16 px images (one with a non-UTF-8 name) and one broken file, and a private image cache."""
    root = tmp_path_factory.mktemp("reliability")
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(23):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(data / f"{i:02d}.png")
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(os.path.join(os.fsencode(data), b"\xe9t\xe9.png"))
    (data / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIMSIAM_CACHE", str(root / "cache"))
        yield SimpleNamespace(root=root, data=str(data))


@pytest.fixture(scope="module")
def reference(env):
    """One uninterrupted run: what every interrupted and resumed run must reproduce."""
    out = env.root / "reference"
    rc, stdout, stderr = run_cli(env.data, *FLAGS, "--out", str(out))
    assert rc == 0, stderr
    return SimpleNamespace(out=out, stdout=stdout, stderr=stderr, weights=weights(out))


def weights(out: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(out / "checkpoints" / "last.ckpt")["state_dict"]


def assert_same_weights(out: Path, reference) -> None:
    got = weights(out)
    assert got.keys() == reference.weights.keys()
    different = [k for k in got if not torch.equal(got[k], reference.weights[k])]
    assert not different, f"{len(different)} tensors differ from the uninterrupted run, e.g. {different[:3]}"
    backbone = torch.load(out / "backbone.pt", weights_only=True)
    assert all(torch.equal(v, got[f"model.encoder.backbone.{k}"]) for k, v in backbone.items())


def epochs_in(out: Path) -> list[int]:
    path = out / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [int(row["epoch"]) for row in csv.DictReader(fh)]


def assert_consistent(out: Path) -> None:
    """What any fault may leave: a loadable last.ckpt (or none), each epoch once, no torn file in sight."""
    ckpt = out / "checkpoints" / "last.ckpt"
    if ckpt.exists():
        read_checkpoint(ckpt)  # raises on a torn file
    epochs = epochs_in(out)
    assert epochs == list(range(1, len(epochs) + 1)), epochs


def no_partial_files(out: Path) -> bool:
    return not list(out.rglob("*.partial"))


# -- the uninterrupted run, and the warning about the broken file ------------------------------


def test_reference_run_warns_once_and_leaves_a_complete_run_folder(reference):
    warning_lines = [line for line in reference.stderr.splitlines() if "SkippedImagesWarning" in line]
    assert len(warning_lines) == 1 and "skipped 1 of 25 files" in warning_lines[0] and "broken.jpg" in warning_lines[0]
    assert "Traceback" not in reference.stderr
    assert epochs_in(reference.out) == list(range(1, EPOCHS + 1))
    names = {p.name for p in reference.out.iterdir()}
    assert {"config.yaml", "metrics.csv", "metrics.json", "training.png", "backbone.pt", "checkpoints"} <= names
    assert no_partial_files(reference.out)


# -- SIGINT and SIGKILL of real processes at random moments ---------------------------------------


def _start(env, out: Path, *extra: str) -> subprocess.Popen:
    resume = ["--resume"] if (out / "config.yaml").exists() else []
    child_env = dict(os.environ, PYTHONPATH=SRC, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "simsiam", "train", env.data, *FLAGS, *extra, "--out", str(out), *resume],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env,
    )


def _wait_for_line(proc: subprocess.Popen, prefix: str) -> list[str]:
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(prefix):
            break
    return lines


def _kill_during_a_save(proc: subprocess.Popen, out: Path, timeout: float = 60) -> bool:
    """SIGKILL the moment a checkpoint's temporary file exists, i.e. in the middle of writing it."""
    partial = partial_path(out / "checkpoints" / "last.ckpt", pid=proc.pid)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if partial.exists():
            proc.kill()
            return True
        time.sleep(0.0005)
    return False


def test_sigint_and_sigkill_at_random_moments_then_resume(env, reference, tmp_path):
    rng = random.Random(int(os.environ.get("SIMSIAM_FAULT_SEED", "0")))
    out = tmp_path / "run"
    with open(reference.out / "metrics.csv", newline="") as fh:
        training_seconds = sum(float(row["seconds"]) for row in csv.DictReader(fh))  # how long the window to hit is
    for fault in ("sigint", "sigkill", "sigkill-during-save"):
        proc = _start(env, out)
        _wait_for_line(proc, "training:")  # the model is built and the run folder is being written
        if fault == "sigint":
            _wait_for_line(proc, "epoch 1/")
            time.sleep(rng.uniform(0, training_seconds / 2))
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=120)
            if proc.returncode == 130:
                last = stderr.strip().splitlines()[-1]
                assert re.fullmatch(
                    rf"simsiam train: interrupted .*; saved {re.escape(str(out))}/checkpoints/last\.ckpt; "
                    rf"continue with: simsiam train --resume --out {re.escape(str(out))}",
                    last,
                ), last
                note = last.split(": ", 1)[1].split(";")[0]
            else:  # the signal came after the last step, maybe as the interpreter exited
                assert proc.returncode in (0, -signal.SIGINT) and "done: " in stdout, (proc.returncode, stderr)
                note = "finished before the signal"
        elif fault == "sigkill-during-save":
            caught = _kill_during_a_save(proc, out)
            proc.communicate(timeout=120)
            note = "killed while writing last.ckpt" if caught else "no save seen before the run ended"
        else:
            delay = rng.uniform(0, training_seconds)
            time.sleep(delay)
            proc.kill()
            proc.communicate(timeout=120)
            note = f"killed {delay:.2f} s after training began"
        assert_consistent(out)
        REPORT["faults"].append(f"{fault}: {note}; epochs in metrics.csv after it: {epochs_in(out)}")

    rc, _, stderr = run_cli(env.data, *FLAGS, "--out", str(out), *(["--resume"] if (out / "config.yaml").exists() else []))
    assert rc == 0, stderr
    assert epochs_in(out) == list(range(1, EPOCHS + 1))
    assert_same_weights(out, reference)
    assert no_partial_files(out)
    print(f"\nwindow: {training_seconds:.2f} s\n" + "\n".join(REPORT["faults"]))


def test_ctrl_c_mid_epoch_saves_and_resume_is_exact(env, reference, tmp_path):
    """Deterministic companion of the random test: Ctrl-C in the middle of epoch 2, then --resume."""
    out = tmp_path / "run"
    press_ctrl_c = AtStep(5, lambda module: os.kill(os.getpid(), signal.SIGINT))  # the real signal, through the real handler
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a background job
    with pytest.raises(TrainingInterrupted) as stopped:
        fit_with(env, out, press_ctrl_c)  # the 5th step is the 2nd of epoch 2
    assert str(stopped.value) == (
        f"interrupted in epoch 2/{EPOCHS} after step 5 (2 of its 3 steps done); "
        f"saved {out}/checkpoints/last.ckpt; continue with: simsiam train --resume --out {out}"
    )
    assert read_checkpoint(out / "checkpoints" / "last.ckpt")["global_step"] == 5
    assert epochs_in(out) == [1]
    assert signal.getsignal(signal.SIGINT) is before  # our handler is gone again

    rc, stdout, stderr = run_cli(env.data, *FLAGS, "--out", str(out), "--resume")
    assert rc == 0, stderr
    assert f"resuming from {out}/checkpoints/last.ckpt (epoch 2 of {EPOCHS}, 2 of its 3 steps done)" in stdout
    assert "Warning" not in stderr.replace("SkippedImagesWarning", ""), stderr  # e.g. Lightning's 'not resumable' one
    assert epochs_in(out) == list(range(1, EPOCHS + 1))
    assert_same_weights(out, reference)


# -- a full disk, a non-finite loss: the previous checkpoint stays, the run continues -------------


class _FullDisk:
    """A file whose writes fail with ENOSPC once ``room`` bytes are in, as on a disk that fills up."""

    def __init__(self, f, room: int):
        self._f, self._room = f, room

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        if len(data) > self._room:
            self._f.write(data[: self._room])
            self._room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def _full_disk_then_resume(env, reference, out: Path, resume_in: Path) -> None:
    rc, _, stderr = run_cli(env.data, *FLAGS, "--out", str(out))
    ckpt = out / "checkpoints" / "last.ckpt"
    assert rc == 2
    assert stderr.strip().splitlines()[-1] == (
        f"simsiam train: error: {ckpt}: cannot save the checkpoint (No space left on device); the previous checkpoint "
        f"there is kept; once that is fixed, continue with: simsiam train --resume --out {out}"
    )
    assert read_checkpoint(ckpt)["global_step"] == 3  # epoch 1's, whole
    assert no_partial_files(out)
    if resume_in != out:  # "once that is fixed": here, the run folder moves to a disk with room
        shutil.copytree(out, resume_in)
    rc, _, stderr = run_cli(env.data, *FLAGS, "--out", str(resume_in), "--resume")
    assert rc == 0, stderr
    assert epochs_in(resume_in) == list(range(1, EPOCHS + 1))
    assert_same_weights(resume_in, reference)


def test_full_disk_during_a_save_keeps_the_previous_checkpoint(env, reference, tmp_path, monkeypatch):
    """ENOSPC at the write itself: the second checkpoint gets 1 kB onto the disk, then the disk is full."""
    import simsiam.files

    opened = []

    def open_on_a_filling_disk(path, mode="r", **kwargs):
        f = open(path, mode, **kwargs)
        if Path(path).name == partial_path("last.ckpt").name:
            opened.append(path)
            if len(opened) == 2:  # the resume's saves find room again
                return _FullDisk(f, room=1024)
        return f

    monkeypatch.setattr(simsiam.files, "open", open_on_a_filling_disk, raising=False)
    _full_disk_then_resume(env, reference, tmp_path / "run", resume_in=tmp_path / "run")


def test_a_really_full_filesystem(env, reference, tmp_path):
    """The same on a real filesystem with room for one checkpoint: a tmpfs, where mounting one is allowed."""
    ckpt_bytes = (reference.out / "checkpoints" / "last.ckpt").stat().st_size
    disk = tmp_path / "small-disk"
    disk.mkdir()
    size = int(1.6 * ckpt_bytes)  # one checkpoint and the small files fit; a second copy beside it does not
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root with CAP_SYS_ADMIN; the simulated ENOSPC test covers the rest")
    try:
        _full_disk_then_resume(env, reference, disk / "run", resume_in=tmp_path / "moved")
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(env, reference, tmp_path):
    out = tmp_path / "run"
    ckpt = out / "checkpoints" / "last.ckpt"
    poison = AtStep(7, lambda module: next(module.model.parameters()).data.fill_(float("nan")))  # step 7: 1st of epoch 3
    with pytest.raises(NonFiniteLossError) as stopped:
        fit_with(env, out, poison)
    message = str(stopped.value)
    assert message.startswith("the loss became nan at step 7, epoch 3; lower the learning rate (--lr, now ")
    assert message.endswith(f"; the last complete checkpoint is kept: {ckpt}")
    state = read_checkpoint(ckpt)
    assert state["global_step"] == 6 and all(torch.isfinite(v.float()).all() for v in state["state_dict"].values())
    assert epochs_in(out) == [1, 2]

    rc, _, stderr = run_cli(env.data, *FLAGS, "--out", str(out), "--resume")  # the blow-up was a fluke: continue
    assert rc == 0, stderr
    assert_same_weights(out, reference)


def test_an_absurd_learning_rate_is_one_line(env, tmp_path):
    out = tmp_path / "run"
    rc, _, stderr = run_cli(env.data, *FLAGS, "--lr", "1e30", "--out", str(out))
    lines = stderr.strip().splitlines()
    assert rc == 2 and lines[-1].startswith("simsiam train: error: the loss became nan at step "), lines
    assert lines[-1].endswith("lower the learning rate (--lr, now 1e+30) or add --warmup-epochs; no checkpoint had been saved yet")


# -- two runs on one folder -------------------------------------------------------------------------


def test_a_second_run_on_a_folder_in_use_is_one_line_naming_the_holder(env, tmp_path):
    out = tmp_path / "run"
    holder = _start(env, out, "--epochs", "500")  # far longer than this test
    try:
        _wait_for_line(holder, "training:")  # printed once the folder is locked and written to
        assert holder.poll() is None, holder.communicate()
        for again in ([], ["--resume"]):
            rc, stdout, stderr = run_cli(env.data, *FLAGS, "--out", str(out), *again)
            assert (
                rc == 2
                and stdout == ""
                and stderr
                == (
                    f"simsiam train: error: --out: {out} is in use by another run (process {holder.pid} on {socket.gethostname()}); "
                    "wait for it to end, or choose another --out\n"
                )
            ), (rc, stdout, stderr)
    finally:
        holder.kill()
        holder.communicate(timeout=60)
    run = RunFolder(out)  # the OS released the killed holder's lock: the folder can be locked again
    run.lock()
    assert run.locked
    run.unlock()


# -- damaged and foreign checkpoints, and other-model options on --resume -------------------------


def _corrupt(kind: str, ckpt: Path) -> None:
    if kind == "truncated":
        blob = ckpt.read_bytes()
        ckpt.write_bytes(blob[: len(blob) // 2])
    elif kind == "zero bytes":
        ckpt.write_bytes(b"")
    elif kind == "garbage":
        ckpt.write_bytes(random.Random(0).randbytes(4096))
    elif kind == "foreign weights":
        torch.save({"conv.weight": torch.zeros(3)}, ckpt)
    elif kind == "pickled object":
        torch.save({"state_dict": {}, "hyper_parameters": {"config": {}}, "extra": SimpleNamespace(a=1)}, ckpt)
    elif kind == "weights of another model":
        state = torch.load(ckpt, weights_only=True)
        state["hyper_parameters"]["config"]["model"]["backbone"] = "resnet18"
        torch.save(state, ckpt)


DAMAGE = {
    "truncated": "the checkpoint is corrupt or truncated",
    "zero bytes": "the checkpoint is corrupt or truncated (0 bytes",
    "garbage": "the checkpoint is corrupt or truncated",
    "foreign weights": "not a simsiam checkpoint (no simsiam config and weights in it)",
    "pickled object": "not a simsiam checkpoint (it stores Python objects",
    "weights of another model": "the weights are from another model than its config describes",
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_checkpoint_is_one_line_and_nothing_changes(kind, env, reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference.out, out)
    ckpt = out / "checkpoints" / "last.ckpt"
    _corrupt(kind, ckpt)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    rc, _, stderr = run_cli("--out", str(out), "--resume")  # the command an interrupted run prints
    lines = stderr.strip().splitlines()
    assert rc == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"simsiam train: error: {ckpt}: ") and DAMAGE[kind] in lines[0], lines[0]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


@pytest.mark.parametrize(
    "option, expected",
    [
        (
            ["--backbone", "resnet18"],
            "--backbone: the checkpoint is of another model: the run in {out} has model.backbone = 'resnet10-slim'",
        ),
        (["--proj-dim", "64"], "--proj-dim: the checkpoint is of another model: the run in {out} has model.proj_dim = 32"),
        (["--batch-size", "4"], "--batch-size: the run in {out} has batch_size = 8, not 4; --resume continues a run with its own settings"),
    ],
)
def test_resume_with_options_of_another_model_is_refused(option, expected, env, reference, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference.out, out)
    rc, _, stderr = run_cli(env.data, *FLAGS, *option, "--out", str(out), "--resume")
    lines = stderr.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and expected.format(out=out) in lines[0], lines


def test_resume_with_nothing_to_resume_is_one_line(env, tmp_path):
    rc, _, stderr = run_cli(env.data, *FLAGS, "--out", str(tmp_path / "nothing"), "--resume")
    assert (
        rc == 2
        and stderr.strip() == f"simsiam train: error: --resume: {tmp_path / 'nothing'} holds no checkpoints/last.ckpt to resume from"
    )


# -- atomic files ---------------------------------------------------------------------------------


def test_atomic_write_keeps_the_old_file_on_any_failure(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(path, "w") as fh:
        fh.write("half of the new")
        raise RuntimeError("killed")
    assert path.read_text() == "old" and not partial_path(path).exists()
    with pytest.raises(OSError, match=re.escape(f"No space left on device: '{path}'")), atomic_write(path, "w") as fh:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(partial_path(path)))
    assert path.read_text() == "old" and not partial_path(path).exists()


# -- fuzz: Augment with random parameters and inputs ------------------------------------------------

AUGMENT_CASES = [0]
MEAN = torch.tensor(simsiam.augment.IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(simsiam.augment.IMAGENET_STD).view(1, 3, 1, 1)


@settings(max_examples=80, deadline=None)
@given(
    size=st.integers(1, 24),
    batch=st.integers(1, 4),
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    uint8=st.booleans(),
    scale=st.tuples(st.floats(0.01, 1.0), st.floats(0.01, 1.0)).map(sorted),
    ratio=st.tuples(st.floats(0.1, 10.0), st.floats(0.1, 10.0)).map(sorted),
    probabilities=st.lists(st.floats(0.0, 1.0), min_size=7, max_size=7),
    strengths=st.lists(st.floats(0.0, 2.0), min_size=3, max_size=3),
    hue=st.floats(0.0, 0.5),
    sigma=st.tuples(st.floats(0.01, 5.0), st.floats(0.01, 5.0)).map(sorted),
    rotate=st.sampled_from(["none", "90", "free"]),
    seed=st.integers(0, 2**16),
)
def test_fuzz_augment_gives_finite_views_in_range(
    size, batch, height, width, uint8, scale, ratio, probabilities, strengths, hue, sigma, rotate, seed
):
    AUGMENT_CASES[0] += 1
    hflip, vflip, jitter, gray, blur, solarize, _ = probabilities
    aug = Augment(
        size=size, min_scale=scale[0], max_scale=scale[1], ratio=tuple(ratio), hflip_p=hflip, vflip_p=vflip, rotate=rotate,
        jitter_p=jitter, brightness=strengths[0], contrast=strengths[1], saturation=strengths[2], hue=hue,
        grayscale_p=gray, blur_p=blur, blur_sigma=tuple(sigma), solarize_p=solarize, seed=seed,
    )  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    if uint8:
        images = torch.randint(0, 256, (batch, 3, height, width), generator=g, dtype=torch.uint8)
    else:
        images = torch.rand(batch, 3, height, width, generator=g)
    with one_thread():
        views = aug(images)
    assert views.shape == (batch, 3, size, size) and views.dtype == torch.float32
    assert torch.isfinite(views).all()
    pixels = views * STD + MEAN  # back to [0, 1]
    assert pixels.min() >= -1e-4 and pixels.max() <= 1 + 1e-4, (pixels.min(), pixels.max())


def test_fuzz_case_count_report():
    """Not a check: how many Augment cases ran (pytest -s shows it)."""
    print(f"\nAugment fuzz: {AUGMENT_CASES[0]} random parameter sets and inputs")
