"""SimSiam in your own Lightning Trainer: the module, the data module, the online kNN and the CPU thread share that ``simsiam train`` uses.

>>> from simsiam.lightning import SimSiamModule, SimSiamDataModule, OnlineKnn  # doctest: +SKIP
>>> module = SimSiamModule(backbone="resnet18", image_size=32, base_lr=0.03)  # doctest: +SKIP
>>> data = SimSiamDataModule("path/to/images", batch_size=512, image_size=32)  # doctest: +SKIP
>>> L.Trainer(max_epochs=200, strategy="ddp", sync_batchnorm=True).fit(module, data)  # doctest: +SKIP

The classes live in :mod:`simsiam.train` (the one package that imports Lightning);
they load on first use, so importing this package loads none of them.
"""

from __future__ import annotations

from functools import partial

from simsiam import lazy

_HOMES = {
    "SimSiamModule": "simsiam.train.module",
    "SimSiamDataModule": "simsiam.train.module",
    "OnlineKnn": "simsiam.train.callbacks",
    "FairShare": "simsiam.train.callbacks",
}
__all__ = list(_HOMES)
__getattr__ = partial(lazy.attribute, __name__, _HOMES)  # PEP 562
__dir__ = partial(lazy.names, __name__, _HOMES)
