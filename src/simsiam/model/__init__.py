"""The networks: SimSiam (encoder f = backbone + projection MLP, predictor h, the stop-gradient once),
the heads, backbones by name (torchvision, timm:, your own module) and the stem surgery that fits them.

Its names load on first use (PEP 562), so that importing the package loads none of its modules.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "BackboneInfo": "simsiam.model.backbones",
    "Encoder": "simsiam.model.siamese",
    "ModelConfig": "simsiam.model.siamese",
    "PredictionHead": "simsiam.model.siamese",
    "ProjectionHead": "simsiam.model.siamese",
    "SimSiam": "simsiam.model.siamese",
    "build_backbone": "simsiam.model.backbones",
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
