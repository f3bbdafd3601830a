"""Hostile option values: every flag of every command and every config-file key, fed 0, -1, huge, nan, inf, empty and wrong types.

Each value is either accepted (the options pass every check and the command goes on to
read its input: here a stub of DATA's loading, or a checkpoint that is not there, stops
it) or refused with exactly one line on stderr naming the option (the flag; for a
config file the key and the file) and exit status 2. Never a traceback, never an
internal error. Nothing here trains or decodes an image.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
import yaml

from simsiam.cli import build_parser, main
from simsiam.config import TrainConfig
from simsiam.errors import DataError
from simsiam.options import walk

# What a flag's value is typed as; "=" keeps argparse from reading "-1" or "-inf" as an option.
FLAG_VALUES = ["0", "-1", str(10**18), "1" + "0" * 400, "1e400", "nan", "inf", "-inf", "", "abc", "1.5", "true", "[1]"]
# What a config file may hold for a key: numbers of every size, non-finite floats, an empty
# string, a string, a list, a mapping, a bool and null.
YAML_VALUES = [0, -1, 10**18, 10**400, 1.5, math.nan, math.inf, -math.inf, "", "abc", [1], [], {"a": 1}, True, None]
# 10**18 and more is no legitimate count, size, rate or seed: refused, except where a huge value means
# something (a temperature that makes every vote equal, "map all the images"), is a name (a path), or
# is caught as it happens: a learning rate that diverges stops training in one line (test_reliability.py).
HUGE = (str(10**18), "1" + "0" * 400, 10**18, 10**400)
HUGE_MEANS_SOMETHING = {"--knn-temperature", "knn_temperature", "--max-images", "--lr", "optim.base_lr"}
PATH_OPTIONS = {"--out", "--val", "--config", "--train", "--test", "--query"}
REACHED = "stopped where DATA is read"
MISSING_CHECKPOINT = "missing-run/checkpoints/last.ckpt"


@pytest.fixture
def sweep(tmp_path, monkeypatch, capsys):
    """A function: argv -> "accepted", "refused" or what went wrong, run in a scratch folder with DATA's loading stubbed."""
    import simsiam.data.sources

    def reached(*args, **kwargs):
        raise DataError(REACHED)

    monkeypatch.setattr(simsiam.data.sources, "load", reached)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "a-file.txt").write_text("not a folder")

    def run(argv: list[str], names: tuple[str, ...], accepted_line: str) -> str:
        try:
            rc = main(argv)
        except BaseException as e:  # noqa: BLE001 - any escape is a failure of the rule
            capsys.readouterr()
            return f"escaped {type(e).__name__}: {e}"
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        if "Traceback" in err or "internal error" in err:
            return f"rc {rc}: {err.strip()[-300:]!r}"
        if rc == 2 and len(lines) == 1 and accepted_line in lines[0]:
            return "accepted"
        if rc == 2 and len(lines) == 1 and all(n in lines[0] for n in names):
            return "refused"
        return f"rc {rc}, stderr {err.strip()[-300:]!r} (expected one line naming {' and '.join(names)})"

    return run


def _check(results: dict[str, str], option: str | None = None) -> None:
    """Every case accepted or refused; with ``option``, its huge values refused unless they mean something."""
    bad = {what: result for what, result in results.items() if result not in ("accepted", "refused")}
    if option is not None and option not in HUGE_MEANS_SOMETHING | PATH_OPTIONS:
        bad.update({what: "a huge value accepted" for what, r in results.items() if r == "accepted" and what.endswith(_huge_tails())})
    assert not bad, "\n".join(f"{what}: {result}" for what, result in bad.items())


# -- simsiam train: every flag, and every key of a --config file --------------------------------


def _huge_tails() -> tuple[str, ...]:
    return tuple(f"={v!r}" if isinstance(v, str) else f": {v!r}" for v in HUGE)


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _flags(command: str) -> list[str]:
    return [
        a.option_strings[-1 if a.option_strings[0] == "-h" else 0]
        for a in _subparsers()[command]._actions
        if a.option_strings and a.dest != "help"
    ]


TRAIN = ["train", "--out", "run"]  # a run folder named, so that none is looked for among runs/
TRAIN_FLAGS = _flags("train")
TRAIN_KEYS = [key for key, _, _ in walk(TrainConfig)]


@pytest.mark.parametrize("flag", TRAIN_FLAGS)
def test_train_flag(sweep, flag):
    results = {f"{flag}={v!r}": sweep([*TRAIN, f"{flag}={v}"], (flag,), REACHED) for v in FLAG_VALUES}
    _check(results, flag)


@pytest.mark.parametrize("key", TRAIN_KEYS)
def test_train_config_key(sweep, tmp_path, key):
    results = {}
    for i, value in enumerate(YAML_VALUES):
        file = tmp_path / f"hostile-{i}.yaml"
        node: object = value
        for part in reversed(key.split(".")):
            node = {part: node}
        file.write_text(yaml.safe_dump(node))
        results[f"{key}: {value!r}"] = sweep([*TRAIN, "--config", str(file)], (str(file), key), REACHED)
    _check(results, key)


PATHS = ["", "0", "-1", "nowhere", "a-file.txt", "images", "nowhere/deeper", "\x00"]


@pytest.mark.parametrize("flag", ["--out", "--val", "--config"])
def test_train_path_flag(sweep, flag):
    results = {f"{flag}={v!r}": sweep([*TRAIN, f"{flag}={v}"], (flag,), REACHED) for v in PATHS}
    _check(results)


def test_train_data(sweep):
    # No --out: the run folder's name is made from DATA's (runs/<name>), which must not fail on it first.
    results = {f"DATA={v!r}": sweep(["train", "--", v], ("DATA",), REACHED) for v in PATHS}
    _check(results)


# -- the commands that read a checkpoint -------------------------------------------------------

COMMAND_OPTIONS = {
    "evaluate": ["--train", "images", "--test", "images"],
    "embed": [],
    "neighbors": [],
    "map": [],
    "export": ["--format", "torchvision"],
}
WITH_DATA = ("embed", "neighbors", "map")
COMMAND_FLAGS = [(command, flag) for command in COMMAND_OPTIONS for flag in _flags(command)]


def _argv(command: str, *options: str, checkpoint: str = MISSING_CHECKPOINT, data: str = "images") -> list[str]:
    """The command with its required options, then ``options`` (which override them), then its positional arguments."""
    return [command, *COMMAND_OPTIONS[command], *options, "--", checkpoint, *([data] if command in WITH_DATA else [])]


@pytest.mark.parametrize(("command", "flag"), COMMAND_FLAGS, ids=[f"{c} {f}" for c, f in COMMAND_FLAGS])
def test_command_flag(sweep, command, flag):
    values = FLAG_VALUES + (PATHS if flag in ("--out", "--train", "--test", "--query") else [])
    results = {f"{command} {flag}={v!r}": sweep(_argv(command, f"{flag}={v}"), (flag,), "no such checkpoint") for v in values}
    _check(results, flag)


@pytest.mark.parametrize("command", COMMAND_OPTIONS)
def test_command_paths(sweep, command):
    results = {}
    for v in PATHS:
        results[f"{command} CHECKPOINT={v!r}"] = sweep(_argv(command, checkpoint=v), (), "no such checkpoint")
        if command in WITH_DATA:
            results[f"{command} DATA={v!r}"] = sweep(_argv(command, data=v), (), "no such checkpoint")
    _check(results)


def test_sweep_size():
    """The sweep covers every flag of every command and every key (a flag added later joins it by itself)."""
    assert len(TRAIN_FLAGS) >= 40 and len(TRAIN_KEYS) >= 50
    assert {"--k", "--grid", "--opset", "--batch-size", "--knn-temperature", "--max-images"} <= {f for _, f in COMMAND_FLAGS}
    assert Path(MISSING_CHECKPOINT).suffix == ".ckpt"


# -- the causes, each on its own -----------------------------------------------------------------


def test_config_file_errors_name_the_file_then_the_dotted_key(sweep, tmp_path, capsys):
    file = tmp_path / "run.yaml"
    cases = {
        "optim:\n  base_lr: abc\n": "optim.base_lr: expected float or null, got 'abc'",
        f"augment:\n  hue: {10**400}\n": "augment.hue: must be a finite number, got 1" + "0" * 56 + "...",
        "augment:\n  hue: .nan\n": "augment.hue: must be a finite number, got nan",
        "model: [1, 2]\n": "model: expected a mapping, got [1, 2]",
        "model:\n  widht: 3\n": "model: unknown key 'widht' (known: backbone, channels, pred_hidden_dim, predictor, proj_dim, proj_hidden_dim, "
        "proj_layers, small_images, stop_gradient, zero_init_residual)",
        "recipe: [cifar10]\n": "recipe: unknown recipe ['cifar10']; choose one of cifar10, imagenet, demo, cpu",
        "epochs: 1000001\n": "epochs: must be at most 100000, got 1000001",
        f"optim:\n  weight_decay: -{10**400}\n": "optim.weight_decay: must be a finite number, got -1" + "0" * 55 + "...",
    }
    for text, why in cases.items():
        file.write_text(text)
        assert main([*TRAIN, "--config", str(file)]) == 2
        assert capsys.readouterr().err == f"simsiam train: error: {file}: {why}\n", text


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--epochs", "100001"], "--epochs: must be at most 100000, got 100001"),
        (["--batch-size", "65537"], "--batch-size: must be at most 65536, got 65537"),
        (["--proj-dim", "16385"], "--proj-dim: must be at most 16384, got 16385"),
        (["--proj-layers", "17"], "--proj-layers: must be at most 16, got 17"),
        (["--devices", "1025"], "--devices: must be at most 1024, got 1025"),
        (["--lr", "0"], "--lr: must be positive, got 0.0"),
        (["--lr", "1e400"], "--lr: must be a finite number, got inf"),
        (["--weight-decay", "2"], "--weight-decay: must be at most 1, got 2.0"),
        (["--val", "a-file.txt/inside"], "--val: a-file.txt/inside: Not a directory"),
        (["--out", "a-file.txt"], "--out: a-file.txt is a file, not a folder"),
        (["--out", "a-file.txt/run"], "--out: a-file.txt is a file, not a folder"),
        (["--out", ""], "--out: is empty; give a path"),
        (["--config", ""], "--config: the config file name is empty"),
        (["--config", "images"], "--config: images: not a regular file"),
    ],
)
def test_a_bound_or_a_path_is_one_exact_line(sweep, capsys, argv, line):
    assert main([*TRAIN, *argv]) == 2
    assert capsys.readouterr().err == f"simsiam train: error: {line}\n"


def test_the_largest_values_allowed_pass(sweep, monkeypatch):
    """The bounds are not off by one: each limit itself is accepted."""
    monkeypatch.setenv("NODE_RANK", "0")  # --num-nodes above 1 wants a launcher's variables
    largest = ["--epochs=100000", "--batch-size=65536", "--proj-dim=16384", "--proj-layers=16", "--pred-hidden-dim=16384",
               "--devices=1024", "--num-nodes=1024", "--lr=1e300", "--weight-decay=1", "--knn-k=100000", "--image-size=1024"]  # fmt: skip
    for flag in largest:
        assert sweep([*TRAIN, flag, "--batch-size=65536"], (), REACHED) == "accepted", flag  # a batch that splits over 1024
    assert sweep(_argv("neighbors", "--k=64", "--num-queries=64", "--seed=4294967295"), (), "no such checkpoint") == "accepted"
    assert sweep(_argv("map", "--grid=100", "--batch-size=65536"), (), "no such checkpoint") == "accepted"


def test_a_typo_is_refused_before_data_is_read_and_leaves_nothing(tmp_path, monkeypatch, capsys, class_folder):
    """--val and --out are checked with the other options: DATA is not decoded, no run folder is made."""
    import simsiam.data.sources

    calls = []
    monkeypatch.setattr(simsiam.data.sources, "load", lambda *a, **k: calls.append(a) or pytest.fail("DATA was read"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("a file")
    for argv in (["--val", "vall"], ["--out", "taken"], ["--epochs", "1e3"], ["--knn-k", "0"], ["--lr", "nan"]):
        assert main(["train", str(class_folder), *argv]) == 2
        assert capsys.readouterr().err.count("\n") == 1
    assert not calls and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--backbone", "vit_b_16", "--image-size", "100"], "--image-size: vit_b_16 cuts images into 16x16 patches: the image size must be a multiple of 16, got 100; choose another --image-size or --backbone"),
        (["--backbone", "vit_b_16", "--image-size", "64", "--channels", "4"], None),  # a size it takes, whatever the channels
        (["--backbone", "resnet10-tiny", "--image-size", "8"], None),
    ],
)  # fmt: skip
def test_the_networks_are_checked_against_image_size_before_data(sweep, capsys, argv, line):
    """With --image-size given, a backbone that cannot take it is refused before DATA is decoded (on the meta device)."""
    assert main([*TRAIN, *argv]) == 2
    assert capsys.readouterr().err == f"simsiam train: error: {line or REACHED}\n"


def test_commands_check_their_options_before_the_checkpoint(tmp_path, monkeypatch, capsys):
    """A bad --out or DATA is named even when the checkpoint is not there: nothing is read first."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    cases = {
        ("embed", "c.ckpt", "nowhere"): "DATA: nowhere: no such file or folder",
        ("embed", "c.ckpt", "--out", "images/x.txt"): "--out: images/x.txt must end in .parquet or .npz",
        ("embed", "c.ckpt", "--out", "out.parquet"): "--out: out.parquet is a folder; give a file name",
        ("map", "c.ckpt", "--out", "images/map.png/x.png"): "--out: images/map.png is a file, not a folder",
        ("neighbors", "c.ckpt", "--query", "images"): "--query: images is a folder, not an image file",
        ("neighbors", "c.ckpt", "--k", "65"): "--k: must be at most 64, got 65",
        ("map", "c.ckpt", "--grid", "101"): "--grid: must be at most 100, got 101",
        ("evaluate", "", "--train", "images", "--test", "images"): "CHECKPOINT: is empty; give a path",
        ("evaluate", "c.ckpt", "--train", "images", "--test", "images", "--knn-temperature", "inf"): "--knn-temperature: must be a finite number, got inf",
        ("evaluate", "c.ckpt", "--train", "images", "--test", "images", "--linear-epochs", "100001"): "--linear-epochs: must be at most 100000, got 100001",
        ("export", "c.ckpt", "--format", "torchvision", "--opset", "6"): "--opset: must be at least 7, got 6",
    }  # fmt: skip
    (tmp_path / "out.parquet").mkdir()
    (tmp_path / "images" / "map.png").write_bytes(b"")
    for argv, line in cases.items():
        assert main(list(argv)) == 2, argv
        assert capsys.readouterr().err == f"simsiam {argv[0]}: error: {line}\n", argv


def test_knn_votes_stay_finite_at_any_temperature():
    """exp(s / T) overflowed float32 below T ~ 0.011; the vote is the same with the largest similarity taken off."""
    import torch

    from simsiam.evaluate import knn_accuracy, knn_predict

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=g)
    labels = torch.arange(3).repeat_interleave(20)
    train = centres[labels] + 0.3 * torch.randn(60, 16, generator=g)
    test = centres[labels] + 0.3 * torch.randn(60, 16, generator=g)
    for t in (1e-30, 1e-4, 0.01, 0.1, 1e30):
        scores = knn_predict(train, labels, test, 3, k=20, temperature=t)
        assert torch.isfinite(scores).all() and (scores.sum(1) > 0).all(), t
        assert knn_accuracy(train, labels, test, labels, k=20, temperature=t) > 0.9, t


def test_feature_buffer_is_sized_by_the_images_not_the_batch_size():
    """--batch-size 65536 on three images allocates for three; a declared size is not a reason to allocate."""
    import torch

    from simsiam.evaluate import features_of
    from simsiam.model import SimSiam

    model = SimSiam("resnet10-slim", small_images=True, proj_dim=16, proj_layers=2)
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    feats, _ = features_of(model, images, "cpu", batch_size=10**12)
    assert feats.shape == (3, model.feature_dim)
