"""Typed configuration: one dataclass per concern, recipes, YAML in and out.

Precedence, lowest first: the dataclass defaults, a ``--recipe``, a ``--config``
YAML file, then command-line flags. Fields left as ``None`` are "auto" and are
filled by :func:`resolve` once the data and the device are known; the resolved
config is what goes into the run folder and every checkpoint.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

# Lightning's precision names that make sense for training here.
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "64", "transformer-engine")


class ConfigError(ValueError):
    """A bad option or config value; the message names the key at fault."""


@dataclass
class ModelConfig:
    backbone: str = "resnet18"
    small_images: bool | None = None  # auto: True for images of 64 px or less
    proj_dim: int = 2048
    proj_hidden_dim: int | None = None  # auto: proj_dim
    proj_layers: int | None = None  # auto: 2 for small images (paper, appendix D), else 3
    pred_hidden_dim: int | None = None  # auto: proj_dim // 4 (the paper's 512 for 2048)
    stop_gradient: bool = True  # False: the paper's collapsing ablation
    predictor: bool = True  # False: the paper's collapsing ablation


@dataclass
class AugmentConfig:
    min_scale: float = 0.2
    max_scale: float = 1.0
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    vflip_p: float = 0.0
    rotate: str = "none"  # none | 90 | free
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float | None = None  # auto: 0.5 above 64 px, 0 at 64 px or less
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0


@dataclass
class OptimConfig:
    base_lr: float | None = None  # lr = base_lr x batch / 256; auto: 0.03 small images, 0.05 else
    weight_decay: float | None = None  # auto: 5e-4 small images (CIFAR), 1e-4 else (ImageNet)
    momentum: float = 0.9
    warmup_epochs: float = 0.0
    fixed_predictor_lr: bool = False  # paper, Table 1: h's lr not decayed
    loss: str = "cosine"  # cosine | cross_entropy


@dataclass
class TrainConfig:
    data: str | None = None  # None: the bundled demo set
    val: str | None = None  # labeled images for the online kNN query; None: hold out a split of DATA
    out: str | None = None  # run folder; auto: runs/<data name>
    recipe: str | None = None
    epochs: int = 100
    batch_size: int = 512  # global batch, over all processes
    image_size: int | None = None  # auto: the data's median shorter side, at most 224
    held_out: float = 0.1  # fraction of labeled DATA kept for the online kNN
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_every: int = 1  # epochs between online kNN evaluations (0: never)
    seed: int = 0
    accelerator: str = "auto"  # auto | cpu | gpu
    devices: int | str = "auto"
    num_nodes: int = 1
    precision: str | None = None  # auto: bf16-mixed on GPU and on CPUs with bf16 matrix units, else 32-true
    compile: bool | None = None  # auto: on for GPU
    compile_mode: str = "default"  # torch.compile mode of the step; "reduce-overhead" replays it as CUDA graphs
    compile_augment: bool = False  # also compile the rendering of the views (fuses its ~140 small kernels)
    channels_last: bool | None = None  # auto: on for GPU, and for CPU where torch has oneDNN
    sync_batchnorm: bool = True  # used when more than one process runs
    log_every: int = 50  # steps between reads of the loss (each read is a host-device sync)
    checkpoint_every: int = 1  # epochs between saves of checkpoints/last.ckpt (and at the end)
    strict: bool = False  # stop at the first file that cannot be decoded
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: "TrainConfig | None" = None, where: str = "config") -> "TrainConfig":
        """A config from nested values over ``base``; unknown keys and wrong types raise ConfigError."""
        return _update(base or cls(), values, where)


# -- recipes --------------------------------------------------------------------------

RECIPES: dict[str, dict[str, Any]] = {
    # Paper, appendix D: ResNet-18 variant (3x3 stem, no max-pool), 2-layer 2048-d
    # projector, 512-d predictor hidden layer, SGD lr 0.03 x batch/256, wd 5e-4,
    # momentum 0.9, cosine decay, batch 512, 800 epochs; no blur on 32x32 images.
    "cifar10": dict(
        epochs=800,
        batch_size=512,
        model=dict(backbone="resnet18", small_images=True, proj_dim=2048, proj_layers=2, pred_hidden_dim=512),
        optim=dict(base_lr=0.03, weight_decay=5e-4, momentum=0.9),
        augment=dict(blur_p=0.0),
    ),
    # Paper, section 4 "Baseline settings": ResNet-50, 3-layer 2048-d projector,
    # 512-d predictor hidden layer, SGD lr 0.05 x batch/256, wd 1e-4, momentum 0.9,
    # cosine decay with the predictor's lr fixed (Table 1), batch 512, 100 epochs,
    # SimCLR/MoCo v2 augmentations with blur p=0.5, 224 px.
    "imagenet": dict(
        epochs=100,
        batch_size=512,
        image_size=224,
        model=dict(backbone="resnet50", small_images=False, proj_dim=2048, proj_layers=3, pred_hidden_dim=512),
        optim=dict(base_lr=0.05, weight_decay=1e-4, momentum=0.9, fixed_predictor_lr=True),
        augment=dict(blur_p=0.5),
    ),
    # The CPU demo (README, "Why the demo looks the way it does"): a half-width
    # ResNet-10 with the ImageNet stem trains ~50x faster than ResNet-18 with the
    # CIFAR stem on two cores, and a small batch with a high lr (base 0.3; 0.06
    # gained 5 points in 40 epochs, 0.3 gained 8 in 30) gets SimSiam past its
    # colour-unlearning phase within minutes.
    "demo": dict(
        epochs=30,
        batch_size=128,
        model=dict(backbone="resnet10-slim", small_images=False, proj_dim=512, proj_layers=2, pred_hidden_dim=128),
        optim=dict(base_lr=0.3, weight_decay=5e-4),
        knn_k=20,
    ),
}


def recipe(name: str) -> dict[str, Any]:
    if name not in RECIPES:
        raise ConfigError(f"--recipe: unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


# -- resolution -------------------------------------------------------------------------


def resolve(cfg: TrainConfig, image_size: int, on_gpu: bool) -> TrainConfig:
    """Fill every auto (None) field from the data's image size and the device."""
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model), augment=dataclasses.replace(cfg.augment), optim=dataclasses.replace(cfg.optim)
    )
    cfg.image_size = image_size
    small = image_size <= 64
    m, a, o = cfg.model, cfg.augment, cfg.optim
    m.small_images = small if m.small_images is None else m.small_images
    m.proj_hidden_dim = m.proj_hidden_dim or m.proj_dim
    m.proj_layers = m.proj_layers or (2 if small else 3)
    m.pred_hidden_dim = m.pred_hidden_dim or max(1, m.proj_dim // 4)
    a.blur_p = (0.0 if small else 0.5) if a.blur_p is None else a.blur_p
    o.base_lr = (0.03 if small else 0.05) if o.base_lr is None else o.base_lr
    o.weight_decay = (5e-4 if small else 1e-4) if o.weight_decay is None else o.weight_decay
    cfg.precision = cfg.precision or ("bf16-mixed" if on_gpu or cpu_bf16_trains(image_size, bool(m.small_images)) else "32-true")
    cfg.compile = on_gpu if cfg.compile is None else cfg.compile
    if cfg.channels_last is None:
        import torch

        cfg.channels_last = on_gpu or torch.backends.mkldnn.is_available()
    validate(cfg)
    return cfg


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX).

    There bf16 autocast trains a CIFAR ResNet-18 2.3x faster than float32 (README,
    "Speed"). Without it bf16 may be emulated in software, so float32 stays the default there.
    """
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, hence the guard
    try:
        return bool(probe and probe())
    except RuntimeError:
        return False


def cpu_bf16_trains(image_size: int, small_images: bool) -> bool:
    """Whether CPU training defaults to bf16 autocast: bf16 matrix units, and no 1x1 input to layer4.

    oneDNN's bf16 weight gradient of a stride-2 3x3 convolution with a 1x1 input is
    garbage: at 16 px with the ImageNet stem, identical steps gave different
    gradients for layer4's first convolution, some of them NaN. layer4 gets a 1x1
    input below 24 px with the ImageNet stem (16x downsampling before it); with the
    small-image stem (4x) it never does, since 8 px is the smallest size allowed.
    From a 2x2 input up the gradients are finite and bit for bit reproducible
    (tests/test_model.py).
    """
    return cpu_has_bf16_units() and image_size >= (8 if small_images else 24)


def validate(cfg: TrainConfig) -> None:
    """Range checks that name the option at fault."""
    from .augment import ROTATIONS
    from .loss import LOSSES
    from .model import BACKBONES

    checks = [
        (cfg.epochs >= 1, "--epochs", f"must be at least 1, got {cfg.epochs}"),
        (cfg.batch_size >= 2, "--batch-size", f"must be at least 2 (batch norm needs two samples), got {cfg.batch_size}"),
        (cfg.image_size is None or cfg.image_size >= 8, "--image-size", f"must be at least 8, got {cfg.image_size}"),
        (0 <= cfg.held_out < 1, "--held-out", f"must be in [0, 1), got {cfg.held_out}"),
        (cfg.knn_k >= 1, "--knn-k", f"must be at least 1, got {cfg.knn_k}"),
        (cfg.knn_temperature > 0, "--knn-temperature", f"must be positive, got {cfg.knn_temperature}"),
        (cfg.knn_every >= 0, "--knn-every", f"must be 0 or more, got {cfg.knn_every}"),
        (cfg.num_nodes >= 1, "--num-nodes", f"must be at least 1, got {cfg.num_nodes}"),
        (cfg.log_every >= 1, "log_every", f"must be at least 1, got {cfg.log_every}"),
        (cfg.checkpoint_every >= 1, "--checkpoint-every", f"must be at least 1, got {cfg.checkpoint_every}"),
        (cfg.accelerator in ("auto", "cpu", "gpu", "cuda"), "--accelerator", f"must be auto, cpu or gpu, got {cfg.accelerator!r}"),
        (cfg.model.backbone in BACKBONES, "--backbone", f"unknown backbone {cfg.model.backbone!r}; choose one of {', '.join(BACKBONES)}"),
        (cfg.model.proj_dim >= 1, "model.proj_dim", f"must be positive, got {cfg.model.proj_dim}"),
        (cfg.model.proj_layers is None or cfg.model.proj_layers >= 1, "model.proj_layers", f"must be at least 1, got {cfg.model.proj_layers}"),
        (cfg.model.proj_hidden_dim is None or cfg.model.proj_hidden_dim >= 1, "model.proj_hidden_dim", f"must be positive, got {cfg.model.proj_hidden_dim}"),
        (cfg.model.pred_hidden_dim is None or cfg.model.pred_hidden_dim >= 1, "--pred-hidden-dim", f"must be positive, got {cfg.model.pred_hidden_dim}"),
        (0 <= cfg.seed < 2**32, "--seed", f"must be in [0, 2**32), got {cfg.seed}"),
        (cfg.compile_mode in COMPILE_MODES, "--compile-mode", f"must be one of {', '.join(COMPILE_MODES)}, got {cfg.compile_mode!r}"),
        (cfg.compile_mode == "default" or cfg.compile is not False, "--compile-mode", "applies to the compiled step; add --compile (on by default only on a GPU)"),
        (cfg.precision is None or str(cfg.precision) in PRECISIONS, "--precision", f"must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}"),
        (cfg.optim.loss in LOSSES, "--loss", f"unknown loss {cfg.optim.loss!r}; choose one of {', '.join(LOSSES)}"),
        (cfg.optim.base_lr is None or cfg.optim.base_lr > 0, "--lr", f"must be positive, got {cfg.optim.base_lr}"),
        (cfg.optim.weight_decay is None or cfg.optim.weight_decay >= 0, "--weight-decay", f"must be 0 or more, got {cfg.optim.weight_decay}"),
        (cfg.optim.warmup_epochs >= 0, "--warmup-epochs", f"must be 0 or more, got {cfg.optim.warmup_epochs}"),
        (cfg.augment.rotate in ROTATIONS, "--rotate", f"must be one of {', '.join(ROTATIONS)}, got {cfg.augment.rotate!r}"),
        (0 < cfg.augment.min_scale <= cfg.augment.max_scale <= 1, "augment.min_scale", "need 0 < min_scale <= max_scale <= 1"),
        (0 < cfg.augment.ratio[0] <= cfg.augment.ratio[1], "augment.ratio", f"need 0 < ratio[0] <= ratio[1], got {list(cfg.augment.ratio)}"),
        (0 <= cfg.augment.hue <= 0.5, "augment.hue", f"must be in [0, 0.5], got {cfg.augment.hue}"),
        (0 < cfg.augment.blur_sigma[0] <= cfg.augment.blur_sigma[1], "augment.blur_sigma", f"need 0 < low <= high, got {list(cfg.augment.blur_sigma)}"),
    ]
    for name in ("brightness", "contrast", "saturation"):
        strength = getattr(cfg.augment, name)
        checks.append((strength >= 0, f"augment.{name}", f"must be 0 or more, got {strength}"))
    if isinstance(cfg.devices, int):
        checks.append((cfg.devices >= 1, "--devices", f"must be at least 1, got {cfg.devices}"))
    elif cfg.devices != "auto":
        checks.append((False, "--devices", f"must be a number or 'auto', got {cfg.devices!r}"))
    for name in ("hflip_p", "vflip_p", "jitter_p", "grayscale_p", "solarize_p", "blur_p"):
        p = getattr(cfg.augment, name)
        checks.append((p is None or 0 <= p <= 1, f"augment.{name}", f"must be in [0, 1], got {p}"))
    for ok, option, message in checks:
        if not ok:
            raise ConfigError(f"{option}: {message}")


# -- YAML -------------------------------------------------------------------------------


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config file ({e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values at the top level")
    return values


def save_yaml(cfg: TrainConfig, path: str | Path) -> None:
    from .atomic import atomic_write

    with atomic_write(path, "w") as fh:
        fh.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# -- helpers ----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _update(obj: Any, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(type(obj))
    known = {f.name for f in fields(obj)}
    changes = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _update(current, value, f"{where}.{key}")
        else:
            changes[key] = _coerce(value, hints[key], f"{where}.{key}")
    return dataclasses.replace(obj, **changes)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a field's type hint; ints may stand for floats, lists for tuples."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, where)
            except ConfigError as e:
                errors.append(e)
        names = " or ".join(_type_name(t) for t in typing.get_args(hint))
        raise ConfigError(f"{where}: expected {names}, got {value!r}")
    if hint is type(None):
        if value is None:
            return None
    elif origin is tuple:
        args = typing.get_args(hint)
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(_coerce(v, t, where) for v, t in zip(value, args))
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{where}: expected {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is tuple:
        return f"a list of {len(typing.get_args(hint))} numbers"
    return getattr(hint, "__name__", str(hint))
