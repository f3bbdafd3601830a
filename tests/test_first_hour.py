"""A new user's first hour on a machine without a GPU: what a default run chooses and what the commands say.

Each test goes through the command line, as a user would type it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from simsiam.cli import main

from .conftest import write_class_folder

SRC = Path(__file__).resolve().parents[1] / "src"
ON_CPU = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-sized default applies where no GPU is found")
QUICK = ["--epochs", "1", "--knn-every", "0", "--no-progress"]


def _config(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


@ON_CPU
def test_own_data_on_a_cpu_trains_the_cpu_network_and_the_commands_name_the_demo_fallback(tmp_path, capsys):
    folder = write_class_folder(tmp_path / "images", per_class=70, size=16)
    run = tmp_path / "run"
    assert main(["train", str(folder), *QUICK, "--out", str(run)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "no GPU found: training the CPU-sized network resnet10-tiny (--recipe cpu); "
        "--backbone NAME, or --recipe cifar10 or imagenet for the paper's setting, train another"
    )
    assert any(line.startswith("model: resnet10-tiny") for line in out)
    # A named backbone is the user's: no note, and that network.
    assert main(["train", str(folder), *QUICK, "--out", str(tmp_path / "r2"), "--backbone", "resnet10-slim", "--batch-size", "8"]) == 0
    assert "CPU-sized" not in capsys.readouterr().out
    # embed with no DATA works on the bundled demo set, and says so.
    assert main(["embed", str(run), "--out", str(tmp_path / "e.npz"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no DATA given: using the bundled demo set") and "5000 embeddings" in out


@ON_CPU
def test_a_batch_size_alone_keeps_the_cpu_network(tmp_path, capsys):
    folder = write_class_folder(tmp_path / "images", per_class=12, size=16)
    assert main(["train", str(folder), *QUICK, "--batch-size", "16", "--out", str(tmp_path / "run")]) == 0
    assert "the CPU-sized network resnet10-tiny" in capsys.readouterr().out
    cfg = _config(tmp_path / "run")
    assert cfg["model"]["backbone"] == "resnet10-tiny" and cfg["batch_size"] == 16


@ON_CPU
@pytest.mark.parametrize("amx", [False, True])
def test_cpu_training_and_features_are_float32_with_or_without_bf16_units(tmp_path, capsys, monkeypatch, amx):
    """float32 on every CPU: bf16 cost 4.4 kNN points on the demo with AMX, at the same speed (config.layers.default_precision)."""
    monkeypatch.setattr("simsiam.system.cpu_has_bf16_units", lambda: amx)
    monkeypatch.setattr("simsiam.train.run.cpu_has_bf16_units", lambda: amx)  # what the header says of this CPU
    folder = write_class_folder(tmp_path / "images", per_class=12, size=16)
    run = tmp_path / "run"
    assert main(["train", str(folder), *QUICK, "--batch-size", "8", "--out", str(run)]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("training:"))
    assert "32-true on CPU (" in header and ("bf16 matrix units (AMX), but" in header) == amx
    assert _config(run)["precision"] == "32-true"
    # Features for kNN and embed: float32 too, the very values of a float32 forward pass.
    assert main(["embed", str(run), str(folder), "--out", str(tmp_path / "e.npz"), "--no-progress"]) == 0
    from simsiam import load_checkpoint
    from simsiam.data import load
    from simsiam.evaluate import normalize_images

    model, cfg = load_checkpoint(run)
    with torch.no_grad():
        expected = model.eval().features(normalize_images(load(folder, cfg.image_size, progress=False).images))
    import numpy as np

    with np.load(tmp_path / "e.npz") as z:
        assert torch.allclose(torch.from_numpy(z["embedding"]), expected, atol=1e-5)


def test_a_finished_run_resumed_says_so_names_epochs_and_changes_nothing(tmp_path, class_folder, capsys):
    run = tmp_path / "run"
    tiny = ["--backbone", "resnet10-slim", "--proj-dim", "32", "--pred-hidden-dim", "8", "--batch-size", "8", "--no-progress"]
    assert main(["train", str(class_folder), "--epochs", "1", "--out", str(run), *tiny]) == 0
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "has finished: it trained 1 of its 1 epochs; nothing changed" in out and "--resume --epochs" in out
    assert "epoch 2 of 1" not in out
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before
    # Killed after its last checkpoint, before its results were written: the resume writes them, training nothing.
    (run / "backbone.pt").unlink()
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "all 1 epochs are trained; writing the run's results" in out and (run / "backbone.pt").is_file()
    # With more epochs it trains on.
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert "epoch 2/2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, line",
    [
        (["train", "--epoch", "2"], "simsiam train: error: --epoch: not an option; did you mean --epochs? (see simsiam train --help)"),
        (["train", "--batchsize", "16"], "simsiam train: error: --batchsize: not an option; did you mean --batch-size?"),
        (["train", "--lr=0.1", "--knnk", "3"], "simsiam train: error: --knnk: not an option; did you mean --knn-k?"),
        (["embed", "run", "--outt", "e.npz"], "simsiam embed: error: --outt: not an option; did you mean --out?"),
        (["export", "run", "--format", "onnx", "--qiet"], "simsiam export: error: --qiet: not an option; did you mean --quiet?"),
    ],
)
def test_abbreviations_are_refused_and_a_mistyped_flag_names_the_closest(capsys, argv, line):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(line)


def test_a_mistyped_config_key_names_the_closest_before_data_is_read(tmp_path, class_folder, capsys, monkeypatch):
    import simsiam.data.folder
    import simsiam.data.sources

    # Neither scanned nor decoded: every check of the flags, the file and --out comes first.
    monkeypatch.setattr(simsiam.data.folder, "list_images", lambda *a, **k: pytest.fail("DATA was scanned"))
    monkeypatch.setattr(simsiam.data.sources, "load", lambda *a, **k: pytest.fail("DATA was read"))
    file = tmp_path / "run.yaml"
    for text, said in [
        ("batchsize: 16\n", "run.yaml: unknown key 'batchsize'; did you mean batch_size?"),
        ("optim:\n  base-lr: 0.1\n", "run.yaml: optim: unknown key 'base-lr'; did you mean base_lr?"),
    ]:
        file.write_text(text)
        assert main(["train", str(class_folder), "--config", str(file), "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err
    (tmp_path / "a-file").write_text("x")
    assert main(["train", str(class_folder), "--out", str(tmp_path / "a-file")]) == 2
    assert "--out" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_quiet_prints_nothing_but_warnings_and_errors_in_every_command(tmp_path, class_folder, capsys, monkeypatch):
    monkeypatch.setenv("SIMSIAM_CACHE", str(tmp_path / "fresh-cache"))  # so the image cache is built, and its line would show
    run = tmp_path / "run"
    tiny = ["--backbone", "resnet10-slim", "--proj-dim", "32", "--pred-hidden-dim", "8", "--batch-size", "8", "--knn-k", "3"]
    commands = [
        ["train", str(class_folder), "--epochs", "1", "--out", str(run), *tiny],
        [
            "evaluate",
            str(run),
            "--train",
            str(class_folder),
            "--test",
            str(class_folder),
            "--knn-k",
            "3",
            "--out",
            str(tmp_path / "k.json"),
        ],
        ["embed", str(run), str(class_folder), "--out", str(tmp_path / "e.npz")],
        ["neighbors", str(run), str(class_folder), "--num-queries", "2", "--k", "2", "--out", str(tmp_path / "n.png")],
        ["map", str(run), str(class_folder), "--method", "pca", "--out", str(tmp_path / "m.png")],
        ["export", str(run), "--format", "torchvision", "--out", str(tmp_path / "b.pt")],
    ]
    for argv in commands:
        assert main([*argv, "--quiet"]) == 0, argv[0]
        out, err = capsys.readouterr()
        assert out == "" and err == "", (argv[0], out, err)
    assert all((tmp_path / name).exists() for name in ("k.json", "e.npz", "n.png", "m.png", "b.pt"))


def test_version_and_help_load_no_torch():
    probe = (
        "import sys\n"
        "from simsiam.cli import main\n"
        "for argv in (['--version'], ['--help'], ['train', '--help'], ['evaluate', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, argv\n"
        "print('torch' in sys.modules, 'lightning' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    from simsiam import __version__

    assert done.stdout.startswith(f"simsiam {__version__}\n")
    assert done.stdout.strip().endswith("False False")  # help and version import neither: they take well under a second


def test_nothing_is_written_into_data_by_default(tmp_path, monkeypatch, capsys):
    photos = write_class_folder(tmp_path / "photos", per_class=12, size=16)
    before = sorted(p.relative_to(photos) for p in photos.rglob("*"))
    monkeypatch.chdir(photos)  # cd photos && simsiam train .
    tiny = ["--backbone", "resnet10-slim", "--proj-dim", "32", "--pred-hidden-dim", "8", "--batch-size", "8", "--no-progress"]
    assert main(["train", ".", "--epochs", "1", *tiny]) == 0
    assert f"run folder: {tmp_path / 'runs' / 'photos'}" in capsys.readouterr().out
    assert sorted(p.relative_to(photos) for p in photos.rglob("*")) == before
    assert (tmp_path / "runs" / "photos" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("name, how", [("photos.zip", "unzip"), ("photos.tar.gz", "tar -xf"), ("photos.tar", "tar -xf")])
def test_an_archive_as_data_is_one_line_saying_to_unpack_it(tmp_path, capsys, name, how):
    archive = tmp_path / name
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        z.writestr("a/x.png", b"not read")
    archive.write_bytes((tmp_path / "a.zip").read_bytes())
    assert main(["train", str(archive), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"simsiam train: error: DATA: {archive} is an archive: unpack it first ({how} {archive})")
    assert not (tmp_path / "run").exists()


@ON_CPU
@pytest.mark.parametrize(
    "flags, stem",
    [
        ([], "stem: the ImageNet stem (7x7 stride-2 conv1, max-pool): the cpu recipe's"),
        (["--backbone", "resnet10-slim"], "stem: the small-image stem (3x3 stride-1 conv1, no max-pool): 16 px images, 64 or less"),
        (
            ["--backbone", "resnet10-slim", "--no-small-images"],
            "stem: the ImageNet stem (7x7 stride-2 conv1, max-pool): set by the options",
        ),
    ],
)
def test_the_header_says_which_stem_and_why(tmp_path, capsys, flags, stem):
    folder = write_class_folder(tmp_path / "images", per_class=12, size=16)
    small = ["--proj-dim", "32", "--pred-hidden-dim", "8", "--batch-size", "8"]
    assert main(["train", str(folder), *QUICK, *small, *flags, "--out", str(tmp_path / "run")]) == 0
    assert any(line.startswith(stem) for line in capsys.readouterr().out.splitlines()), stem
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["config"]["model"]["small_images"] == ("small-image" in stem)
