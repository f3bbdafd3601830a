"""The data a run trains on: recorded in its run folder, checked on ``--resume``.

A run records DATA and --val as absolute paths (a resume from another working
directory finds the same files), each with a fingerprint taken from the listing
alone, without decoding: the number of files, their total bytes, and a hash of
their names (relative to DATA) and sizes. ``--resume`` continues on the data
recorded, and refuses in one line data that no longer match, saying what
changed. DATA (or --val) named again on ``--resume`` continues on the data as
they are now (also moved elsewhere, when its files are the same), and the log
line says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simsiam.config.schema import TrainConfig
from simsiam.data.folder import SkippedImagesWarning, list_images
from simsiam.errors import DataError, RunError
from simsiam.files import show_path
from simsiam.run_folder import RunFolder

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
    from simsiam.data.sources import _is_cifar

    path = Path(os.path.abspath(data))
    if not path.exists():
        raise DataError(f"{show_path(path)}: no such file or folder")
    if path.is_file():
        root, files = path.parent, [path]
    elif _is_cifar(path):
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
