"""Training with Lightning, the one package that imports it: the LightningModule, the callbacks,
where the processes are, and fit(), which `simsiam train` calls.

Its names load on first use (PEP 562), so that importing the package loads none of its modules.
"""

from __future__ import annotations

from functools import partial

from simsiam import lazy

_HOMES = {
    "fit": "simsiam.train.run",
    "SimSiamModule": "simsiam.train.module",
    "SimSiamDataModule": "simsiam.train.module",
    "OnlineKnn": "simsiam.train.callbacks",
    "summary": "simsiam.train.run",
    "AtomicCheckpointIO": "simsiam.train.run",
    "CTRL_C": "simsiam.train.run",
    "LAUNCHERS": "simsiam.train.launch",
    "launched_processes": "simsiam.train.launch",
    "describe_distributed": "simsiam.train.launch",
}
__all__ = list(_HOMES)
__getattr__ = partial(lazy.attribute, __name__, _HOMES)  # PEP 562: a name's module is imported on first use
__dir__ = partial(lazy.names, __name__, _HOMES)
