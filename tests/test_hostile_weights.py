"""Hostile checkpoints (issue 21, items 5 and 7): bad weights, bad stored configs, files that are not checkpoints.

One tiny run is trained per module; each case writes a damaged copy of its
checkpoint, and every command that reads weights (embed, evaluate's kNN, export,
neighbors, map, and train --resume) must exit 2 with one line that names the
file and the tensor or option at fault, writing nothing.
"""

from __future__ import annotations

import copy
import os
import pickle
import random
import re
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from simsiam.checkpoint import load_checkpoint
from simsiam.cli import main
from simsiam.errors import CheckpointError
from simsiam.evaluate import dense_labels, knn_accuracy, knn_predict, linear_probe

from .conftest import TINY, write_class_folder

CONV = "model.encoder.backbone.conv1.weight"  # the first weight of the backbone
BN_VAR = "model.encoder.backbone.bn1.running_var"  # a buffer, not a parameter
COUNT = "model.encoder.backbone.bn1.num_batches_tracked"  # an integer buffer


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run folder, image folder): 2 classes x 6 images of 16 px, one epoch of resnet10-slim."""
    root = tmp_path_factory.mktemp("weights")
    images = write_class_folder(root / "images", per_class=6, size=16)
    assert main(["train", str(images), "--out", str(root / "run"), "--epochs", "1", *TINY]) == 0
    return root / "run", images


def _state(run) -> dict:
    return torch.load(run[0] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _set(key: str, make):
    def edit(state):
        state["state_dict"][key] = make(state["state_dict"][key])

    return edit


def _filled(value: float):
    return lambda t: torch.full(t.shape, value, dtype=t.dtype)


def _one(value: float):
    def make(t):
        t = t.contiguous().clone()
        t.view(-1)[len(t.view(-1)) // 2] = value
        return t

    return make


def _config(edit):
    def apply(state):
        edit(state["hyper_parameters"]["config"])

    return apply


def _drop(key):
    return lambda state: state["state_dict"].pop(key)


def _add(key, value):
    return lambda state: state["state_dict"].__setitem__(key, value)


# case -> (edit of the loaded checkpoint, what the one line says after the file name)
WEIGHTS = {
    "all NaN": (_set(CONV, _filled(float("nan"))), f"weight {CONV} is not finite: 864 NaN and 0 infinite of its 864 values"),
    "one NaN": (_set(CONV, _one(float("nan"))), f"weight {CONV} is not finite: 1 NaN and 0 infinite"),
    "one inf": (_set(CONV, _one(float("inf"))), f"weight {CONV} is not finite: 0 NaN and 1 infinite"),
    "-inf in a BN buffer": (_set(BN_VAR, _one(float("-inf"))), f"weight {BN_VAR} is not finite: 0 NaN and 1 infinite"),
    "float64 beyond float32": (_set(CONV, lambda t: torch.full(t.shape, 1e300, dtype=torch.float64)), f"weight {CONV} is not finite"),
    "int64 for float": (_set(CONV, lambda t: t.long()), f"weight {CONV} is int64, where the model has floating-point numbers (float32)"),
    "int32 for float": (_set(CONV, lambda t: t.int()), f"weight {CONV} is int32, where the model has floating-point"),
    "bool for float": (_set(BN_VAR, lambda t: t > 0), f"weight {BN_VAR} is bool, where the model has floating-point"),
    "float for int": (_set(COUNT, lambda t: t.double()), f"weight {COUNT} is float64, where the model has integer numbers (int64)"),
    "wrong shape": (_set(CONV, lambda t: t[:1]), f"weight {CONV} is (1, 3, 3, 3), the model's is (32, 3, 3, 3)"),
    "transposed": (_set(CONV, lambda t: t.transpose(0, 1)), f"weight {CONV} is (3, 32, 3, 3), the model's is (32, 3, 3, 3)"),
    "scalar": (_set(CONV, lambda t: torch.tensor(1.0)), f"weight {CONV} is (), the model's is (32, 3, 3, 3)"),
    "not a tensor": (_set(CONV, lambda t: t.tolist()), f"weight {CONV} is a list, not a tensor"),
    "sparse": (_set(BN_VAR, lambda t: t.to_sparse()), f"weight {BN_VAR} is a torch.sparse_coo tensor"),
    "missing key": (_drop(CONV), f"the weights are from another model than its config describes: 1 weights missing (e.g. {CONV})"),
    "extra key": (_add("model.extra.weight", torch.zeros(3)), "1 unexpected weights (e.g. model.extra.weight)"),
    "extra key outside the model": (_add("spare", torch.zeros(3)), "1 unexpected weights (e.g. spare)"),
}

CONFIGS = {
    "image size of millions": (_config(lambda c: c.update(image_size=10**7)), "image_size: must be in [8, 1024], got 10000000"),
    "negative width": (
        _config(lambda c: c["model"].update(proj_dim=-64)),
        "model.proj_dim: must be at least 1, got -64",
    ),
    "zero hidden width": (_config(lambda c: c["model"].update(pred_hidden_dim=0)), "model.pred_hidden_dim: must be at least 1, got 0"),
    "a string for a number": (_config(lambda c: c.update(image_size="16")), "config: image_size: expected int or null, got '16'"),
    "a float for an int": (_config(lambda c: c["model"].update(channels=3.5)), "config: model.channels: expected int or null, got 3.5"),
    "unknown key": (_config(lambda c: c.update(backdoor=1)), "config: unknown key 'backdoor'"),
    "unknown key in a section": (_config(lambda c: c["model"].update(depth=5)), "config: model: unknown key 'depth'"),
    "a section that is not a mapping": (_config(lambda c: c.update(model=[1, 2])), "config: model: expected a mapping, got [1, 2]"),
    "NaN mean": (_config(lambda c: c.update(mean=[float("nan")] * 3)), "mean: must be finite numbers"),
    "wrong number of channels in std": (_config(lambda c: c.update(std=[0.2, 0.2])), "std: needs one value per channel: 3, got 2"),
    "unknown backbone": (_config(lambda c: c["model"].update(backbone="resnet_evil")), "model.backbone: unknown backbone 'resnet_evil'"),
    "channels beyond the limit": (_config(lambda c: c["model"].update(channels=10**6)), "model.channels: must be in [1, 512]"),
}
REFUSED = "the config stored in the checkpoint is refused: "


class Marker:
    """Unpickling this creates the file ``path``: no such file may appear when a checkpoint is read."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _evil(kind: str, file: Path, marker: Path, good: Path) -> None:
    if kind == "a plain pickle":  # protocol 2, as torch's legacy (non-zip) format writes
        file.write_bytes(pickle.dumps({"state_dict": Marker(marker), "hyper_parameters": {"config": {}}}, protocol=2))
    elif kind == "a plain pickle, protocol 5":
        file.write_bytes(pickle.dumps({"state_dict": Marker(marker), "hyper_parameters": {"config": {}}}, protocol=5))
    elif kind == "torch.save of an object":
        torch.save({"state_dict": {"x": Marker(marker)}, "hyper_parameters": {"config": {}}}, file)
    elif kind == "random bytes":
        file.write_bytes(random.Random(1).randbytes(10_000))
    elif kind == "a zip that is not torch's":
        with zipfile.ZipFile(file, "w") as z:
            z.writestr("hello.txt", "not a checkpoint")
    elif kind == "a zip with torch's names and a pickle":
        with zipfile.ZipFile(file, "w") as z:
            z.writestr("archive/data.pkl", pickle.dumps(Marker(marker), protocol=2))
            z.writestr("archive/version", "3\n")
    elif kind == "truncated to half":
        blob = good.read_bytes()
        file.write_bytes(blob[: len(blob) // 2])
    elif kind == "truncated to 10 bytes":
        file.write_bytes(good.read_bytes()[:10])
    elif kind == "empty":
        file.write_bytes(b"")
    elif kind == "a bare state_dict":
        torch.save({"conv1.weight": torch.zeros(2, 3, 3, 3)}, file)
    elif kind == "hyper_parameters not a mapping":
        torch.save({"state_dict": {}, "hyper_parameters": [1, 2]}, file)
    elif kind == "a tensor":
        torch.save(torch.zeros(3), file)
    elif kind == "a tensor that declares 64 GiB":
        _declare_huge(file)


def _declare_huge(file: Path) -> None:
    """A torch zip whose pickle says its 4-value tensor and storage hold 2**34 values: nothing may allocate that."""
    torch.save({"w": torch.zeros(4)}, file)
    with zipfile.ZipFile(file) as z:
        records = {name: z.read(name) for name in z.namelist()}
    huge = b"\x8a\x05" + (2**34).to_bytes(5, "little")  # LONG1: 2**34
    name = next(n for n in records if n.endswith("data.pkl"))
    pickled = records[name]
    assert pickled.count(b"K\x04") == 2  # the storage's size and the shape (BININT1 4)
    records[name] = pickled.replace(b"K\x04", huge)
    with zipfile.ZipFile(file, "w") as z:
        for key, blob in records.items():
            z.writestr(key, blob)


FILES = {
    "a plain pickle": "not a simsiam checkpoint (it stores Python objects such as io.open",
    "a plain pickle, protocol 5": "the checkpoint is corrupt or truncated",
    "torch.save of an object": "not a simsiam checkpoint (it stores Python objects such as io.open",
    "random bytes": "the checkpoint is corrupt or truncated (10000 bytes",
    "a zip that is not torch's": "the checkpoint is corrupt or truncated",
    "a zip with torch's names and a pickle": "not a simsiam checkpoint (it stores Python objects such as io.open",
    "truncated to half": "the checkpoint is corrupt or truncated",
    "truncated to 10 bytes": "the checkpoint is corrupt or truncated (10 bytes",
    "empty": "the checkpoint is corrupt or truncated (0 bytes",
    "a bare state_dict": "not a simsiam checkpoint (no simsiam config and weights in it) (backbone.pt holds backbone weights only",
    "hyper_parameters not a mapping": "not a simsiam checkpoint (no simsiam config and weights in it)",
    "a tensor": "not a simsiam checkpoint (no simsiam config and weights in it)",
    "a tensor that declares 64 GiB": "the checkpoint is corrupt or truncated",
}


def _write_damaged(run, tmp_path, case: str) -> tuple[Path, str]:
    """A run folder whose checkpoints/last.ckpt is damaged as ``case`` says, and what the error line must say."""
    folder = tmp_path / "damaged"
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copy(run[0] / "config.yaml", folder / "config.yaml")
    file = folder / "checkpoints" / "last.ckpt"
    if case in FILES:
        _evil(case, file, tmp_path / "marker", run[0] / "checkpoints" / "last.ckpt")
        return file, FILES[case]
    edit, expected = WEIGHTS[case] if case in WEIGHTS else CONFIGS[case]
    state = copy.deepcopy(_state(run))
    edit(state)
    torch.save(state, file)
    return file, expected if case in WEIGHTS else REFUSED + expected


def _commands(run, file: Path, out: Path) -> dict[str, list[str]]:
    images = str(run[1])
    return {
        "embed": ["embed", str(file), images, "--out", str(out / "e.npz"), "--no-progress"],
        "knn": ["evaluate", str(file), "--train", images, "--test", images, "--knn-k", "3", "--out", str(out / "k.json"), "--no-progress"],
        "export": ["export", str(file), "--format", "torchvision", "--out", str(out / "b.pt")],
        "neighbors": ["neighbors", str(file), images, "--num-queries", "2", "--k", "2", "--out", str(out / "n.png"), "--no-progress"],
        "map": ["map", str(file), images, "--method", "pca", "--out", str(out / "m.png"), "--no-progress"],
        "resume": ["train", "--out", str(file.parent.parent), "--resume", "--no-progress"],
    }


def _one_line_exit_2(capsys, args: list[str], file: Path, expected: str) -> str:
    code = main(args)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (args[0], code, err)
    assert lines[0].startswith(f"simsiam {args[0]}: error: {file}: "), lines[0]
    assert expected in lines[0], (expected, lines[0])
    assert "Traceback" not in out + err
    return lines[0]


ALL = [*WEIGHTS, *CONFIGS, *FILES]


@pytest.mark.parametrize("case", ALL)
def test_every_command_that_reads_weights_refuses_a_damaged_checkpoint_in_one_line(case, run, tmp_path, capsys):
    file, expected = _write_damaged(run, tmp_path, case)
    out = tmp_path / "out"
    out.mkdir()
    before = {p: p.stat().st_mtime_ns for p in file.parent.parent.rglob("*")}
    for args in _commands(run, file, out).values():
        _one_line_exit_2(capsys, args, file, expected)
    assert list(out.iterdir()) == []  # nothing written: no NaN embeddings, no figure, no export
    assert {p: p.stat().st_mtime_ns for p in file.parent.parent.rglob("*")} == before  # resume left the run alone
    assert not (tmp_path / "marker").exists()  # no pickle was ever run


@pytest.mark.parametrize("case", ["one NaN", "int64 for float", "wrong shape", "image size of millions", "a plain pickle"])
def test_library_load_raises_checkpoint_error_naming_the_file(case, run, tmp_path):
    file, expected = _write_damaged(run, tmp_path, case)
    for given in (file, file.parent.parent):  # the file, or the run folder that stands for it
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(given)
        assert str(info.value).startswith(f"{file}: ") and expected in str(info.value)


@pytest.mark.parametrize(
    "kind", ["a plain pickle", "a plain pickle, protocol 5", "torch.save of an object", "a zip with torch's names and a pickle"]
)
def test_a_pickle_in_a_checkpoint_never_runs(kind, run, tmp_path, capsys):
    file, marker = tmp_path / "x.ckpt", tmp_path / "marker"
    _evil(kind, file, marker, run[0] / "checkpoints" / "last.ckpt")
    pickle.loads(pickle.dumps(Marker(tmp_path / "control")))  # the control: unpickling it does create its file
    assert (tmp_path / "control").exists()
    _one_line_exit_2(capsys, ["embed", str(file), str(run[1]), "--out", str(tmp_path / "e.npz")], file, FILES[kind])
    assert not marker.exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_for_a_checkpoint_is_refused_without_blocking(run, tmp_path, capsys):
    fifo = tmp_path / "last.ckpt"
    os.mkfifo(fifo)
    _one_line_exit_2(capsys, ["export", str(fifo), "--format", "torchvision", "--out", str(tmp_path / "b.pt")], fifo, "no such checkpoint")


@pytest.mark.parametrize("key, value", [("global_step", "many"), ("epoch", -1), ("global_step", 1.5)])
def test_counts_that_are_not_counts_are_refused(key, value, run, tmp_path, capsys):
    folder = tmp_path / "damaged"
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copy(run[0] / "config.yaml", folder / "config.yaml")
    file = folder / "checkpoints" / "last.ckpt"
    state = _state(run)
    state[key] = value
    torch.save(state, file)
    _one_line_exit_2(capsys, ["train", "--out", str(folder), "--resume"], file, f"not a simsiam checkpoint ({key} is")


def test_the_undamaged_checkpoint_still_loads_everywhere(run, tmp_path, capsys):
    """The control of the cases above: the same commands on the same (copied) checkpoint succeed."""
    folder = tmp_path / "good"
    shutil.copytree(run[0], folder)
    out = tmp_path / "out"
    out.mkdir()
    for name, args in _commands(run, folder / "checkpoints" / "last.ckpt", out).items():
        if name != "resume":  # resuming a finished 1-epoch run trains it again; the refusals above are what is tested
            assert main(args) == 0, (name, capsys.readouterr().err)
    assert sorted(p.name for p in out.iterdir()) == ["b.pt", "b.pt.json", "e.npz", "k.json", "m.png", "n.png"]


def test_weights_that_overflow_on_the_images_are_one_line_not_nan_features(run, tmp_path, capsys):
    """Finite weights whose features are not: 3e38 in the first convolution overflows float32 on any image."""
    file = tmp_path / "overflow.ckpt"
    state = _state(run)
    state["state_dict"][CONV] = torch.full_like(state["state_dict"][CONV], 3e38)
    torch.save(state, file)
    # How many of the 12 overflow into NaN rather than staying infinite-free depends on the CPU's kernels: 8 to 12 seen.
    expected = "its features are not finite (NaN or infinite) for "
    cache = Path(os.environ["SIMSIAM_CACHE"]) / "features"
    cached = sorted(cache.glob("*")) if cache.exists() else []
    for args in (
        ["embed", str(file), str(run[1]), "--out", str(tmp_path / "e.npz"), "--no-progress", "--cache-features"],
        ["evaluate", str(file), "--train", str(run[1]), "--test", str(run[1]), "--out", str(tmp_path / "k.json"), "--no-progress"],
        ["neighbors", str(file), str(run[1]), "--out", str(tmp_path / "n.png"), "--no-progress"],
    ):
        line = _one_line_exit_2(capsys, args, file, expected)
        assert re.search(r"for ([1-9]|1[0-2]) of 12 images, the first image \d+: its weights overflow on these images", line), line
    assert not (tmp_path / "e.npz").exists() and not (tmp_path / "k.json").exists() and not (tmp_path / "n.png").exists()
    assert (sorted(cache.glob("*")) if cache.exists() else []) == cached  # no NaN went into the feature cache (--cache-features)


# -- kNN and the probe with any integers as labels --------------------------------------------


def _clusters(n_per: int, classes: int, dim: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per)
    centres = torch.randn(classes, dim, generator=g) * 3
    return centres[y] + torch.randn(len(y), dim, generator=g), y


@pytest.mark.parametrize(
    "values",
    [
        [0, 10**12],  # the named case: one huge label
        [-5, 3],  # negative labels
        [-(10**15), 10**15, 7],  # huge both ways, three classes
        [2**62, 1, 0, -1],  # near the int64 limit
    ],
)
def test_knn_accuracy_takes_any_integer_labels_as_the_same_classes(values):
    k = len(values)
    train, y_train = _clusters(10, k, seed=1)
    test, y_test = _clusters(5, k, seed=2)
    test = test + 1.5 * torch.randn_like(test)  # some mistakes, so the accuracy is not trivially 1
    table = torch.tensor(values, dtype=torch.long)
    dense = knn_accuracy(train, y_train, test, y_test, k=5)
    assert knn_accuracy(train, table[y_train], test, table[y_test], k=5) == dense
    # And the order of the values does not matter either: the classes are matched, not renumbered by position.
    shuffled = table[torch.randperm(k, generator=torch.Generator().manual_seed(3))]
    assert knn_accuracy(train, shuffled[y_train], test, shuffled[y_test], k=5) == dense


def test_knn_accuracy_counts_a_test_class_missing_from_the_bank_as_wrong():
    train, y_train = _clusters(10, 2)
    test = train[:4]
    assert knn_accuracy(train, y_train * 10**12, test, torch.tensor([0, 0, 10**12 + 1, -7]), k=3) == 0.5


def test_dense_labels_are_ordered_and_shared_between_bank_and_queries():
    train, test, count = dense_labels(torch.tensor([10**12, -3, 5, 5]), torch.tensor([-3, 99]))
    assert train.tolist() == [3, 0, 1, 1] and test.tolist() == [0, 2] and count == 4


def test_linear_probe_with_huge_labels_builds_a_head_of_the_classes_present():
    train, y_train = _clusters(10, 2)
    plain = linear_probe(train, y_train, train, y_train, epochs=3)
    huge = linear_probe(train, y_train * 10**12 - 1, train, y_train * 10**12 - 1, epochs=3)
    assert huge == plain


# -- what --resume restores besides the weights -----------------------------------------------


def _momentum(state):
    buffers = state["optimizer_states"][0]["state"]
    first = next(iter(buffers))
    buffers[first]["momentum_buffer"].view(-1)[0] = float("nan")
    return f"optimizer_states[0]['state'][{first!r}]['momentum_buffer'] is not finite"


def _lr(state):
    state["optimizer_states"][0]["param_groups"][0]["lr"] = float("inf")
    return "optimizer_states[0]['param_groups'][0]['lr'] is not finite"


def _base_lr(state):
    state["lr_schedulers"][0]["base_lrs"][1] = float("nan")
    return "lr_schedulers[0]['base_lrs'][1] is not finite"


def _deep(state):
    nested: list = []
    for _ in range(3000):  # torch.save writes it with a raised recursion limit (below); torch.load reads it with none
        nested = [nested]
    state["lr_schedulers"] = nested
    return "lr_schedulers is nested too deeply"


@pytest.mark.parametrize("damage", [_momentum, _lr, _base_lr, _deep], ids=["NaN momentum", "inf lr", "NaN base lr", "deep nesting"])
def test_resume_refuses_an_optimizer_state_that_is_not_finite(damage, run, tmp_path, capsys):
    folder = tmp_path / "damaged"
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copy(run[0] / "config.yaml", folder / "config.yaml")
    file = folder / "checkpoints" / "last.ckpt"
    state = _state(run)
    for buffer in state["optimizer_states"][0]["state"].values():
        buffer["momentum_buffer"] = buffer["momentum_buffer"].contiguous()
    expected = damage(state)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)
    try:
        torch.save(state, file)
    finally:
        sys.setrecursionlimit(limit)
    _one_line_exit_2(capsys, ["train", "--out", str(folder), "--resume", "--no-progress"], file, expected)


def test_a_sound_checkpoint_resumes_and_lightning_reads_it_with_weights_only(run, tmp_path, monkeypatch):
    """The control of the resume cases: the same checkpoint continues, and no read of it may unpickle objects."""
    folder = tmp_path / "good"
    shutil.copytree(run[0], folder)
    real, calls = torch.load, []

    def recording(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording)
    assert main(["train", "--out", str(folder), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert len(calls) >= 2 and all(w is True for w in calls), calls  # ours, then Lightning's
    steps = _state(run)["global_step"]
    assert real(folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2 * steps  # it trained epoch 2


@pytest.mark.parametrize("labels, num_classes", [([0, -1], None), ([0, 5], 3)])
def test_knn_predict_refuses_labels_that_are_not_score_columns(labels, num_classes):
    feats = torch.randn(2, 4)
    with pytest.raises(ValueError, match=r"train_labels must be in \[0, \d+\).*dense_labels"):
        knn_predict(feats, torch.tensor(labels), feats, num_classes, k=1)
