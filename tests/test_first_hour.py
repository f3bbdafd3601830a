"""A new user's first hour on a machine without a GPU: what a default run chooses and what the commands say."""

from __future__ import annotations

import pytest
import torch

from simsiam.cli import main

from .conftest import write_class_folder


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-sized default applies where no GPU is found")
def test_own_data_on_a_cpu_trains_the_cpu_network_and_the_commands_name_the_demo_fallback(tmp_path, capsys):
    folder = write_class_folder(tmp_path / "images", per_class=70, size=16)
    run = tmp_path / "run"
    assert main(["train", str(folder), "--epochs", "1", "--knn-every", "0", "--out", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "no GPU found: training the CPU-sized network (resnet10-tiny, batch 128; --recipe cpu); "
        "--recipe cifar10 or --recipe imagenet asks for the paper's setting"
    )
    assert any(line.startswith("model: resnet10-tiny") for line in out)
    # Named settings are the user's: no note, and the paper's network.
    assert main(["train", str(folder), "--epochs", "1", "--knn-every", "0", "--out", str(tmp_path / "r2"), "--quiet",
                 "--backbone", "resnet10-slim", "--batch-size", "8"]) == 0  # fmt: skip
    assert "CPU-sized" not in capsys.readouterr().out
    # embed with no DATA works on the bundled demo set, and says so.
    assert main(["embed", str(run), "--out", str(tmp_path / "e.npz"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no DATA given: using the bundled demo set") and "5000 embeddings" in out
