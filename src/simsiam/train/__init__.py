"""Training with Lightning, the one package that imports it: the LightningModule, the callbacks,
where the processes are, and fit(), which `simsiam train` calls.

Its names load on first use (PEP 562), so that importing the package loads none of its modules.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "fit": "simsiam.train.run",
    "summary": "simsiam.train.run",
    "AtomicCheckpointIO": "simsiam.train.run",
    "CTRL_C": "simsiam.train.run",
    "LAUNCHERS": "simsiam.train.launch",
    "launched_processes": "simsiam.train.launch",
    "describe_distributed": "simsiam.train.launch",
}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
