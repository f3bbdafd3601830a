"""--init-weights: a run starts its backbone from weights the user has (an export, a torchvision or timm state_dict, safetensors)."""

from __future__ import annotations

import pytest
import torch
import yaml

from simsiam.cli import main

from .conftest import write_class_folder

NET = ["--proj-dim", "32", "--pred-hidden-dim", "8", "--batch-size", "8", "--epochs", "1", "--no-progress", "--knn-every", "0"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A trained resnet10-slim run, its backbone exported as a torch file and as safetensors, and its images."""
    root = tmp_path_factory.mktemp("init")
    images = write_class_folder(root / "images", per_class=8, size=16)
    assert main(["train", str(images), "--backbone", "resnet10-slim", *NET, "--out", str(root / "run")]) == 0
    for fmt, name in (("torchvision", "b.pt"), ("safetensors", "b.safetensors")):
        assert main(["export", str(root / "run"), "--format", fmt, "--out", str(root / name), "--quiet"]) == 0
    return root, images


@pytest.mark.parametrize("name", ["b.pt", "b.safetensors"])
def test_a_run_starts_from_the_exported_backbone_and_records_it(exported, tmp_path, capsys, name):
    import lightning as L

    from simsiam.config import TrainConfig
    from simsiam.train import fit

    root, images = exported
    weights = torch.load(root / "b.pt", weights_only=True)
    seen = {}

    class FirstWeights(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            seen.update({k: v.detach().cpu().clone() for k, v in pl_module.model.backbone.state_dict().items()})

    cfg = TrainConfig.from_dict({"data": str(images), "out": str(tmp_path / "run"), "init_weights": str(root / name), "epochs": 1,
                                 "batch_size": 8, "knn_every": 0, "model": {"backbone": "resnet10-slim", "proj_dim": 32, "pred_hidden_dim": 8}})  # fmt: skip
    fit(cfg, progress=False, callbacks=[FirstWeights()])
    assert seen.keys() == weights.keys() and all(torch.equal(seen[k], weights[k]) for k in weights)
    out = capsys.readouterr().out
    assert f"init weights: {root / name} (sha256 " in out and "tensors loaded" in out
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["init_weights"] == str(root / name) and len(saved["init_weights_sha256"]) == 64


def test_weights_of_another_network_are_one_line_before_any_data_is_read(exported, tmp_path, capsys):
    root, images = exported
    out = tmp_path / "run"
    assert main(["train", str(images), "--backbone", "resnet10-tiny", *NET, "--init-weights", str(root / "b.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"simsiam train: error: --init-weights: {root / 'b.pt'} does not fit this backbone: ")
    assert "misshapen" in err and "--init-weights-nonstrict" in err
    assert not out.exists()
    (tmp_path / "junk.pt").write_bytes(b"not weights")
    assert (
        main(["train", str(images), "--backbone", "resnet10-slim", *NET, "--init-weights", str(tmp_path / "junk.pt"), "--out", str(out)])
        == 2
    )
    assert "--init-weights: " in capsys.readouterr().err and not out.exists()


def test_nonstrict_loads_what_fits_and_says_what_did_not(exported, tmp_path, capsys):
    root, images = exported
    state = torch.load(root / "b.pt", weights_only=True)
    state["layer9.weight"] = torch.zeros(3)  # a tensor this network does not have
    del state["conv1.weight"]
    torch.save({"state_dict": state}, tmp_path / "wrapped.pt")  # as training scripts save them
    flags = ["--backbone", "resnet10-slim", *NET, "--out", str(tmp_path / "run"), "--init-weights", str(tmp_path / "wrapped.pt")]
    assert main(["train", str(images), *flags]) == 2
    assert "1 missing (conv1.weight); 1 unexpected (layer9.weight)" in capsys.readouterr().err
    assert main(["train", str(images), *flags, "--init-weights-nonstrict"]) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("init weights: "))
    assert "not loaded: 1 missing (conv1.weight); 1 unexpected (layer9.weight)" in line


def test_a_torchvision_checkpoint_with_its_classifier_loads_strictly(tmp_path, capsys):
    import torchvision

    images = write_class_folder(tmp_path / "images", per_class=8, size=16)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")  # fc.weight, fc.bias included
    flags = ["--backbone", "resnet18", "--no-small-images", *NET, "--init-weights", str(tmp_path / "resnet18.pth")]
    assert main(["train", str(images), *flags, "--out", str(tmp_path / "run")]) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("init weights: "))
    assert "the removed classifier's 2 left out" in line and "not loaded" not in line
