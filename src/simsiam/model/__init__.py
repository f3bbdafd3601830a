"""The networks: SimSiam (encoder f = backbone + projection MLP, predictor h, the stop-gradient once),
the heads, backbones by name (torchvision, timm:, your own module) and the stem surgery that fits them.

Its names load on first use (PEP 562), so that importing the package loads none of its modules.
"""

from __future__ import annotations

from functools import partial

from simsiam import lazy

_HOMES = {
    "BackboneInfo": "simsiam.model.backbones",
    "Encoder": "simsiam.model.siamese",
    "ModelConfig": "simsiam.settings",
    "PredictionHead": "simsiam.model.siamese",
    "ProjectionHead": "simsiam.model.siamese",
    "SimSiam": "simsiam.model.siamese",
    "build_backbone": "simsiam.model.backbones",
}
__all__ = list(_HOMES)
__getattr__ = partial(lazy.attribute, __name__, _HOMES)  # PEP 562: a name's module is imported on first use
__dir__ = partial(lazy.names, __name__, _HOMES)
