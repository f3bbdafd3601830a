"""Hostile run folders, resumes and launches (issue 21: items 2, 3, 4 and 9), through `simsiam train`.

- two runs on one new folder: the folder is claimed and locked before any data are read;
- --out (or out: in a config file) at a file or a folder of other files: refused, nothing touched;
- a resume from another directory, or on data that changed: DATA is recorded absolute, with a fingerprint;
- --num-nodes without a launcher: refused, and every wait for peers is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simsiam.cli import main
from simsiam.config import TrainConfig
from simsiam.files import MARKER
from simsiam.run_folder import RunFolder
from simsiam.train.launch import LAUNCH_VARIABLES, check_processes

from .conftest import TINY, write_class_folder

SRC = str(Path(__file__).resolve().parents[1] / "src")
ONE_EPOCH = ["--epochs", "1", *TINY]


def train(*args: str) -> int:
    return main(["train", *map(str, args)])


def error_line(capsys) -> str:
    """The one line a refused command printed on stderr (and nothing on stdout)."""
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if not line.startswith("SkippedImagesWarning")]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for a folder): any change to it shows."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def images(root: Path, per_class: int = 8, seed: int = 0) -> Path:
    return write_class_folder(root, per_class=per_class, seed=seed)


@pytest.fixture
def no_launcher(monkeypatch):
    for name in (*LAUNCH_VARIABLES, "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT", "SIMSIAM_DDP_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


# -- item 2: two runs on one folder ------------------------------------------------------------------


def _cache_entries() -> set[str]:
    folder = Path(os.environ["SIMSIAM_CACHE"]) / "images"
    return set(os.listdir(folder)) if folder.exists() else set()


def test_a_run_on_a_new_folder_claimed_by_another_is_refused_before_reading_data(tmp_path, capsys):
    data = images(tmp_path / "fresh", seed=21)  # images no test decoded before: a decoding would add a cache entry
    out = tmp_path / "run"
    holder = RunFolder(out)
    holder.claim()  # what the first of two runs started together does before reading its data
    try:
        before, cache = snapshot(out), _cache_entries()
        assert train(data, "--out", out, *ONE_EPOCH) == 2
        line = error_line(capsys)
        assert line == (
            f"simsiam train: error: --out: {out} is in use by another run (process {os.getpid()} on {socket.gethostname()}); "
            "wait for it to end, or choose another --out"
        )
        assert snapshot(out) == before and _cache_entries() == cache  # nothing written, nothing decoded
        assert train(data, "--out", out, "--resume", "--no-progress") == 2  # a resume of it neither
        assert "is in use by another run" in error_line(capsys) and snapshot(out) == before
    finally:
        holder.release()
    assert not out.exists()  # the holder made it and never started: it leaves nothing behind


def test_a_holder_in_another_process_is_named_and_its_folder_is_left_alone(tmp_path, capsys):
    data = images(tmp_path / "data")
    out = tmp_path / "new" / "run"  # parents are made too
    code = "import sys; from simsiam.run_folder import RunFolder; r = RunFolder(sys.argv[1]); r.claim(); print('held', flush=True); sys.stdin.read(); r.release()"
    env = {**os.environ, "PYTHONPATH": SRC}
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline() == "held\n"
        before = snapshot(out)
        assert json.loads((out / MARKER).read_text())["format"] == "simsiam-run"
        assert train(data, "--out", out, *ONE_EPOCH) == 2
        assert f"is in use by another run (process {holder.pid} on {socket.gethostname()})" in error_line(capsys)
        assert snapshot(out) == before
    finally:
        holder.communicate("", timeout=60)
    assert not out.exists()
    assert train(data, "--out", out, *ONE_EPOCH) == 0  # once the holder is gone the folder is free
    assert (out / "checkpoints" / "last.ckpt").is_file()


def test_a_new_run_that_fails_before_training_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(tmp_path / "missing", "--out", out, *ONE_EPOCH) == 2
    assert "missing: no such file or folder" in error_line(capsys)
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "data").mkdir()
    assert train(tmp_path / "data", "--out", empty, *ONE_EPOCH) == 2  # no images: the user's empty folder stays, empty
    assert "no images found" in error_line(capsys)
    assert empty.is_dir() and not list(empty.iterdir())


# -- item 3: --out at files that are not a run's ------------------------------------------------


def _user_folder(tmp_path: Path, files: dict[str, bytes]) -> Path:
    folder = tmp_path / "project"
    for name, blob in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(blob)
    return folder


USER_FOLDERS = {
    "config.yaml and notes": {"config.yaml": b"learning_rate: 3\nname: my project\n", "notes.txt": b"do not lose\n"},
    "a simsiam-like config.yaml alone": {"config.yaml": b"epochs: 5\nbatch_size: 8\n"},
    "a file named like our checkpoint": {"checkpoints/last.ckpt": b"my own file", "readme.md": b"# mine\n"},
    "a marker of someone else's": {MARKER: b'{"format": "another-tool"}', "data.bin": b"\0" * 10},
    "a marker that is not JSON": {MARKER: b"\xff\xfe not json"},
    "only a hidden folder": {".git/HEAD": b"ref: refs/heads/main\n"},
}


@pytest.mark.parametrize("kind", list(USER_FOLDERS))
@pytest.mark.parametrize("resume", [False, True])
def test_out_at_a_folder_of_other_files_is_refused_and_nothing_in_it_changes(kind, resume, tmp_path, capsys):
    data = images(tmp_path / "data")
    folder = _user_folder(tmp_path, USER_FOLDERS[kind])
    before = snapshot(folder)
    assert train(data, "--out", folder, *ONE_EPOCH, *(["--resume"] if resume else [])) == 2
    line = error_line(capsys)  # also on --resume: the folder is looked at before anything in it is read
    assert line.startswith(f"simsiam train: error: --out: {folder} is not a simsiam run folder (it holds "), line
    assert line.endswith("choose another --out")
    assert snapshot(folder) == before


def test_out_at_a_file_or_below_one_is_refused(tmp_path, capsys):
    data = images(tmp_path / "data")
    file = tmp_path / "results.txt"
    file.write_bytes(b"precious")
    assert train(data, "--out", file, *ONE_EPOCH) == 2
    assert error_line(capsys) == f"simsiam train: error: --out: {file} is a file, not a folder"
    assert train(data, "--out", file / "run", *ONE_EPOCH) == 2
    assert error_line(capsys) == f"simsiam train: error: --out: {file} is a file, not a folder"  # checked with the flags
    assert file.read_bytes() == b"precious" and sorted(os.listdir(tmp_path)) == ["data", "results.txt"]


def test_out_in_a_config_file_at_a_folder_of_other_files_is_refused(tmp_path, capsys):
    data = images(tmp_path / "data")
    folder = _user_folder(tmp_path, USER_FOLDERS["config.yaml and notes"])
    config = tmp_path / "run.yaml"
    config.write_text(f"out: {folder}\nepochs: 1\n")
    before = snapshot(folder)
    assert train(data, "--config", config, *TINY) == 2
    assert error_line(capsys).startswith(
        f"simsiam train: error: --out: {folder} is not a simsiam run folder (it holds config.yaml, notes.txt)"
    )
    assert snapshot(folder) == before


def test_an_empty_folder_becomes_a_run_folder_and_a_run_from_before_the_marker_resumes(tmp_path, capsys):
    data = images(tmp_path / "data")
    out = tmp_path / "run"
    out.mkdir()
    assert train(data, "--out", out, *ONE_EPOCH) == 0
    (out / MARKER).unlink()  # a run folder of an earlier simsiam: last.ckpt and config.yaml, no marker
    assert train("--out", out, "--epochs", "2", "--resume", "--no-progress") == 0
    assert json.loads((out / MARKER).read_text())["data"]["path"] == str(data)  # marked and recorded now
    (out / "config.yaml").write_text("this: is not our config\n")  # last.ckpt beside a config.yaml of someone else's
    (out / MARKER).unlink()
    capsys.readouterr()
    assert train("--out", out, "--epochs", "3", "--resume", "--no-progress") == 2
    assert "is not a simsiam run folder" in error_line(capsys)


# -- item 4: what a resume trains on ------------------------------------------------------------


@pytest.fixture
def relative_run(tmp_path, monkeypatch):
    """A one-epoch run on DATA given as the relative path "data", started in tmp_path/start."""
    start = tmp_path / "start"
    images(start / "data")
    monkeypatch.chdir(start)
    assert train("data", "--out", tmp_path / "run", *ONE_EPOCH) == 0
    return tmp_path / "run", start / "data"


def test_a_run_records_absolute_paths_and_a_fingerprint(relative_run):
    run, data = relative_run
    marker = json.loads((run / MARKER).read_text())
    assert marker["format"] == "simsiam-run" and marker["val"] is None
    assert marker["data"]["path"] == str(data) and marker["data"]["files"] == 16
    assert marker["data"]["bytes"] == sum(p.stat().st_size for p in data.rglob("*.png"))
    assert f"data: {data}\n" in (run / "config.yaml").read_text()


def test_resume_from_another_directory_trains_on_the_run_s_own_data(relative_run, tmp_path, monkeypatch, capsys):
    run, data = relative_run
    elsewhere = tmp_path / "elsewhere"
    images(elsewhere / "data", per_class=3, seed=5)  # a "data" here too: not the run's
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert train("--out", run, "--epochs", "2", "--resume", "--no-progress") == 0
    assert f"data: 16 images of {data} at 16x16" in capsys.readouterr().out
    assert train("data", "--out", run, "--epochs", "3", "--resume", "--no-progress") == 2  # "data" here is other data
    assert error_line(capsys).startswith(f"simsiam train: error: DATA: the run in {run} trains on {data}, not data; ")


def _add(data: Path) -> None:
    shutil.copy(data / "a" / "000.png", data / "a" / "new.png")


def _remove(data: Path) -> None:
    (data / "b" / "003.png").unlink()


def _resize(data: Path) -> None:
    with open(data / "a" / "001.png", "ab") as fh:
        fh.write(b"\0" * 7)  # bytes after the PNG's end: it still decodes, but it is not the file the run started on


def _rename(data: Path) -> None:
    (data / "a" / "002.png").rename(data / "a" / "zzz.png")


CHANGES = {
    "added": (_add, "17 files, was 16; {bytes_after} bytes, was {bytes_before}"),
    "removed": (_remove, "15 files, was 16; {bytes_after} bytes, was {bytes_before}"),
    "resized": (_resize, "{bytes_after} bytes, was {bytes_before}"),
    "renamed": (_rename, "the same 16 files in count and bytes, but other names or sizes"),
}


def _total(data: Path) -> int:
    return sum(p.stat().st_size for p in data.rglob("*.png"))


@pytest.mark.parametrize("change", list(CHANGES))
def test_resume_on_changed_data_is_refused_saying_what_changed(change, relative_run, capsys):
    run, data = relative_run
    bytes_before = _total(data)
    edit, what = CHANGES[change]
    edit(data)
    before = snapshot(run)
    capsys.readouterr()
    assert train("--out", run, "--epochs", "2", "--resume", "--no-progress") == 2
    what = what.format(bytes_after=_total(data), bytes_before=bytes_before)
    assert error_line(capsys) == (
        f"simsiam train: error: DATA: {data} has changed since the run started ({what}); --resume continues a run on the data "
        "it started on: put them back, or name DATA again to continue on them as they are now"
    )
    assert {k: v for k, v in snapshot(run).items() if k != ".lock"} == before


@pytest.mark.parametrize("change", ["added", "removed"])
def test_resume_naming_data_again_continues_on_it_as_it_is_and_says_so(change, relative_run, tmp_path, monkeypatch, capsys):
    run, data = relative_run
    CHANGES[change][0](data)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert train(data, "--out", run, "--epochs", "2", "--resume", "--no-progress") == 0
    n = 17 if change == "added" else 15
    out = capsys.readouterr().out
    assert f"DATA: continuing on {data} as named (changed: {n} files, was 16; " in out, out
    assert f"data: {n} images of {data}" in out
    assert json.loads((run / MARKER).read_text())["data"]["files"] == n  # the data it now trains on
    assert train("--out", run, "--epochs", "3", "--resume", "--no-progress") == 0  # and a later resume checks against those
    assert "as named" not in capsys.readouterr().out


def test_resume_naming_the_same_data_or_a_moved_copy(relative_run, tmp_path, capsys):
    run, data = relative_run
    capsys.readouterr()
    assert train(data, "--out", run, "--epochs", "2", "--resume", "--no-progress") == 0
    assert f"DATA: continuing on {data} as named (unchanged since the run started)\n" in capsys.readouterr().out
    moved = tmp_path / "moved"
    data.rename(moved)
    assert train("--out", run, "--epochs", "3", "--resume", "--no-progress") == 2  # gone from where it was
    assert error_line(capsys) == f"simsiam train: error: {data}: no such file or folder"
    assert train(moved, "--out", run, "--epochs", "3", "--resume", "--no-progress") == 0
    assert f"DATA: continuing on {moved} as named, the same files as {data} where the run started\n" in capsys.readouterr().out
    _add(moved)  # a moved copy that is not the same files is other data
    other = tmp_path / "other"
    moved.rename(other)
    assert train(other, "--out", run, "--epochs", "4", "--resume", "--no-progress") == 2
    assert error_line(capsys).startswith(f"simsiam train: error: DATA: the run in {run} trains on {moved}, not {other}; ")


def test_val_is_recorded_and_checked_as_data_is(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    images(tmp_path / "data")
    images(tmp_path / "val", per_class=3, seed=3)
    run = tmp_path / "run"
    assert train("data", "--val", "val", "--out", run, *ONE_EPOCH) == 0
    assert json.loads((run / MARKER).read_text())["val"]["path"] == str(tmp_path / "val")
    _remove_val = tmp_path / "val" / "a" / "000.png"
    _remove_val.unlink()
    monkeypatch.chdir(tmp_path / "data")
    capsys.readouterr()
    assert train("--out", run, "--epochs", "2", "--resume", "--no-progress") == 2
    assert error_line(capsys).startswith(
        f"simsiam train: error: --val: {tmp_path / 'val'} has changed since the run started (5 files, was 6; "
    )
    assert train("--val", "../val", "--out", run, "--epochs", "2", "--resume", "--no-progress") == 0  # named again, from here
    assert f"--val: continuing on {tmp_path / 'val'} as named (changed: 5 files, was 6; " in capsys.readouterr().out


# -- item 9: --num-nodes without a launcher, and bounded waits ---------------------------------------


@pytest.mark.parametrize("nodes", ["2", "3"])
def test_num_nodes_without_a_launcher_is_refused_before_anything_is_written(nodes, no_launcher, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(images(tmp_path / "data"), "--out", out, "--num-nodes", nodes, "--devices", "1", *ONE_EPOCH) == 2
    assert error_line(capsys) == (
        f"simsiam train: error: --num-nodes {nodes}: no launcher started this process (none of WORLD_SIZE, LOCAL_RANK, NODE_RANK, "
        "SLURM_NTASKS is set), so the other nodes would never join; start the run on every node with torchrun or srun, "
        "or leave out --num-nodes"
    )
    assert not out.exists()


def test_num_nodes_typed_on_a_resume_without_a_launcher_is_refused(no_launcher, tmp_path, capsys):
    out = tmp_path / "run"
    assert train(images(tmp_path / "data"), "--out", out, *ONE_EPOCH) == 0
    before = snapshot(out)
    assert train("--out", out, "--epochs", "2", "--num-nodes", "2", "--resume", "--no-progress") == 2
    assert error_line(capsys).startswith("simsiam train: error: --num-nodes 2: no launcher started this process")
    assert {k: v for k, v in snapshot(out).items() if k != ".lock"} == before


LAUNCHED = {
    "SLURM": {"SLURM_NTASKS": "4", "SLURM_JOB_NAME": "train", "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"},
    "torchrun": {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0", "GROUP_RANK": "0", "LOCAL_WORLD_SIZE": "2"},
    "by hand": {"NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"},
}


@pytest.mark.parametrize("launcher", list(LAUNCHED))
def test_num_nodes_under_a_launcher_passes_the_check(launcher, no_launcher, monkeypatch):
    for name, value in LAUNCHED[launcher].items():
        monkeypatch.setenv(name, value)
    cfg = TrainConfig(num_nodes=2, devices=2, batch_size=8, accelerator="cpu")
    check_processes(cfg)  # no error: a launcher is there to start the other nodes
    if launcher != "by hand":  # the launcher's count of processes still has to agree
        with pytest.raises(Exception, match=r"that makes 6 process\(es\), but .* started 4"):
            check_processes(TrainConfig(num_nodes=3, devices=2, batch_size=12, accelerator="cpu"))


@pytest.mark.parametrize("value", ["0", "-5", "soon", "nan"])
def test_a_bad_ddp_timeout_is_one_line(value, no_launcher, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("NODE_RANK", "0")
    monkeypatch.setenv("SIMSIAM_DDP_TIMEOUT", value)
    out = tmp_path / "run"
    assert train(images(tmp_path / "data"), "--out", out, "--num-nodes", "2", "--devices", "1", *ONE_EPOCH) == 2
    assert error_line(capsys) == f"simsiam train: error: SIMSIAM_DDP_TIMEOUT: must be a number of seconds above 0, got {value!r}"
    assert not out.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rendezvous_whose_peers_never_come_ends_with_a_line_saying_what_it_waited_for(tmp_path):
    data = images(tmp_path / "data")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    env.update(LAUNCHED["torchrun"], WORLD_SIZE="2", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    env.update(PYTHONPATH=SRC, SIMSIAM_DDP_TIMEOUT="2", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "simsiam", "train", str(data), "--out", str(tmp_path / "run"), "--num-nodes", "2"]
    command += ["--devices", "1", "--accelerator", "cpu", *ONE_EPOCH]
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert lines[-1].startswith(
        f"simsiam train: error: --num-nodes 2 --devices 1: waited 2 s for the 2 processes of the run to meet at 127.0.0.1:{port} ("
    ), lines[-1]
    assert lines[-1].endswith("start every node's processes together (torchrun, srun), or set SIMSIAM_DDP_TIMEOUT to wait longer")
    assert time.monotonic() - started < 120
