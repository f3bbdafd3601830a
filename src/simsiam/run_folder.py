"""A run folder: every file of one training run, where it lives, and who may write it.

    runs/<data name>[-N]/
      config.yaml          the resolved TrainConfig
      checkpoints/last.ckpt, checkpoints/best.ckpt
      metrics.csv          one row per epoch
      metrics.json         the final figures
      training.png         the curves
      backbone.pt          the backbone's weights, for torchvision
      tensorboard/         TensorBoard event files
      simsiam-run.json     the marker: this folder is simsiam's; the data the run trains on (absolute paths, fingerprints)
      .lock                held by the process training in the folder (its pid and host)

This module is the one place that spells that layout. A run claims its folder
(:meth:`RunFolder.claim`) before it reads any data: a new folder, an empty one,
or a run folder of ours (the marker, or, from before the marker, a
checkpoints/last.ckpt beside a config.yaml of ours), never a folder of other
files. It holds the folder's lock (an OS file lock, released by the OS when the
process dies, however it dies) from then to its end, so two runs never write
into one folder; under DDP only rank 0 takes it, as only rank 0 writes.

A run records the data it trains on in its marker (:func:`settle_data`): DATA and
--val as absolute paths, each with a fingerprint of its listing (file count,
bytes, a hash of names and sizes), checked when the run is resumed.

>>> import tempfile
>>> run = RunFolder(tempfile.mkdtemp())
>>> run.last_checkpoint.relative_to(run.path).as_posix(), run.resume_command().startswith("simsiam train --resume --out ")
('checkpoints/last.ckpt', True)
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import hashlib
import json
import os
import shlex
import socket
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simsiam.errors import DataError, RunError
from simsiam.files import MARKER, PARTIAL_SUFFIX, atomic_write, os_error_text, remove_partial_files, show_path, write_json

if TYPE_CHECKING:
    from simsiam.config.schema import TrainConfig

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
BEST = "best.ckpt"
LOCK = ".lock"
MARKER_FORMAT = "simsiam-run"  # the marker's "format"; a file a user could have by chance does not say it
MAX_MARKER_BYTES = 1 << 16
METRIC_COLUMNS = ("epoch", "loss", "z_std", "collapse", "lr", "images_per_s", "knn_top1", "seconds")


def default_runs(data: str | Path | None) -> Path:
    """Where run folders go when --out is not given: runs/ here, or beside DATA when here is inside DATA."""
    runs = Path("runs")
    if data is None:
        return runs
    root = Path(data).resolve()
    if root.is_file():
        root = root.parent
    if not runs.resolve().is_relative_to(root):
        return runs
    beside = root.parent / "runs"
    return beside if not beside.is_relative_to(root) else Path.home() / "simsiam-runs"


class RunFolder:
    """The paths of one run folder, its lock, and the resume lookup."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._created = False  # this process made the folder (removed again if the run ends before it starts)
        self._marked = False  # this process wrote the marker into the folder (removed again, likewise)
        self._started = False  # prepare() ran: the run writes its files here

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- the layout ------------------------------------------------------------------

    @property
    def marker(self) -> Path:
        return self.path / MARKER

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
        """``out`` as given, or runs/<data name>[-N]: a new folder, or with ``resume`` the latest with a checkpoint.

        runs/ is in the current folder, unless that is inside DATA (``cd photos &&
        simsiam train .``): then it is beside DATA, so that nothing is written into
        the user's data by default.
        """
        if out is not None:
            return cls(out)
        base = default_runs(data) / ("demo" if data is None else (Path(data).resolve().name or "data"))
        candidates = [cls(base)] + [cls(base.with_name(f"{base.name}-{i}")) for i in range(2, 1000)]
        if resume:
            runs = [c for c in candidates if c.has_run]
            if not runs:
                raise RunError(f"--resume: no run with {CHECKPOINTS}/{LAST} under {base.parent}/ for this data; pass --out")
            return runs[-1]
        return next(c for c in candidates if not c.path.exists() or not any(c.path.iterdir()))

    @property
    def is_ours(self) -> bool:
        """Whether a simsiam run made this folder: our marker, or (a run from before the marker) last.ckpt and our config.yaml."""
        if self.marker_values() is not None:
            return True
        if not (self.last_checkpoint.is_file() and self.config.is_file()):
            return False
        from simsiam.config.layers import load_yaml
        from simsiam.config.schema import TrainConfig
        from simsiam.errors import SimSiamError

        try:
            TrainConfig.from_dict(load_yaml(self.config), where=str(self.config))
        except SimSiamError:
            return False
        return True

    def marker_values(self) -> dict[str, Any] | None:
        """The marker's contents, or None when there is no marker of ours (missing, not a regular file, too big, not ours)."""
        try:
            if not self.marker.is_file() or self.marker.stat().st_size > MAX_MARKER_BYTES:
                return None
            values = json.loads(self.marker.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            return None
        return values if isinstance(values, dict) and values.get("format") == MARKER_FORMAT else None

    def _foreign(self) -> list[str]:
        """The entries of the folder that are not a claiming run's own (its lock, its marker being written)."""
        names = sorted(os.listdir(self.path))
        return [n for n in names if n != LOCK and not (n.startswith(f".{MARKER}.") and n.endswith(PARTIAL_SUFFIX))]

    def claim(self, create: bool = True) -> None:
        """Make the folder this run's, before any data are read (rank 0): refused unless it is new, empty or ours; made, locked, marked.

        RunError, with nothing touched, for a file, a folder of other files, or a
        folder another run holds. ``create=False`` (a resume) makes no new folder.
        """
        if self.path.is_symlink() or self.path.exists():
            if not self.path.is_dir():
                raise RunError(f"--out: {self.path} is a file, not a folder; choose a new folder for the run")
            try:
                foreign = [] if self.is_ours else self._foreign()
            except OSError as e:
                raise RunError(f"--out: cannot read the folder {self.path} ({os_error_text(e)})") from None
            if foreign:
                shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
                raise RunError(
                    f"--out: {self.path} is not a simsiam run folder (it holds {shown}); a run goes into a new or empty "
                    "folder, or continues in a run folder of its own: choose another --out"
                )
        elif not create:
            return
        else:
            try:
                self.path.mkdir(parents=True)
                self._created = True
            except FileExistsError:
                pass  # another run made it a moment ago: the lock below names it
            except OSError as e:
                raise RunError(f"--out: cannot create the folder {self.path} ({os_error_text(e)})") from None
        self.lock()
        if self.marker_values() is None:
            self.record()
            self._marked = True

    def record(self, **values: Any) -> None:
        """Update the marker with ``values`` (the data a run trains on); the format tag always stays."""
        write_json(self.marker, {**(self.marker_values() or {}), **values, "format": MARKER_FORMAT, "version": 1})

    def release(self) -> None:
        """The run's end: the lock released; a run that never started takes back its marker, and a folder it made."""
        if self._marked and not self._started:
            with contextlib.suppress(OSError):
                self.marker.unlink()
        self.unlock()
        if self._created and not self._started:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if nothing else came into it

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
        self._started = True
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
        """Take the folder's lock (if the folder exists; :meth:`claim` creates it); RunError if another run holds it."""
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
        # Our pid and host, for the message above, written in place: replacing the file (an atomic
        # write) would leave the lock on the old one. The descriptor is not inherited by
        # the processes this one starts (DDP's), so the lock ends with this process.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode("utf-8", "backslashreplace"))
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
            pid, _, host = path.read_text(encoding="utf-8", errors="replace")[:300].strip().partition(" ")
        except OSError:
            pid, host = "", ""
        if not pid.isdigit():
            return "a process that is still starting"
        return f"process {pid} on {host}" if host else f"process {pid}"


# -- the data a run trains on, recorded and checked on resume --------------------------------

# The options that name data: the config key, the name a user knows it by, and what "none" means for it.
DATA_OPTIONS = (("data", "DATA", "the demo set"), ("val", "--val", "no --val"))


@dataclass(frozen=True)
class Fingerprint:
    """What a run's data were, from their listing: their absolute path, file count, total bytes, and names+sizes hash."""

    path: str
    files: int
    bytes: int
    names: str

    def same_files(self, other: Fingerprint) -> bool:
        return (self.files, self.bytes, self.names) == (other.files, other.bytes, other.names)

    def changes_since(self, old: Fingerprint) -> str:
        """What changed from ``old`` to these files, in words ("13 files, was 12; 5120 bytes, was 4800")."""
        said = [f"{self.files} files, was {old.files}"] if self.files != old.files else []
        said += [f"{self.bytes} bytes, was {old.bytes}"] if self.bytes != old.bytes else []
        return "; ".join(said) or f"the same {self.files} files in count and bytes, but other names or sizes"

    @classmethod
    def from_record(cls, values: Any) -> Fingerprint | None:
        """The fingerprint a run folder's marker recorded, or None (none recorded, or not one of ours)."""
        try:
            found = cls(str(values["path"]), int(values["files"]), int(values["bytes"]), str(values["names"]))
        except (TypeError, KeyError, ValueError):
            return None
        return found


def fingerprint(data: str | None, exclude: Iterable[str | Path] = ()) -> Fingerprint | None:
    """The fingerprint of DATA (None for the demo set): the files :func:`simsiam.data.load` would read, listed, not decoded."""
    if data is None:
        return None
    from simsiam.data.folder import SkippedImagesWarning, list_images  # the data layer, only where a run records its data
    from simsiam.data.sources import is_cifar

    path = Path(os.path.abspath(data))
    if not path.exists():
        raise DataError(f"{show_path(path)}: no such file or folder")
    if path.is_file():
        root, files = path.parent, [path]
    elif is_cifar(path):
        root = path
        files = sorted(f for f in path.iterdir() if f.name.startswith(("data_batch", "test_batch", "batches.meta")) and f.is_file())
    else:
        root = path
        with warnings.catch_warnings():  # data.load warns about the same files when it reads them
            warnings.simplefilter("ignore", SkippedImagesWarning)
            files, _, _ = list_images(path, exclude)
    names, total = hashlib.sha256(), 0
    for f in files:
        try:
            size = f.stat().st_size
        except OSError:  # a dangling link: decoding reports it; here it counts as a file of no bytes
            size = -1
        total += max(size, 0)
        names.update(os.fsencode(f.relative_to(root)) + b"\0" + str(size).encode() + b"\n")
    return Fingerprint(str(path), len(files), total, names.hexdigest()[:16])


def settle_data(run: RunFolder, cfg: TrainConfig, given: TrainConfig | None, record: bool) -> tuple[TrainConfig, list[str]]:
    """``cfg`` with DATA and --val absolute, checked against what the run recorded; and the log lines about them.

    ``given`` is the config as typed on ``--resume`` (None: a new run, nothing to
    check); ``record`` writes the fingerprints into the run folder's marker (rank 0).
    """
    recorded = run.marker_values() or {}
    found: dict[str, Fingerprint | None] = {}
    notes = []
    for key, option, none in DATA_OPTIONS:
        if given is None:
            found[key] = fingerprint(getattr(cfg, key), exclude=[run.path])
            continue
        found[key], note = _continued(run, option, none, getattr(cfg, key), getattr(given, key), Fingerprint.from_record(recorded.get(key)))
        notes += [note] if note else []
    cfg = dataclasses.replace(cfg, **{key: None if fp is None else fp.path for key, fp in found.items()})
    if record:
        run.record(**{key: None if fp is None else dataclasses.asdict(fp) for key, fp in found.items()})
    return cfg, notes


def _continued(
    run: RunFolder, option: str, none: str, saved: str | None, named: str | None, recorded: Fingerprint | None
) -> tuple[Fingerprint | None, str | None]:
    """The data a resumed run continues on for one option: its own unchanged, or what was named again; and a log line."""
    if named is None:
        if saved is None:
            return None, None
        now = fingerprint(saved, exclude=[run.path])  # a run from before absolute paths: relative to here
        if recorded is not None and not now.same_files(recorded):
            raise RunError(
                f"{option}: {now.path} has changed since the run started ({now.changes_since(recorded)}); --resume continues "
                f"a run on the data it started on: put them back, or name {option} again to continue on them as they are now"
            )
        return now, None
    now = fingerprint(named, exclude=[run.path])
    same_place = saved is not None and Path(saved).resolve() == Path(named).resolve()
    if not same_place and (recorded is None or now is None or not now.same_files(recorded)):
        raise RunError(
            f"{option}: the run in {run.path} trains on {saved or none}, not {named}; --resume continues a run "
            f"on its own data (leave {option} out), or start a new run with another --out"
        )
    if not same_place:
        return now, f"{option}: continuing on {now.path} as named, the same files as {saved} where the run started"
    if recorded is None:
        return now, f"{option}: continuing on {now.path} as named"
    changed = "unchanged" if now.same_files(recorded) else f"changed: {now.changes_since(recorded)}"
    return now, f"{option}: continuing on {now.path} as named ({changed} since the run started)"
