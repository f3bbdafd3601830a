"""Names of a package that load on first use (PEP 562), so that importing the package stays light.

``import simsiam`` gives the model, the loss, the views and kNN; the data layer,
the config, training (Lightning) and checkpoints load when a name of theirs is
first used. Each package lists where its public names live (``homes``: name ->
module) and hands its module-level ``__getattr__`` and ``__dir__`` to the two
functions below, which run only when such a name is asked for.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any


def attribute(package: str, homes: dict[str, str], name: str) -> Any:
    """``package.name``, imported from its home module on first use and then kept as a plain attribute.

    >>> attribute("simsiam", {"load_checkpoint": "simsiam.checkpoint"}, "load_checkpoint").__name__
    'load_checkpoint'
    """
    if name not in homes:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(homes[name]), name)
    setattr(sys.modules[package], name, value)  # found once, then a plain attribute
    return value


def names(package: str, homes: dict[str, str]) -> list[str]:
    """What ``dir(package)`` shows: what it holds, and the names it would load."""
    return sorted({*vars(sys.modules[package]), *homes})
