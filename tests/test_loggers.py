"""--logger: the run's metrics go to Lightning's CSV, W&B (offline) and MLflow (a file store) loggers, read back here."""

from __future__ import annotations

import csv

import pytest

from simsiam.cli import main

from .conftest import write_class_folder

TINY = ["--backbone", "resnet10-slim", "--proj-dim", "32", "--pred-hidden-dim", "8", "--batch-size", "8", "--knn-k", "3", "--no-progress"]


def test_a_run_logs_loss_lr_z_std_and_knn_to_csv_wandb_and_mlflow(tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    monkeypatch.setenv("WANDB_MODE", "offline")  # no network: W&B writes its run to disk
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    images = write_class_folder(tmp_path / "images", per_class=12, size=16)
    run = tmp_path / "run"
    loggers = ["--logger", "csv", "--logger", "wandb", "--logger", "mlflow", "--logger-option", "mlflow.experiment=tiles"]
    assert main(["train", str(images), "--epochs", "2", *TINY, *loggers, "--out", str(run)]) == 0
    wanted = {"train/loss", "train/lr", "train/z_std", "knn_top1"}

    with open(run / "csv" / "metrics.csv") as fh:  # Lightning's CSVLogger
        columns = set(next(csv.reader(fh)))
    assert wanted <= columns

    (offline,) = (run / "wandb").glob("offline-run-*/run-*.wandb")  # W&B's offline run, as `wandb sync` would upload it
    assert wanted <= _wandb_history_keys(offline)

    from mlflow.tracking import MlflowClient

    client = MlflowClient((run / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("tiles")
    (found,) = client.search_runs([experiment.experiment_id])
    assert wanted <= set(found.data.metrics) and found.info.run_name == "run"
    assert not (run / "tensorboard").exists()  # only the loggers named


def _wandb_history_keys(path) -> set[str]:
    """The metric names in a W&B offline run file: a LevelDB-style log (32 KiB blocks, 7-byte record headers) of protobuf records."""
    from wandb.proto import wandb_internal_pb2

    raw, pos, pending, keys = path.read_bytes(), 7, b"", set()  # the file opens with a 7-byte W&B header
    while pos + 7 <= len(raw):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(raw[pos + 4 : pos + 6], "little"), raw[pos + 6]
        pending += raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                keys |= {item.key or "/".join(item.nested_key) for item in record.history.item}
    return keys


@pytest.mark.parametrize(
    "flags, said",
    [
        (["--logger", "wandbb"], "--logger: unknown logger 'wandbb'; did you mean wandb?"),
        (["--logger-option", "wandb.projet=x"], "--logger-option: unknown logger setting 'wandb.projet'; did you mean wandb.project?"),
        (["--logger-option", "wandb.project"], "--logger-option: expected KEY=VALUE, got 'wandb.project'"),
    ],
)
def test_a_bad_logger_is_one_line_before_any_data_is_read(tmp_path, capsys, flags, said):
    assert main(["train", str(tmp_path / "no-such-data"), *flags, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err and not (tmp_path / "run").exists()


def test_a_missing_logger_package_names_the_extra_to_install(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    images = write_class_folder(tmp_path / "images", per_class=4, size=16)
    assert main(["train", str(images), "--logger", "mlflow", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--logger: mlflow needs the mlflow package: pip install 'simsiam[mlflow]'" in err and not (tmp_path / "run").exists()
