"""The run's configuration: one schema, recipes, precedence, YAML in and out.

:class:`TrainConfig` is the only schema. Each field says, in one place, its
default, its flag and help, its allowed values and whether ``--resume`` may
change it (see :mod:`simsiam.options`); the model's and the views' sections live
beside the code they configure (:class:`~simsiam.model.ModelConfig`,
:class:`~simsiam.augment.AugmentConfig`).

Precedence, lowest first: the field defaults, a recipe, a YAML config file, then
command-line flags (:func:`layered`). Fields left as ``None`` are "auto" and are
filled by :func:`resolve` once the data and the device are known; the resolved
config is what goes into the run folder and every checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .augment import AugmentConfig
from .errors import ConfigError, RunError
from .loss import LOSSES
from .model import ModelConfig
from .options import at_least, flag_of, flatten, get, in_range, nest, option, positive, resumable_keys, to_dict, update, validate

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
        cache_size=256,  # resized once to 256 px (shorter side, centre crop), random crops of it at 224, as the paper's pipeline
        model=dict(backbone="resnet50", small_images=False, proj_dim=2048, proj_layers=3, pred_hidden_dim=512),
        optim=dict(base_lr=0.05, weight_decay=1e-4, momentum=0.9, fixed_predictor_lr=True),
        augment=dict(blur_p=0.5),
    ),
    # The CPU demo (README, "Why the demo looks the way it does"): a quarter-width
    # ResNet-10 with the ImageNet stem trains ~100x faster than ResNet-18 with the
    # CIFAR stem on two cores, and a small batch with a high lr (base 0.3; 0.06
    # gained 5 points in 40 epochs, 0.3 gained 8 in 30) gets SimSiam past its
    # colour-unlearning phase within minutes. In float32 on a 2-core Xeon without
    # AMX, 25 epochs of resnet10-tiny gained 11.0 points (0.272 -> 0.382); the
    # half-width resnet10-slim gained 8.8 in 30 epochs at half the speed.
    "demo": dict(
        epochs=25,
        batch_size=128,
        model=dict(backbone="resnet10-tiny", small_images=False, proj_dim=512, proj_layers=2, pred_hidden_dim=128),
        optim=dict(base_lr=0.3, weight_decay=5e-4),
        knn_k=20,
    ),
}
# Own data on a machine without a GPU: the demo's network, batch and lr, the
# user's epochs. The paper's networks run at single-digit images/s on two cores.
RECIPES["cpu"] = {k: v for k, v in RECIPES["demo"].items() if k not in ("epochs", "knn_k")}


def recipe(name: str) -> dict[str, Any]:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}", key="recipe")
    return RECIPES[name]





COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Lightning's precision names that train here: the augmentation renders float32 views,
# which the "-true" half and double precisions would not take.
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed")
ACCELERATORS = ("auto", "cpu", "gpu")
MAX_IMAGE_SIZE = 1024
MAX_CONFIG_BYTES = 1 << 20


def _per_channel(values: tuple[float, ...], low: float | None) -> str | None:
    """A check of mean or std: one finite number per channel (each above ``low`` when given)."""
    import math

    if not values:
        return "needs one value per channel, got none"
    if not all(math.isfinite(v) for v in values):
        return f"must be finite numbers, got {list(values)}"
    if low is not None and min(values) <= low:
        return f"must be positive for every channel, got {list(values)}"
    return None


def _devices(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"must be a number or 'auto', got {text!r}", key="devices") from None


def _check_devices(value: int | str) -> str | None:
    if isinstance(value, int):
        return None if value >= 1 else f"must be at least 1, got {value}"
    return None if value == "auto" else f"must be a number or 'auto', got {value!r}"


@dataclass
class OptimConfig:
    """The optimizer and schedule (paper, section 4): SGD, lr = base_lr x batch / 256, cosine decay."""

    base_lr: float | None = option(
        None, flag="--lr", check=positive, help="base learning rate; the lr is base_lr x batch / 256 (default: 0.03 for small images, else 0.05)"
    )
    weight_decay: float | None = option(
        None, flag="--weight-decay", check=at_least(0), help="SGD weight decay (default: 5e-4 for small images as on CIFAR, else 1e-4)"
    )
    momentum: float = option(0.9, flag="--momentum", check=in_range(0, 1, high_open=True), help="SGD momentum")
    warmup_epochs: float = option(0.0, flag="--warmup-epochs", metavar="EPOCHS", check=at_least(0), help="linear lr warmup before the cosine decay")
    fixed_predictor_lr: bool = option(False, flag="--fixed-predictor-lr", help="keep the predictor's lr fixed, not decayed (paper, Table 1)")
    loss: str = option("cosine", flag="--loss", choices=tuple(LOSSES), help="D: negative cosine similarity, or the symmetrized cross-entropy")


@dataclass
class TrainConfig:
    """Everything ``simsiam train`` is told; ``config.yaml`` in a run folder is this, resolved."""

    data: str | None = option(None, help="image folder or CIFAR-10 batches (None: the bundled demo set)")
    val: str | None = option(None, flag="--val", metavar="DATA", help="labeled images for the online kNN queries (default: hold out --held-out of DATA)")
    out: str | None = option(None, flag="--out", metavar="DIR", help="run folder (default: runs/<data name>, numbered if taken)")
    recipe: str | None = option(
        None, flag="--recipe", choices=tuple(RECIPES), help="named settings: cifar10 (paper, appendix D), imagenet (paper, section 4), demo, cpu"
    )
    epochs: int = option(100, flag="--epochs", check=at_least(1), resumable=True, help="passes over the training images")
    batch_size: int = option(512, flag="--batch-size", check=at_least(2), help="global batch over all processes; batch norm needs at least 2")
    image_size: int | None = option(
        None, flag="--image-size", metavar="PX", check=in_range(8, MAX_IMAGE_SIZE), help="training resolution (default: the data's median shorter side, at most 224)"
    )
    held_out: float = option(0.1, flag="--held-out", metavar="FRACTION", check=in_range(0, 1, high_open=True), help="fraction of labeled DATA kept out as online kNN queries")
    knn_k: int = option(200, flag="--knn-k", metavar="K", check=at_least(1), help="neighbours that vote in the online kNN")
    knn_temperature: float = option(0.1, flag="--knn-temperature", metavar="T", check=positive, help="kNN vote weight exp(similarity / T)")
    knn_every: int = option(1, flag="--knn-every", metavar="EPOCHS", check=at_least(0), resumable=True, help="epochs between online kNN evaluations, 0 for never")
    seed: int = option(0, flag="--seed", check=in_range(0, 2**32, high_open=True), help="seed of the initialisation, the views and the epoch order")
    accelerator: str = option("auto", flag="--accelerator", choices=ACCELERATORS, resumable=True, help="where to train (default: the GPU when there is one)")
    devices: int | str = option(
        "auto", flag="--devices", metavar="N", parse=_devices, check=_check_devices, resumable=True, help="processes per node, one per GPU (default: all GPUs, or 1 on CPU)"
    )
    num_nodes: int = option(1, flag="--num-nodes", metavar="N", check=at_least(1), resumable=True, help="machines taking part in distributed training")
    precision: str | None = option(
        None, flag="--precision", choices=PRECISIONS, resumable=True, help="Lightning precision (default: bf16-mixed on a GPU and on CPUs with AMX, else 32-true)"
    )
    compile: bool | None = option(None, flag="--compile", resumable=True, help="torch.compile the training step (default: on a GPU)")
    compile_mode: str = option(
        "default", flag="--compile-mode", choices=COMPILE_MODES, resumable=True, help="torch.compile mode of the step; reduce-overhead replays CUDA graphs"
    )
    compile_augment: bool = option(False, flag="--compile-augment", resumable=True, help="also torch.compile the rendering of the views")
    channels_last: bool | None = option(None, flag="--channels-last", help="channels_last memory format (default: on a GPU, and on a CPU with oneDNN)")
    sync_batchnorm: bool = option(True, flag="--sync-batchnorm", help="synchronise batch norm across processes under DDP (needs GPUs)")
    log_every: int = option(50, flag="--log-every", metavar="STEPS", check=at_least(1), resumable=True, help="steps between reads of the loss (each read is a host-device sync)")
    checkpoint_every: int = option(
        1, flag="--checkpoint-every", metavar="EPOCHS", check=at_least(1), resumable=True, help="epochs between saves of checkpoints/last.ckpt (and at the end)"
    )
    strict: bool = option(False, flag="--strict", resumable=True, help="stop at the first file that cannot be decoded, instead of skipping it")
    data_on: str = option(
        "auto", flag="--data-on", choices=("auto", "gpu", "memory", "disk"), resumable=True,
        help="where the decoded images are read from while training: the GPU, (pinned) memory, or the disk cache in prefetched batches "
        "(default: the GPU when they take under half its free memory, else memory when under half of the free RAM, else disk)",
    )  # fmt: skip
    cache_format: str = option(
        "auto", flag="--cache-format", choices=("auto", "raw", "jpeg"),
        help="how a folder's decoded images are kept on disk: raw pixels, or JPEGs re-encoded at quality 95 (several times smaller, "
        "decoded per batch); auto: raw unless it would not fit in memory or on the disk",
    )  # fmt: skip
    cache_size: int | None = option(
        None, flag="--cache-size", metavar="PX", check=in_range(8, MAX_IMAGE_SIZE),
        help="size the images are decoded and cached at, at least --image-size: random crops then see more of each image "
        "(default: --image-size; the imagenet recipe caches 256 px for 224 px training)",
    )  # fmt: skip
    mean: tuple[float, ...] | None = option(
        None,
        check=lambda v: _per_channel(v, low=None),
        help="per-channel mean of the pixels (scaled to [0, 1]) that views, features and exports are normalised with "
        "(default: ImageNet's for RGB; for other channel counts computed from the data and saved here)",
    )
    std: tuple[float, ...] | None = option(
        None, check=lambda v: _per_channel(v, low=0.0), help="per-channel standard deviation, as for mean (default: ImageNet's for RGB, else the data's)"
    )
    model: ModelConfig = option(help="the networks", default_factory=ModelConfig)
    augment: AugmentConfig = option(help="the view augmentations", default_factory=AugmentConfig)
    optim: OptimConfig = option(help="the optimizer and schedule", default_factory=OptimConfig)

    def cross_checks(self):
        if self.compile_mode != "default" and self.compile is False:
            yield "compile_mode", "applies to the compiled step; add --compile (on by default only on a GPU)"
        if self.cache_size is not None and self.image_size is not None and self.cache_size < self.image_size:
            yield "cache_size", f"{self.cache_size} is smaller than --image-size {self.image_size}; the views are cropped from the cached images"
        if self.cache_size is not None and self.image_size is None:
            yield "cache_size", "needs --image-size, the training size it is at least"
        for key in ("mean", "std"):
            values, channels = getattr(self, key), self.model.channels
            if values is not None and channels is not None and len(values) != channels:
                yield key, f"needs one value per channel: {channels}, got {len(values)}"

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel, for pixels scaled to [0, 1]: the config's, else ImageNet's (RGB, and runs saved before these fields)."""
        from .augment import IMAGENET_MEAN, IMAGENET_STD

        if (self.mean is None or self.std is None) and (self.model.channels or 3) != 3:
            raise ConfigError(f"a {self.model.channels}-channel run needs its per-channel mean and std (ImageNet's are for RGB)", key="mean")
        return tuple(self.mean or IMAGENET_MEAN), tuple(self.std or IMAGENET_STD)

    @property
    def lr(self) -> float:
        """The learning rate: base_lr x batch / 256 (paper, section 4)."""
        return self.optim.base_lr * self.batch_size / 256

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: TrainConfig | None = None, where: str = "config") -> TrainConfig:
        """A config from nested values over ``base``; unknown keys and wrong types raise ConfigError."""
        return update(base or cls(), values, where)


# -- precedence: recipe < config file < flags -----------------------------------------------


def default_recipe(given: dict[str, Any], on_gpu: bool) -> tuple[str | None, str | None]:
    """The recipe to use when none was named, and the line that says so.

    ``given`` holds the options the user set (flags and config file, flat). No
    DATA on a machine without a GPU is the demo; own data there gets the CPU-sized
    network unless a recipe, a backbone or a batch size was named.
    """
    if on_gpu or given.get("recipe") is not None:
        return None, None
    if given.get("data") is None:
        return "demo", "no DATA given: training on the bundled demo set with the CPU demo recipe (see README, 'The demo')"
    if not {"model.backbone", "batch_size"} & set(given):
        m = RECIPES["cpu"]["model"]
        return "cpu", (
            f"no GPU found: training the CPU-sized network ({m['backbone']}, batch {RECIPES['cpu']['batch_size']}; --recipe cpu); "
            "--recipe cifar10 or --recipe imagenet asks for the paper's setting"
        )
    return None, None


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
    names.update({key: flag_of(TrainConfig, key) or key for key in flags})
    return cfg, names


def check(cfg: TrainConfig, names: dict[str, str] | None = None) -> None:
    """Validate every field; the error names the option as the user gave it (``names``), else by its flag."""
    try:
        validate(cfg)
    except ConfigError as e:
        if e.key is None:
            raise
        raise e.named((names or {}).get(e.key) or flag_of(TrainConfig, e.key) or e.key) from None


def resume_config(saved: TrainConfig, given: dict[str, Any], out: Path) -> TrainConfig:
    """The config a resumed run continues with: its own, with the options that ``--resume`` may change.

    ``given`` holds the options typed again (flat); any other that disagrees with
    the run's own value is refused, naming its flag.
    """
    allowed = resumable_keys(TrainConfig)
    for key, value in given.items():
        if key in allowed or key in ("out", "data"):
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
    bf16 = on_gpu or cpu_bf16_trains(image_size, bool(model.small_images), model.backbone)
    precision = cfg.precision or ("bf16-mixed" if bf16 else "32-true")
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


def _check_networks(cfg: TrainConfig, names: dict[str, str], size_from_data: bool) -> None:
    """Build the networks on the meta device (no memory, no arithmetic); a ConfigError names the option at fault.

    A backbone that cannot take the image size (too small for its downsampling,
    not a multiple of a ViT's patch) says so here in one line, naming --image-size
    and --backbone, rather than failing inside the first training step. Other
    failures are left to the real build, which reports them.
    """
    import torch

    from .model import SimSiam

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


def cpu_bf16_trains(image_size: int, small_images: bool, backbone: str = "resnet18") -> bool:
    """Whether CPU training defaults to bf16 autocast: bf16 matrix units, a ResNet, and no 1x1 input to its layer4.

    oneDNN's bf16 weight gradient of a stride-2 3x3 convolution with a 1x1 input is
    garbage: at 16 px with the ImageNet stem, identical steps gave different
    gradients for layer4's first convolution, some of them NaN. layer4 gets a 1x1
    input below 24 px with the ImageNet stem (16x downsampling before it); with the
    small-image stem (4x) it never does, since 8 px is the smallest size allowed.
    From a 2x2 input up the gradients are finite and bit for bit reproducible
    (tests/test_model.py).

    That rule is about ResNet geometry, and it is the only one measured. Other
    backbones (MobileNets, EfficientNets, ConvNeXts, ViTs, timm models) downsample
    differently, and their 1x1 maps and strided convolutions come at other sizes,
    so on a CPU they train in float32 unless --precision says otherwise.
    """
    from .backbones import has_small_stem  # the torchvision ResNet family and our slim ResNets

    return cpu_has_bf16_units() and has_small_stem(backbone) and image_size >= (8 if small_images else 24)


# -- YAML -------------------------------------------------------------------------------


class _PlainLoader(yaml.SafeLoader):
    """YAML without aliases: a config file is a few dozen plain values, and aliases can nest into billions."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"aliases (*{event.anchor}) are not allowed in a config file, line {event.start_mark.line + 1}")
        return super().compose_node(parent, index)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's mapping; anything else (missing, too big, not YAML, aliases) is one ConfigError naming it."""
    path = Path(path)
    try:
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found" if not path.exists() else f"{path}: not a regular file")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size} bytes is too large for a config file (at most {MAX_CONFIG_BYTES})")
        values = yaml.load(path.read_text(encoding="utf-8"), Loader=_PlainLoader)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config file ({getattr(e, 'strerror', None) or e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({_first_line(e)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config file") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values at the top level")
    return values


def _first_line(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def save_yaml(cfg: TrainConfig, path: str | Path) -> None:
    from .io import atomic_write

    with atomic_write(path, "w") as fh:
        fh.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
