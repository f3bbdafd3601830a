"""A run folder: every file of one training run, where it lives, and who may write it.

    runs/<data name>[-N]/
      config.yaml          the resolved TrainConfig
      checkpoints/last.ckpt, checkpoints/best.ckpt
      metrics.csv          one row per epoch
      metrics.json         the final figures
      training.png         the curves
      backbone.pt          the backbone's weights, for torchvision
      tensorboard/         TensorBoard event files
      .lock                held by the process training in the folder

This module is the one place that spells that layout. A run holds the folder's
lock (an OS file lock, released by the OS when the process dies, however it
dies) from before its first write to its end, so two runs never write into one
folder; under DDP only rank 0 takes it, as only rank 0 writes.

>>> import tempfile
>>> run = RunFolder(tempfile.mkdtemp())
>>> run.last_checkpoint.relative_to(run.path).as_posix(), run.resume_command().startswith("simsiam train --resume --out ")
('checkpoints/last.ckpt', True)
"""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import shlex
from pathlib import Path
from typing import Any

from .errors import RunError
from .io import atomic_write, remove_partial_files

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
BEST = "best.ckpt"
LOCK = ".lock"
METRIC_COLUMNS = ("epoch", "loss", "z_std", "collapse", "lr", "images_per_s", "knn_top1", "seconds")


class RunFolder:
    """The paths of one run folder, its lock, and the resume lookup."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- the layout ------------------------------------------------------------------

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / BEST

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def metrics_json(self) -> Path:
        return self.path / "metrics.json"

    @property
    def training_png(self) -> Path:
        return self.path / "training.png"

    @property
    def backbone(self) -> Path:
        return self.path / "backbone.pt"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunFolder:
        """The run folder a checkpoint file belongs to (its checkpoints/ folder's parent), else the file's folder."""
        checkpoint = Path(checkpoint)
        return cls(checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINTS else checkpoint.parent)

    # -- finding the folder ------------------------------------------------------------

    @property
    def has_run(self) -> bool:
        """Whether a run saved a checkpoint here (a run killed in its first epoch left only its config)."""
        return self.last_checkpoint.exists()

    @classmethod
    def choose(cls, out: str | Path | None, data: str | None, resume: bool) -> RunFolder:
        """``out`` as given, or runs/<data name>[-N]: a new folder, or with ``resume`` the latest with a checkpoint."""
        if out is not None:
            return cls(out)
        base = Path("runs") / ("demo" if data is None else (Path(data).resolve().name or "data"))
        candidates = [cls(base)] + [cls(base.with_name(f"{base.name}-{i}")) for i in range(2, 1000)]
        if resume:
            runs = [c for c in candidates if c.has_run]
            if not runs:
                raise RunError(f"--resume: no run with {CHECKPOINTS}/{LAST} under {base.parent}/ for this data; pass --out")
            return runs[-1]
        return next(c for c in candidates if not c.path.exists() or not any(c.path.iterdir()))

    def expect(self, resume: bool) -> None:
        """RunError unless the folder suits the run: something to resume, or no run to overwrite."""
        if resume and not self.has_run and not self.config.is_file():
            raise RunError(f"--resume: {self.path} holds no {CHECKPOINTS}/{LAST} to resume from")
        if not resume and self.has_run:
            raise RunError(f"--out: {self.path} already holds a run; pass --resume to continue it, or choose another --out")

    def resume_command(self) -> str:
        return f"simsiam train --resume --out {shlex.quote(str(self.path))}"

    def kept(self) -> str:
        """What a failed run leaves to continue from."""
        if self.has_run:
            return f"the last complete checkpoint is kept: {self.last_checkpoint}"
        return "no checkpoint had been saved yet"

    # -- writing ------------------------------------------------------------------------

    def prepare(self, fresh: bool) -> None:
        """Make the folder ready for a run (rank 0, all checks passed): locked, no partial files, no stale metrics."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.lock()
        for folder in (self.path, self.checkpoints):
            remove_partial_files(folder)  # left by a process killed while writing
        if fresh:
            for stale in (self.metrics_csv, self.metrics_json):
                stale.unlink(missing_ok=True)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite metrics.csv from the epoch rows (each epoch once, also after a resume); atomic."""
        with atomic_write(self.metrics_csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_COLUMNS})

    @property
    def locked(self) -> bool:
        """Whether this process holds the folder's lock."""
        return self._lock_fd is not None

    def lock(self) -> None:
        """Take the folder's lock (if the folder exists; :meth:`prepare` creates it); RunError if another run holds it."""
        try:
            import fcntl
        except ImportError:  # not a POSIX system: runs are not locked there
            return
        if self._lock_fd is not None or not self.path.is_dir():
            return
        path = self.path / LOCK
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise RunError(
                    f"--out: {self.path} is in use by another run ({self._holder(path)}); wait for it to end, or choose another --out"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    break  # the lock file still has its name: the lock is ours
            os.close(fd)  # its holder removed it between our open and our lock: take the new one
        # Our pid, for the message above, written in place: replacing the file (an atomic
        # write) would leave the lock on the old one. The descriptor is not inherited by
        # the processes this one starts (DDP's), so the lock ends with this process.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the lock; the lock file goes with it (a killed holder's file stays, unlocked, and is reused)."""
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError):
            (self.path / LOCK).unlink()
        os.close(self._lock_fd)  # closing releases the lock
        self._lock_fd = None

    @staticmethod
    def _holder(path: Path) -> str:
        try:
            pid = path.read_text().strip()
        except OSError:
            pid = ""
        return f"process {pid}" if pid.isdigit() else "a process that is still starting"
