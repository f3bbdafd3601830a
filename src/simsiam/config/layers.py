"""A run's config, made: recipe < config file < flags, checked, resolved, resumed, saved.

The schema is :class:`~simsiam.config.schema.TrainConfig` (re-exported here, as are the
recipes and the reading of config files). Precedence, lowest first: the field
defaults, a recipe (:mod:`simsiam.config.recipes`), a YAML config file
(:func:`load_yaml`, below), then command-line flags (:func:`layered`). Fields
left as ``None`` are "auto" and are filled by :func:`resolve` once the data and
the device are known; the resolved config is what goes into the run folder and
every checkpoint.

A ``--config`` file (or a run folder's ``config.yaml``) is read with PyYAML's safe
loader, refusing aliases (a few lines of them can nest into billions of values)
and files over :data:`MAX_CONFIG_BYTES`. Anything that is not a readable mapping
is one :class:`~simsiam.errors.ConfigError` naming the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from simsiam.config.recipes import RECIPES, default_recipe, recipe
from simsiam.config.schema import ACCELERATORS, COMPILE_MODES, PRECISIONS, OptimConfig, TrainConfig
from simsiam.errors import ConfigError, RunError
from simsiam.files import error_text, os_error_text
from simsiam.options import MAX_IMAGE_SIZE, existing_path, flag_of, flatten, get, nest, output_problem, resumable_keys, validate
from simsiam.settings import AugmentConfig, ModelConfig
from simsiam.system import cpu_has_bf16_units

__all__ = ["layered", "check", "resume_config", "resolve", "cpu_has_bf16_units", "default_precision", "save_yaml", "ConfigError"]
__all__ += ["check_networks", "check_init_weights"]
# Re-exported from where they are defined: the schema, the recipes, and the reading of config files.
__all__ += ["TrainConfig", "OptimConfig", "ModelConfig", "AugmentConfig", "COMPILE_MODES", "PRECISIONS", "ACCELERATORS", "MAX_IMAGE_SIZE"]
__all__ += ["RECIPES", "recipe", "default_recipe", "load_yaml", "MAX_CONFIG_BYTES"]


# -- precedence: recipe < config file < flags -----------------------------------------------


def layered(flags: dict[str, Any], file: dict[str, Any] | None = None, file_name: str = "config", auto_recipe: str | None = None):
    """The config from a recipe, a config file's values and flags, in that order of precedence.

    ``flags`` are flat ({dotted key: value}); ``file`` is the nested mapping of a
    YAML file. The recipe is the one named by a flag, else by the file, else
    ``auto_recipe``. Returns the config and, for every key set along the way, the
    name the user knows it by (``--lr``, ``run.yaml: optim.base_lr``,
    ``recipe demo: epochs``), for error messages.

    >>> cfg, names = layered({"epochs": 3}, {"recipe": "demo", "epochs": 5, "optim": {"base_lr": 0.5}}, "run.yaml")
    >>> cfg.epochs, cfg.optim.base_lr, cfg.batch_size, names["optim.base_lr"], names["epochs"]
    (3, 0.5, 128, 'run.yaml: optim.base_lr', '--epochs')
    """
    file = file or {}
    name = flags.get("recipe") or file.get("recipe") or auto_recipe
    cfg, names = TrainConfig(), {}
    if name is not None:
        where = "--recipe" if flags.get("recipe") else f"{file_name}: recipe" if file.get("recipe") else "recipe"
        try:
            values = recipe(name)
        except ConfigError as e:
            raise e.named(where) from None
        cfg = TrainConfig.from_dict(values, base=cfg, where=f"recipe {name}")
        cfg.recipe = name
        names.update({key: f"recipe {name}: {key}" for key in flatten(values)})
    cfg = TrainConfig.from_dict(file, base=cfg, where=file_name)
    names.update({key: f"{file_name}: {key}" for key in flatten(file)})
    cfg = TrainConfig.from_dict(nest(flags), base=cfg, where="options")
    names.update({key: flag_of(TrainConfig, key) or ("DATA" if key == "data" else key) for key in flags})
    return cfg, names


def check(cfg: TrainConfig, names: dict[str, str] | None = None) -> None:
    """Validate every field; the error names the option as the user gave it (``names``), else by its flag."""
    try:
        validate(cfg)
    except ConfigError as e:
        if e.key is None:
            raise
        raise e.named((names or {}).get(e.key) or flag_of(TrainConfig, e.key) or e.key) from None


def check_paths(cfg: TrainConfig, names: dict[str, str] | None = None) -> None:
    """Where a run starts: DATA and --val are there, --out is a folder or can be one (a stored config is not held to this)."""
    for key, problem in (
        ("data", cfg.data and existing_path(cfg.data)),
        ("val", cfg.val and existing_path(cfg.val)),
        ("init_weights", cfg.init_weights and existing_path(cfg.init_weights)),
        ("out", cfg.out and output_problem(cfg.out, folder=True)),
    ):
        if problem:
            name = (names or {}).get(key) or flag_of(TrainConfig, key) or "DATA"
            raise ConfigError(problem).named(name)


def resume_config(saved: TrainConfig, given: dict[str, Any], out: Path) -> TrainConfig:
    """The config a resumed run continues with: its own, with the options that ``--resume`` may change.

    ``given`` holds the options typed again (flat); any other that disagrees with
    the run's own value is refused, naming its flag.
    """
    allowed = resumable_keys(TrainConfig)
    for key, value in given.items():
        if key in allowed or key in ("out", "data", "val"):  # the data named again: simsiam.train.run checks them
            continue
        had = get(saved, key)
        if had != value and not (isinstance(had, tuple) and list(had) == list(value)):
            what = "the checkpoint is of another model: " if key.startswith("model.") else ""
            may = ", ".join(flag_of(TrainConfig, k) or k for k in allowed)
            raise RunError(
                f"{flag_of(TrainConfig, key) or key}: {what}the run in {out} has {key} = {had!r}, not {value!r}; --resume continues a run "
                f"with its own settings and may change only {may}; to train with another {key}, start a new run with another --out"
            )
    return TrainConfig.from_dict(nest({k: v for k, v in given.items() if k in allowed}), base=saved)


# -- auto fields ------------------------------------------------------------------------------


def resolve(
    cfg: TrainConfig,
    image_size: int,
    on_gpu: bool,
    names: dict[str, str] | None = None,
    channels: int | None = None,
    statistics: Callable[[], tuple[tuple[float, ...], tuple[float, ...]]] | None = None,
) -> TrainConfig:
    """Fill every auto (None) field from the data's image size and channels and the device, then check the result.

    ``channels`` is the data's channel count (default 3). For other counts than 3,
    ``statistics()`` gives the data's per-channel (mean, std) when the config has
    none; RGB keeps mean and std at None, which stands for ImageNet's. The networks
    are built once on the meta device (shapes only), so a backbone that cannot take
    the image size or the channels is one ConfigError now, before any training.
    """
    if cfg.image_size is None and not 8 <= image_size <= MAX_IMAGE_SIZE:
        raise ConfigError(
            f"DATA: its images are {image_size} px on the shorter side (the median of a sample); "
            f"training needs 8 to {MAX_IMAGE_SIZE}: set --image-size"
        )
    small, size_from_data = image_size <= 64, cfg.image_size is None
    model = cfg.model.resolved(image_size, channels)
    mean, std = cfg.mean, cfg.std
    if model.channels != 3 and (mean is None or std is None) and statistics is not None:
        data_mean, data_std = statistics()
        mean, std = mean or data_mean, std or data_std
    optim = dataclasses.replace(
        cfg.optim,
        base_lr=(0.03 if small else 0.05) if cfg.optim.base_lr is None else cfg.optim.base_lr,
        weight_decay=(5e-4 if small else 1e-4) if cfg.optim.weight_decay is None else cfg.optim.weight_decay,
    )
    precision = cfg.precision or default_precision(on_gpu)
    if cfg.channels_last is None:
        import torch

        channels_last = on_gpu or torch.backends.mkldnn.is_available()
    else:
        channels_last = cfg.channels_last
    cfg = dataclasses.replace(
        cfg,
        image_size=image_size,
        model=model,
        augment=cfg.augment.resolved(image_size),
        optim=optim,
        precision=precision,
        compile=on_gpu if cfg.compile is None else cfg.compile,
        channels_last=channels_last,
        mean=mean,
        std=std,
    )
    check(cfg, names)
    _check_networks(cfg, names or {}, size_from_data)
    return cfg


def check_networks(cfg: TrainConfig, names: dict[str, str] | None = None) -> None:
    """With --image-size set, whether the networks take it, as :func:`resolve` checks, but before DATA is decoded.

    Channels are the config's, else 3: what a backbone refuses is a size, whatever the channels.
    """
    if cfg.image_size is not None:
        model = cfg.model.resolved(cfg.image_size, cfg.model.channels)
        _check_networks(dataclasses.replace(cfg, model=model), names or {}, size_from_data=False)


def check_init_weights(cfg: TrainConfig, names: dict[str, str] | None = None) -> None:
    """--init-weights read and held against the backbone (built on the meta device) before DATA is decoded."""
    if cfg.init_weights is None:
        return
    import torch

    from simsiam.model.backbones import build, load_weights, read_weights

    model = cfg.model.resolved(cfg.image_size or 224, cfg.model.channels)
    name = (names or {}).get("init_weights") or "--init-weights"
    try:
        with torch.device("meta"):
            net, _ = build(model.backbone, small_images=bool(model.small_images), channels=model.channels or 3, image_size=cfg.image_size)
        load_weights(net, read_weights(cfg.init_weights), strict=not cfg.init_weights_nonstrict, where=cfg.init_weights, load=False)
    except ConfigError as e:
        raise ConfigError(e.reason).named(name) from None


def _check_networks(cfg: TrainConfig, names: dict[str, str], size_from_data: bool) -> None:
    """Build the networks on the meta device (no memory, no arithmetic); a ConfigError names the option at fault.

    A backbone that cannot take the image size (too small for its downsampling,
    not a multiple of a ViT's patch) says so here in one line, naming --image-size
    and --backbone, rather than failing inside the first training step. Other
    failures are left to the real build, which reports them.
    """
    import torch

    from simsiam.model.siamese import SimSiam

    try:
        with torch.device("meta"):
            SimSiam(**dataclasses.asdict(cfg.model), image_size=cfg.image_size)
    except ConfigError as e:
        key, reason = e.key or "model.backbone", e.reason
        if key == "image_size" and size_from_data:
            reason += f"; {cfg.image_size} px is the size found from DATA: set --image-size, or choose another --backbone"
        elif key == "image_size":
            reason += "; choose another --image-size or --backbone"
        raise ConfigError(reason).named(names.get(key) or flag_of(TrainConfig, key) or key) from None
    except Exception:
        pass


def default_precision(on_gpu: bool) -> str:
    """Training precision when --precision is not given: bf16 autocast on a GPU, float32 on any CPU.

    On a CPU with bf16 matrix units (Intel AMX) bf16 autocast ran the bundled demo
    at the same speed as float32 but ended 4.4 kNN points lower (0.336 against
    0.380, measured twice on two 2-core AMX Xeons); without AMX bf16 is emulated
    and slower. So float32 on every CPU; --precision bf16-mixed still asks for it.
    Feature extraction follows the same rule (:func:`simsiam.evaluate.extract_features`).
    """
    return "bf16-mixed" if on_gpu else "32-true"


# -- the run folder's config.yaml ------------------------------------------------------------


def save_yaml(cfg: TrainConfig, path: str | Path) -> None:
    from simsiam.files import atomic_write

    with atomic_write(path, "w") as fh:
        fh.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# -- reading a config file (YAML) ------------------------------------------------------------

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
        raise ConfigError(f"{path}: cannot read config file ({os_error_text(e)})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({error_text(e, first_line=True)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config file") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values at the top level")
    return values
