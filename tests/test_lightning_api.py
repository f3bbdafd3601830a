"""SimSiamModule in a user's own Lightning Trainer: plain options, any DataLoader of uint8 images, checkpoints the commands take."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from simsiam.cli import main
from simsiam.errors import ConfigError
from simsiam.lightning import OnlineKnn, SimSiamDataModule, SimSiamModule

from .conftest import write_class_folder

SMALL = dict(backbone="resnet10-tiny", image_size=16, proj_dim=32, pred_hidden_dim=8)


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    options = dict(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    return L.Trainer(default_root_dir=str(tmp_path), enable_checkpointing=False, **{**options, **kwargs})


def test_your_own_trainer_trains_it_on_any_uint8_loader_and_the_commands_take_its_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    labels = torch.randint(0, 2, (64,))
    loader = DataLoader(TensorDataset(images, labels), batch_size=16, shuffle=True, drop_last=True)  # (images, labels) batches
    module = SimSiamModule(**SMALL, base_lr=0.1, blur_p=0.0)
    before = [p.detach().clone() for p in module.parameters()]
    trainer = _trainer(tmp_path)
    trainer.fit(module, loader)
    assert trainer.global_step == 4
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))
    lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]
    assert all(lr == 0 for lr in lrs)  # the cosine schedule was sized from the Trainer's 4 steps, and has ended
    ckpt = tmp_path / "mine.ckpt"
    trainer.save_checkpoint(ckpt)
    capsys.readouterr()
    assert main(["export", str(ckpt), "--format", "torchvision", "--out", str(tmp_path / "b.pt"), "--quiet"]) == 0
    folder = write_class_folder(tmp_path / "images", per_class=4, size=16)
    assert main(["embed", str(ckpt), str(folder), "--out", str(tmp_path / "e.npz"), "--quiet"]) == 0
    import numpy as np

    with np.load(tmp_path / "e.npz") as z:
        assert z["embedding"].shape == (8, 128)


def test_a_plain_tensor_loader_trains_too(tmp_path):
    loader = DataLoader(torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8), batch_size=8, drop_last=True)
    trainer = _trainer(tmp_path)
    trainer.fit(SimSiamModule(**SMALL), loader)
    assert trainer.global_step == 4


@pytest.mark.parametrize(
    "options, said",
    [
        (dict(SMALL, bakbone="resnet18"), "bakbone: not an option of SimSiamModule; did you mean backbone?"),
        ({"backbone": "resnet10-tiny"}, "image_size: SimSiamModule needs the size of the views"),
        (dict(SMALL, base_lr=-1.0), "base_lr: "),
        (dict(SMALL, backbone="resnet1000"), "backbone: unknown backbone 'resnet1000'"),
    ],
)
def test_its_options_are_checked_as_the_command_line_checks_them(options, said):
    with pytest.raises(ConfigError) as e:
        SimSiamModule(**options)
    assert str(e.value).startswith(said)


def test_the_data_module_and_the_online_knn_in_your_own_trainer(tmp_path, capsys):
    folder = write_class_folder(tmp_path / "images", per_class=12, size=16)
    data = SimSiamDataModule(str(folder), batch_size=8, image_size=16, progress=False)
    data.setup("fit")
    bank, query = data.dataset.split(0.25)
    L.seed_everything(0, verbose=False)
    trainer = _trainer(tmp_path, callbacks=[OnlineKnn(bank, (query.images, query.labels), k=5)])
    trainer.fit(SimSiamModule(**SMALL, batch_size=8), data)
    assert 0 <= float(trainer.callback_metrics["knn_top1"]) <= 1
    out = capsys.readouterr().out
    assert "kNN top-1 of the backbone at random init: " in out and "epoch 1: kNN top-1 " in out
    assert "held in memory" in out  # the batch source said where the images live, as simsiam train does


def test_simsiam_train_and_your_own_trainer_give_the_same_losses(tmp_path, capsys):
    """One training path: the same module, data module, seed and options give the same epoch loss."""
    import csv

    folder = tmp_path / "flat"
    write_class_folder(tmp_path / "classes", per_class=16, size=16)
    folder.mkdir()
    for f in sorted((tmp_path / "classes").rglob("*.png")):
        f.rename(folder / f"{f.parent.name}-{f.name}")  # unlabeled: no images held out for a kNN
    flags = ["--backbone", "resnet10-tiny", "--proj-dim", "32", "--pred-hidden-dim", "8", "--batch-size", "8", "--epochs", "2"]
    assert main(["train", str(folder), *flags, "--out", str(tmp_path / "run"), "--quiet"]) == 0
    with open(tmp_path / "run" / "metrics.csv") as fh:
        cli = [float(row["loss"]) for row in csv.DictReader(fh)]

    class Losses(L.Callback):
        def __init__(self):
            self.steps = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.steps.append(float(outputs["loss"]))

    losses = Losses()
    L.seed_everything(0, verbose=False)  # simsiam train seeds with --seed (0) before it builds the module
    module = SimSiamModule(backbone="resnet10-tiny", image_size=16, proj_dim=32, pred_hidden_dim=8, batch_size=8, epochs=2)
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[losses])
    trainer.fit(module, SimSiamDataModule(str(folder), batch_size=8, image_size=16, progress=False))
    per_epoch = len(losses.steps) // 2
    mine = [sum(losses.steps[i * per_epoch : (i + 1) * per_epoch]) / per_epoch for i in range(2)]
    assert mine == pytest.approx(cli, abs=1e-5)
