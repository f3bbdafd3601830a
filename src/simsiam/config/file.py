"""Reading a config file: YAML of plain values, bounded in size, without aliases.

A ``--config`` file (or a run folder's ``config.yaml``) is read with PyYAML's safe
loader, refusing aliases (a few lines of them can nest into billions of values)
and files over :data:`MAX_CONFIG_BYTES`. Anything that is not a readable mapping
is one :class:`~simsiam.errors.ConfigError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from simsiam.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20


class _PlainLoader(yaml.SafeLoader):
    """YAML without aliases: a config file is a few dozen plain values, and aliases can nest into billions."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"aliases (*{event.anchor}) are not allowed in a config file, line {event.start_mark.line + 1}")
        return super().compose_node(parent, index)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's mapping; anything else (missing, too big, not YAML, aliases) is one ConfigError naming it."""
    if not str(path):  # Path("") would be the current folder
        raise ConfigError("the config file name is empty")
    path = Path(path)
    try:
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found" if not path.exists() else f"{path}: not a regular file")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size} bytes is too large for a config file (at most {MAX_CONFIG_BYTES})")
        values = yaml.load(path.read_text(encoding="utf-8"), Loader=_PlainLoader)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config file ({getattr(e, 'strerror', None) or e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({_first_line(e)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config file") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values at the top level")
    return values


def _first_line(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."
