"""A run's config: the TrainConfig schema, the recipes, recipe < config file < flags, and YAML.

Its names load on first use (PEP 562), so that importing the package loads none of its modules.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "layered": "simsiam.config.layers",
    "check": "simsiam.config.layers",
    "resume_config": "simsiam.config.layers",
    "resolve": "simsiam.config.layers",
    "cpu_has_bf16_units": "simsiam.system",
    "cpu_bf16_trains": "simsiam.config.layers",
    "save_yaml": "simsiam.config.layers",
    "ConfigError": "simsiam.errors",
    "check_networks": "simsiam.config.layers",
    "TrainConfig": "simsiam.config.schema",
    "OptimConfig": "simsiam.config.schema",
    "ModelConfig": "simsiam.model.siamese",
    "AugmentConfig": "simsiam.augment",
    "COMPILE_MODES": "simsiam.config.schema",
    "PRECISIONS": "simsiam.config.schema",
    "ACCELERATORS": "simsiam.config.schema",
    "MAX_IMAGE_SIZE": "simsiam.options",
    "RECIPES": "simsiam.config.recipes",
    "recipe": "simsiam.config.recipes",
    "default_recipe": "simsiam.config.recipes",
    "load_yaml": "simsiam.config.file",
    "MAX_CONFIG_BYTES": "simsiam.config.file",
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
