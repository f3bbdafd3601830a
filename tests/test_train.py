"""`simsiam train` end to end, on tiny data, through the real command-line entry point."""

import csv
import json
import re

import pytest
import torch

from simsiam.cli import main
from simsiam.data.batches import ShardedBatches
from simsiam.train.module import lr_factor

from .conftest import TINY


def read_rows(run):
    with open(run / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def test_train_one_epoch_writes_the_run_folder(class_folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(class_folder), "--out", str(run), "--epochs", "1", *TINY]) == 0
    for name in (
        "config.yaml",
        "metrics.csv",
        "metrics.json",
        "training.png",
        "backbone.pt",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
    ):
        assert (run / name).exists(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    rows = read_rows(run)
    assert [r["epoch"] for r in rows] == ["1"] and float(rows[0]["images_per_s"]) > 0 and rows[0]["knn_top1"]
    result = json.loads((run / "metrics.json").read_text())
    assert result["knn_top1_random_init"] is not None and result["config"]["model"]["backbone"] == "resnet10-slim"
    figures = [v for v in result.values() if isinstance(v, float)]
    assert figures and all(len(repr(v).lstrip("-").replace(".", "").lstrip("0")) <= 6 for v in figures), result  # no float32 noise
    out = capsys.readouterr().out
    assert "holding out" in out and re.search(r"^kNN top-1 of the backbone at random init: \d\.\d{4}$", out, re.M), out
    # the backbone weights load into the same torchvision network
    from simsiam.model import build_backbone

    net, _ = build_backbone("resnet10-slim", small_images=True)
    net.load_state_dict(torch.load(run / "backbone.pt"), strict=True)


def test_a_default_run_shows_the_random_init_knn_and_its_bar_counts_epochs_as_its_lines_do(class_folder, tmp_path, capsys):
    run = tmp_path / "run"
    with_bar = [flag for flag in TINY if flag != "--no-progress"]
    assert main(["train", str(class_folder), "--out", str(run), "--epochs", "2", *with_bar]) == 0
    out = capsys.readouterr().out
    lines = "\n".join(line.strip() for line in re.split(r"[\r\n]+", out))  # the bar redraws itself after a \r
    # Printed before the bar is first drawn, where Lightning's own print would drop it.
    assert re.search(r"^kNN top-1 of the backbone at random init: \d\.\d{4}$", lines, re.M), out
    assert re.findall(r"^epoch (\d+/\d+): loss", lines, re.M) == ["1/2", "2/2"]
    assert set(re.findall(r"Epoch (\d+(?:/\d+)?)", out)) == {"1/2", "2/2"}  # the bar's descriptions, 1-based


def test_resume_continues_where_it_stopped(class_folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(class_folder), "--out", str(run), "--epochs", "1", *TINY]) == 0
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    capsys.readouterr()
    assert main(["train", str(class_folder), "--out", str(run), "--epochs", "2", "--resume", "--no-progress"]) == 0
    steps = first["global_step"]
    assert f"resuming from {run}/checkpoints/last.ckpt (epoch 2 of 2, 0 of its {steps} steps done)\n" in capsys.readouterr().out
    second = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert second["epoch"] == first["epoch"] + 1
    assert second["global_step"] == 2 * first["global_step"]
    assert [r["epoch"] for r in read_rows(run)] == ["1", "2"]


def test_existing_run_is_not_overwritten(class_folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(class_folder), "--out", str(run), "--epochs", "1", *TINY]) == 0
    assert main(["train", str(class_folder), "--out", str(run), "--epochs", "1", *TINY]) == 2
    assert "--resume" in capsys.readouterr().err


def test_bad_option_is_one_line_naming_it(class_folder, tmp_path, capsys):
    assert main(["train", str(class_folder), "--out", str(tmp_path / "r"), *TINY, "--batch-size", "1000", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.splitlines()[-1].startswith("simsiam train: error: --batch-size")


def test_lr_schedule_warms_up_then_decays_to_zero():
    assert lr_factor(0, 100, warmup_steps=10) == pytest.approx(0.1)
    assert lr_factor(9, 100, warmup_steps=10) == pytest.approx(1.0)
    values = [lr_factor(s, 100, 10) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:])) and values[-1] == pytest.approx(0.0)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_shards_cover_each_epoch_once(world):
    n, batch = 103, 4
    for epoch in range(2):
        seen = []
        for rank in range(world):
            sampler = ShardedBatches(n, batch, rank, world, seed=5)
            sampler.set_epoch(epoch)
            seen += torch.cat(list(sampler)).tolist()
        assert len(seen) == len(set(seen)) == (n // (batch * world)) * batch * world


def test_resume_refuses_other_data(class_folder, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(class_folder), "--out", str(run), "--epochs", "1", *TINY]) == 0
    other = tmp_path / "other"
    other.mkdir()
    assert main(["train", str(other), "--out", str(run), "--epochs", "2", "--resume", "--no-progress"]) == 2
    assert "DATA: the run in" in capsys.readouterr().err
