"""A run's config: the TrainConfig schema, the recipes, recipe < config file < flags, and YAML.

Its names load on first use (PEP 562), so that importing the package loads none of its modules.
"""

from __future__ import annotations

from functools import partial

from simsiam import lazy

_HOMES = {
    "layered": "simsiam.config.layers",
    "check": "simsiam.config.layers",
    "resume_config": "simsiam.config.layers",
    "resolve": "simsiam.config.layers",
    "cpu_has_bf16_units": "simsiam.system",
    "default_precision": "simsiam.config.layers",
    "save_yaml": "simsiam.config.layers",
    "ConfigError": "simsiam.errors",
    "check_networks": "simsiam.config.layers",
    "TrainConfig": "simsiam.config.schema",
    "OptimConfig": "simsiam.config.schema",
    "ModelConfig": "simsiam.settings",
    "AugmentConfig": "simsiam.settings",
    "COMPILE_MODES": "simsiam.config.schema",
    "PRECISIONS": "simsiam.config.schema",
    "ACCELERATORS": "simsiam.config.schema",
    "MAX_IMAGE_SIZE": "simsiam.options",
    "RECIPES": "simsiam.config.recipes",
    "recipe": "simsiam.config.recipes",
    "default_recipe": "simsiam.config.recipes",
    "load_yaml": "simsiam.config.layers",
    "MAX_CONFIG_BYTES": "simsiam.config.layers",
}
__all__ = list(_HOMES)
__getattr__ = partial(lazy.attribute, __name__, _HOMES)  # PEP 562: a name's module is imported on first use
__dir__ = partial(lazy.names, __name__, _HOMES)
