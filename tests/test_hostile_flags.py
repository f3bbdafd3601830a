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
REACHED = "stopped where DATA is read"
MISSING_CHECKPOINT = "missing-run/checkpoints/last.ckpt"


@pytest.fixture
def sweep(tmp_path, monkeypatch, capsys):
    """A function: argv -> "accepted", "refused" or what went wrong, run in a scratch folder with DATA's loading stubbed."""
    import simsiam.data

    def reached(*args, **kwargs):
        raise DataError(REACHED)

    monkeypatch.setattr(simsiam.data, "load", reached)
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


def _check(results: dict[str, str]) -> None:
    bad = {what: result for what, result in results.items() if result not in ("accepted", "refused")}
    assert not bad, "\n".join(f"{what}: {result}" for what, result in bad.items())


# -- simsiam train: every flag, and every key of a --config file --------------------------------


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
    _check(results)


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
    _check(results)


PATHS = ["", "0", "-1", "nowhere", "a-file.txt", "images", "nowhere/deeper", "\x00"]


@pytest.mark.parametrize("flag", ["--out", "--val", "--config"])
def test_train_path_flag(sweep, flag):
    results = {f"{flag}={v!r}": sweep([*TRAIN, f"{flag}={v}"], (flag,), REACHED) for v in PATHS}
    _check(results)


def test_train_data(sweep):
    results = {f"DATA={v!r}": sweep([*TRAIN, "--", v], ("DATA",), REACHED) for v in PATHS}
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
    _check(results)


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
