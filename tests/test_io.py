"""The io layer: whole-or-absent files, the disk cache, eval mode.

Every output of the tool goes through atomic_write; these tests break writes for
real (a file-size limit, a SIGKILL) in child processes and check that the
previous file stays, that the error names the file, and that no temporary file
is left behind.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import simsiam.files
from simsiam.files import CacheWarning, atomic_write, eval_mode, load_cached, partial_path, remove_partial_files, save_cached

IO_MODULE = Path(simsiam.files.__file__)

# A child process that lowers its file-size limit (RLIMIT_FSIZE: writes past it fail with
# EFBIG, as they fail with ENOSPC on a full disk) and writes each kind of output over an old file.
FILE_SIZE_LIMIT = textwrap.dedent(
    """
    import json, resource, sys, torch
    from pathlib import Path
    from simsiam.data import ImageSet
    from simsiam.explore import plot_training, write_embeddings
    from simsiam.files import save_torch_atomic, write_json
    from simsiam.model import SimSiam
    from simsiam.config import TrainConfig, resolve
    from simsiam.export import export_onnx, export_torchvision

    out = Path(sys.argv[1])
    images = ImageSet(torch.zeros(2000, 3, 8, 8, dtype=torch.uint8), None, [], [f"p{i}.png" for i in range(2000)], "x")
    feats = torch.randn(2000, 32)
    rows = [{"epoch": i, "loss": -0.5, "z_std": 0.02, "lr": 0.1, "knn_top1": 0.5} for i in range(1, 9)]
    cfg = resolve(TrainConfig.from_dict({"model": {"backbone": "resnet10-slim", "proj_dim": 16}}), 16, on_gpu=False)
    model = SimSiam(backbone="resnet10-slim", small_images=True, proj_dim=16).eval()
    cases = {
        "e.npz": lambda p: write_embeddings(p, feats, images),
        "e.parquet": lambda p: write_embeddings(p, feats, images),
        "t.pt": lambda p: save_torch_atomic({"w": torch.randn(50000)}, p),
        "m.json": lambda p: write_json(p, {"x": list(range(50000))}),
        "training.png": lambda p: plot_training(rows, p, 64, 0.3),
        "backbone.pt": lambda p: export_torchvision(model, cfg, p),
        "backbone.onnx": lambda p: export_onnx(model, cfg, p),
    }
    if "--no-onnx" in sys.argv:
        del cases["backbone.onnx"]
    results = {}
    for name, write in cases.items():
        path = out / name
        path.write_text("old")
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16000, hard))
        try:
            write(path)
            results[name] = "written"
        except OSError as e:
            results[name] = [e.errno, e.filename, str(e)]
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    print(json.dumps(results))
    """
)


def test_every_output_kept_whole_when_a_write_fails(tmp_path):
    """Embeddings, exports, torch files, JSON and PNGs: EFBIG mid-write leaves the old file and names the new one."""
    try:
        import onnx  # noqa: F401

        extra = []
    except ImportError:
        extra = ["--no-onnx"]
    script = tmp_path / "write.py"
    script.write_text(FILE_SIZE_LIMIT)
    done = subprocess.run([sys.executable, str(script), str(tmp_path), *extra], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results) == 7 - len(extra)
    for name, result in results.items():
        assert result != "written", f"{name}: the write was expected to fail past the file-size limit"
        code, filename, text = result
        assert code == errno.EFBIG and filename == str(tmp_path / name), (name, result)
        assert (tmp_path / name).read_text() == "old", f"{name}: the previous file was replaced"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_a_killed_writer_leaves_the_old_file_and_its_partial_is_cleaned_up(tmp_path):
    target = tmp_path / "embeddings.npz"
    target.write_text("old")
    # simsiam/io.py needs only the standard library at import: loaded alone, the child starts in a blink.
    child = textwrap.dedent(
        f"""
        import importlib.util, time
        spec = importlib.util.spec_from_file_location("simsiam_io", {str(IO_MODULE)!r})
        io = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(io)
        with io.atomic_write({str(target)!r}) as fh:
            fh.write(b"x" * 100000)
            fh.flush()
            print("writing", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        partial = partial_path(target, pid=proc.pid)
        assert partial.exists()  # unique per process: the name carries the writer's pid
        assert remove_partial_files(tmp_path) == []  # its writer is alive: left alone
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert target.read_text() == "old"
    assert remove_partial_files(tmp_path) == [partial] and not partial.exists()


def test_atomic_write_error_names_the_target_not_the_temporary_file(tmp_path):
    target = tmp_path / "missing-folder" / "out.json"
    with pytest.raises(FileNotFoundError) as info, atomic_write(target, "w") as fh:
        fh.write("never")
    assert info.value.filename == str(target) and ".partial" not in str(info.value)


def test_partial_names_differ_between_processes(tmp_path):
    assert partial_path(tmp_path / "a.ckpt").name == f".a.ckpt.{os.getpid()}.partial"
    assert partial_path(tmp_path / "a.ckpt", pid=1) != partial_path(tmp_path / "a.ckpt")


def _caught(fn):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in record if issubclass(w.category, CacheWarning)]


def test_cache_entries_of_the_wrong_structure_or_damaged_are_named_and_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMSIAM_CACHE", str(tmp_path / "cache"))
    is_pair = lambda obj: isinstance(obj, dict) and set(obj) == {"a", "b"}  # noqa: E731
    file = save_cached("x/one.pt", {"a": torch.ones(2), "b": torch.zeros(1)}, "test cache")
    assert file == tmp_path / "cache" / "x" / "one.pt"
    loaded, said = _caught(lambda: load_cached("x/one.pt", is_pair, "test cache"))
    assert torch.equal(loaded["a"], torch.ones(2)) and said == []
    assert _caught(lambda: load_cached("x/none.pt", is_pair, "test cache")) == (None, [])  # absent: silent
    torch.save({"a": torch.ones(2)}, file)  # the wrong structure
    loaded, said = _caught(lambda: load_cached("x/one.pt", is_pair, "test cache"))
    assert loaded is None and len(said) == 1 and str(file) in said[0] and "rebuilding" in said[0]
    file.write_bytes(file.read_bytes()[:50])  # truncated
    loaded, said = _caught(lambda: load_cached("x/one.pt", is_pair, "test cache"))
    assert loaded is None and len(said) == 1 and str(file) in said[0]


def test_a_cache_that_cannot_be_written_only_warns(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")  # fails for root too, unlike a chmod
    monkeypatch.setenv("SIMSIAM_CACHE", str(blocker))
    file, said = _caught(lambda: save_cached("one.pt", torch.ones(3), "test cache"))
    assert file is None and len(said) == 1 and "could not write the test cache" in said[0] and "not-a-folder" in said[0]


def test_cache_files_are_read_weights_only(tmp_path, monkeypatch):
    """A cache file that would run code is refused like any damaged one."""
    monkeypatch.setenv("SIMSIAM_CACHE", str(tmp_path))
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"a": Evil()}, tmp_path / "evil.pt")
    loaded, said = _caught(lambda: load_cached("evil.pt", lambda obj: True, "test cache"))
    assert loaded is None and len(said) == 1 and not marker.exists()


def test_eval_mode_restores_each_submodule_own_mode():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2), torch.nn.Dropout())
    net.train()
    net[1].eval()  # a frozen BN inside a training model
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert net.training and net[0].training and not net[1].training and net[2].training
    with pytest.raises(RuntimeError), eval_mode(net):
        raise RuntimeError("restored on errors too")
    assert net.training and not net[1].training


def test_show_path_keeps_one_line():
    from simsiam.files import show_path

    name = os.fsdecode(b"a\nb\rc\x1b\xff.png")
    assert show_path(name) == "a\\nb\\rc\\x1b\\xff.png"
    assert show_path(Path("plain/name.png")) == "plain/name.png"
