"""Options as dataclass fields that carry everything said about them, in one place.

Each field of a config dataclass is made with :func:`option`: its default, its
command-line flag and help, its allowed values, and whether ``--resume`` may
change it. Everything else is derived from those fields: the argparse options
(:func:`add_flags`), the checks (:func:`validate`), reading values from a YAML
mapping (:func:`update`), and the resume rule (:func:`resumable_keys`).

A field left at ``None`` means "auto": it is filled once the data and the device
are known, and checks skip it until then.

>>> from dataclasses import dataclass
>>> @dataclass
... class Example:
...     epochs: int = option(100, flag="--epochs", help="passes over the data", check=at_least(1))
>>> validate(update(Example(), {"epochs": 0}, "config"))
Traceback (most recent call last):
...
simsiam.errors.ConfigError: epochs: must be at least 1, got 0

The bounds of options (``MAX_*``) and the checks of path options live here too,
light, so that the command line can check before importing torch. Every bound is far past any real run, so that a slip of the keyboard (an extra 0,
1e18) is one line at once, not an allocation that fails or a loop that never ends.
The checks return why a value is wrong, or None (as the ``check`` of an option does).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import math
import os
import sys
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from simsiam.errors import ConfigError
from simsiam.files import archive_problem, os_error_text, show_path

Check = Callable[[Any], "str | None"]  # a value -> why it is wrong, or None when it is fine


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    metavar: str | None = None,
    choices: tuple[str, ...] | None = None,
    check: Check | None = None,
    parse: Callable[[str], Any] | None = None,
    resumable: bool = False,
    repeat: bool = False,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with its flag, help, choices, check and resume rule.

    ``flag`` is the command-line spelling (no flag: config-file only); a boolean
    gets ``--flag`` and ``--no-flag``. ``parse`` turns the flag's text into a value
    when the field's type alone cannot (an int or the word ``auto``, say).
    ``repeat``: the flag may be given several times, each adding one value to a tuple.
    """
    meta = dict(help=help, flag=flag, metavar=metavar, choices=choices, check=check, parse=parse, resumable=resumable, repeat=repeat)
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# -- checks ----------------------------------------------------------------------------------


def at_least(low: float, high: float = math.inf) -> Check:
    """``low`` <= v <= ``high`` (no bound above unless given)."""

    def check(v: float) -> str | None:
        if not v >= low:
            return f"must be at least {low:g}, got {v}"
        return None if v <= high else f"must be at most {high:g}, got {v}"

    return check


def positive(v: float) -> str | None:
    return None if v > 0 else f"must be positive, got {v}"


def positive_up_to(high: float) -> Check:
    """0 < v <= ``high``."""
    return lambda v: positive(v) or (None if v <= high else f"must be at most {high:g}, got {v}")


def in_range(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Check:
    def check(v: float) -> str | None:
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        return None if ok else f"must be in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}, got {v}"

    return check


probability = in_range(0, 1)


def increasing_pair(low: float = 0, high: float = math.inf) -> Check:
    """A (low, high) pair with ``low`` < first <= second <= ``high``."""
    bound = "" if high == math.inf else f" <= {high:g}"
    return lambda v: None if low < v[0] <= v[1] <= high else f"need {low:g} < first <= second{bound}, got {list(v)}"


# -- walking a config ------------------------------------------------------------------------


def walk(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """(dotted key, field, type hint) of every leaf option of a config class, sections included."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            yield from walk(hint, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, hint


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A class's resolved type hints, once: the parser is built from them on every ``simsiam`` command."""
    return typing.get_type_hints(cls)


def get(obj: Any, key: str) -> Any:
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def validate(obj: Any, prefix: str = "") -> None:
    """Raise ConfigError, naming the dotted key, for the first value that breaks its field's rules.

    Then a dataclass's own ``cross_checks()`` (rules between fields) are asked,
    as (key, message) pairs.
    """
    for key, f, _ in walk(type(obj)):
        value = get(obj, key)
        if value is None:
            continue  # auto: filled later, checked then
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"must be a finite number, got {value}", key=prefix + key)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"must be one of {', '.join(map(str, choices))}, got {value!r}", key=prefix + key)
        check = f.metadata.get("check")
        problem = check(value) if check else None
        if problem:
            raise ConfigError(problem, key=prefix + key)
    for section in [obj] + [getattr(obj, f.name) for f in dataclasses.fields(obj) if dataclasses.is_dataclass(getattr(obj, f.name))]:
        cross = getattr(section, "cross_checks", None)
        if cross is not None:
            where = prefix if section is obj else f"{prefix}{_field_name_of(obj, section)}."
            for key, message in cross():
                raise ConfigError(message, key=where + key)


def _field_name_of(obj: Any, section: Any) -> str:
    return next(f.name for f in dataclasses.fields(obj) if getattr(obj, f.name) is section)


def resumable_keys(cls: type) -> tuple[str, ...]:
    """The dotted keys that ``--resume`` may change."""
    return tuple(key for key, f, _ in walk(cls) if f.metadata.get("resumable"))


def flag_of(cls: type, key: str) -> str | None:
    return next((f.metadata.get("flag") for k, f, _ in walk(cls) if k == key), None)


# -- the command line ------------------------------------------------------------------------


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One argparse option per flagged field; ``dest`` is the dotted key and nothing is set unless typed.

    The options of a section (``model``, ``augment``, ...) are listed under its help text.
    """
    inside = _sections(cls)
    sections = {f.name: f.metadata["help"] for f in dataclasses.fields(cls) if f.name in inside}
    groups = {name: parser.add_argument_group(text) for name, text in sections.items()}
    for key, f, hint in walk(cls):
        meta = f.metadata
        if not meta.get("flag"):
            continue
        target = groups.get(key.split(".")[0], parser) if "." in key else parser
        kwargs: dict[str, Any] = dict(dest=key, default=argparse.SUPPRESS, help=_help(f))
        base = _base_type(hint)
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif meta.get("repeat"):
            kwargs.update(action="append", type=str, metavar=meta.get("metavar") or "TEXT")
        else:
            kwargs["type"] = meta.get("parse") or base
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
            else:
                kwargs["metavar"] = meta.get("metavar") or {int: "N", float: "X"}.get(base, "TEXT")
        target.add_argument(meta["flag"], **kwargs)


def _sections(cls: type) -> set[str]:
    hints = _hints(cls)
    return {name for name, hint in hints.items() if isinstance(hint, type) and dataclasses.is_dataclass(hint)}


def _help(f: dataclasses.Field) -> str:
    text = f.metadata["help"]
    if f.default is None or f.default is dataclasses.MISSING or "default" in text or f.default == "default":
        return text
    shown = f.default if not isinstance(f.default, bool) else ("on" if f.default else "off")
    return f"{text} (default: {shown})"


def _base_type(hint: Any) -> Any:
    """bool, int, float or str for a field's hint (``X | None`` counts as X)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return hint


def given_flags(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options typed on the command line, as {dotted key: value}."""
    return {key: getattr(args, key) for key, f, _ in walk(cls) if f.metadata.get("flag") and hasattr(args, key)}


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"optim.base_lr": 0.1} -> {"optim": {"base_lr": 0.1}}."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        *sections, key = dotted.split(".")
        node = out
        for s in sections:
            node = node.setdefault(s, {})
        node[key] = value
    return out


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The inverse of :func:`nest`."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# -- values from a mapping (YAML, a checkpoint) ----------------------------------------------


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to a mistyped one ("batchsize" -> "batch_size", "--epoch" -> "--epochs"), or None.

    Dashes and underscores count as the same, so that a flag's spelling finds a key and back.

    >>> closest("batchsize", ["batch_size", "epochs"]), closest("--epoch", ["--epochs", "--seed"]), closest("xyz", ["epochs"])
    ('batch_size', '--epochs', None)
    """
    plain = {k.replace("-", "_").lstrip("_"): k for k in known}
    found = difflib.get_close_matches(name.replace("-", "_").lstrip("_"), list(plain), n=1, cutoff=0.6)
    return plain[found[0]] if found else None


def update(obj: Any, values: Any, where: str, _section: str = "") -> Any:
    """A copy of dataclass ``obj`` with ``values`` (a nested mapping) applied; unknown keys and wrong types raise.

    ``where`` names the source (a file, a recipe); errors read ``where: dotted.key: why``.
    """
    at = f"{where}: {_section[:-1]}" if _section else where
    if not isinstance(values, dict):
        raise ConfigError(f"{at}: expected a mapping, got {_short(values)}")
    hints = _hints(type(obj))
    known = {f.name for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in values.items():
        if key not in known:
            guess = closest(str(key), known)
            hint = f"; did you mean {guess}?" if guess else f" (known: {', '.join(sorted(known))})"
            raise ConfigError(f"{at}: unknown key {_short(key)}{hint}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = update(current, value, where, f"{_section}{key}.")
        else:
            changes[key] = _coerce(value, hints[key], f"{where}: {_section}{key}")
    return dataclasses.replace(obj, **changes)


def to_dict(obj: Any) -> dict[str, Any]:
    """Nested plain values (tuples as lists), ready for YAML and checkpoints."""
    return _plain(dataclasses.asdict(obj))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a field's type hint; ints may stand for floats, lists for tuples."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if float in typing.get_args(hint) and _too_large_for_float(value):
            return _coerce(value, float, where)  # its own line: a number, but too large, rather than "expected float or null"
        for choice in typing.get_args(hint):
            try:
                return _coerce(value, choice, where)
            except ConfigError:
                continue
        names = " or ".join(_type_name(t) for t in typing.get_args(hint))
        raise ConfigError(f"{where}: expected {names}, got {_short(value)}")
    if hint is type(None):
        if value is None:
            return None
    elif origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[float, ...]: any length
            if isinstance(value, (list, tuple)):
                return tuple(_coerce(v, args[0], where) for v in value)
        elif isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(_coerce(v, t, where) for v, t in zip(value, args))
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if _too_large_for_float(value):
                raise ConfigError(f"{where}: must be a finite number, got {_short(value)}")
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{where}: expected {_type_name(hint)}, got {_short(value)}")


_LARGEST_FLOAT = int(sys.float_info.max)


def _too_large_for_float(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) > _LARGEST_FLOAT


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        return "a list of numbers" if len(args) == 2 and args[1] is Ellipsis else f"a list of {len(args)} numbers"
    return getattr(hint, "__name__", str(hint))


# -- from limits.py ------------------------------------------------------------

MAX_IMAGE_SIZE = 1024
MAX_EPOCHS = 100_000
MAX_BATCH = 1 << 16
MAX_KNN_K = 100_000
MAX_PROCESSES = 1024  # per node, and nodes
MAX_STEPS = 10**9
MAX_LR = 100.0  # the linear probe's; training's --lr has none (a diverging run stops in one line)
MAX_WIDTH = 1 << 14  # widest MLP layer: 16384 x 16384 float32 weights are 1 GiB (the paper's are 2048)
MAX_LAYERS = 16  # the paper's projector has 2 or 3


def path_problem(text: str) -> str | None:
    """What every path option refuses: nothing, and a NUL (no file name holds one)."""
    if not text:
        return "is empty; give a path"
    if "\x00" in text:
        return f"{show_path(text)} holds a NUL character, which no path can"
    return None


def existing_path(text: str) -> str | None:
    """DATA, --val and the like: a path that is there and not an archive (what kind of data it holds, the loader says)."""
    if problem := path_problem(text) or archive_problem(text):
        return problem
    try:
        os.stat(text)
    except FileNotFoundError:
        return f"{show_path(text)}: no such file or folder"
    except OSError as e:  # a name too long, a folder we may not enter
        return f"{show_path(text)}: {os_error_text(e)}"
    return None


def output_name_problem(text: str, folder: bool = True) -> str | None:
    """What an output path's text must be: a path, named in UTF-8 (TensorBoard, YAML and the log lines need text)."""
    if problem := path_problem(text):
        return problem
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"{show_path(text)} is not valid UTF-8; choose a {'folder' if folder else 'file'} name in UTF-8"
    return None


def output_problem(text: str, folder: bool) -> str | None:
    """A path to write to: a folder (``folder``) or a file, under folders, named in UTF-8."""
    if problem := output_name_problem(text, folder):
        return problem
    try:
        return _output_kind(Path(text), folder)
    except OSError as e:  # a name too long, a folder we may not enter
        return f"{show_path(text)}: {os_error_text(e)}"


def _output_kind(path: Path, folder: bool) -> str | None:
    if path.exists():
        if folder != path.is_dir():
            return f"{show_path(path)} is a file, not a folder" if folder else f"{show_path(path)} is a folder; give a file name"
        return None
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else f"{show_path(parent)} is a file, not a folder"
    return None


# -- what every command prints ------------------------------------------------------------------


def add_output_flags(p: argparse.ArgumentParser) -> None:
    """--quiet and --no-progress, the same in every command (main() gives handlers ``args.progress``)."""
    p.add_argument("--quiet", action="store_true", help="warnings and errors only: no progress bars, no log lines, no results printed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars; the log lines stay")
