"""TrainConfig: the one schema of a run, and what ``config.yaml`` in a run folder holds.

Each field says, in one place, its default, its flag and help, its allowed values
and whether ``--resume`` may change it (see :mod:`simsiam.options`); the model's
and the views' sections live beside the code they configure
(:class:`~simsiam.settings.ModelConfig`, :class:`~simsiam.settings.AugmentConfig`).
Fields left as ``None`` are "auto", filled by :func:`simsiam.config.resolve`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simsiam.config.recipes import RECIPES
from simsiam.data import CACHE_FORMATS, DATA_ON
from simsiam.errors import ConfigError
from simsiam.options import (
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_IMAGE_SIZE,
    MAX_KNN_K,
    MAX_PROCESSES,
    MAX_STEPS,
    at_least,
    in_range,
    option,
    output_name_problem,
    path_problem,
    positive,
    to_dict,
    update,
)
from simsiam.settings import LOSS_KINDS, AugmentConfig, ModelConfig

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Lightning's precision names that train here: the augmentation renders float32 views,
# which the "-true" half and double precisions would not take.
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed")
ACCELERATORS = ("auto", "cpu", "gpu")


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
        return at_least(1, MAX_PROCESSES)(value)
    return None if value == "auto" else f"must be a number or 'auto', got {value!r}"


@dataclass
class OptimConfig:
    """The optimizer and schedule (paper, section 4): SGD, lr = base_lr x batch / 256, cosine decay."""

    base_lr: float | None = option(
        None,
        flag="--lr",
        check=positive,  # no bound above: a learning rate that diverges is one line when the loss turns non-finite
        help="base learning rate; the lr is base_lr x batch / 256 (default: 0.03 for small images, else 0.05)",
    )
    weight_decay: float | None = option(
        None, flag="--weight-decay", check=at_least(0, 1), help="SGD weight decay (default: 5e-4 for small images as on CIFAR, else 1e-4)"
    )
    momentum: float = option(0.9, flag="--momentum", check=in_range(0, 1, high_open=True), help="SGD momentum")
    warmup_epochs: float = option(
        0.0, flag="--warmup-epochs", metavar="EPOCHS", check=at_least(0, MAX_EPOCHS), help="linear lr warmup before the cosine decay"
    )
    fixed_predictor_lr: bool = option(
        False, flag="--fixed-predictor-lr", help="keep the predictor's lr fixed, not decayed (paper, Table 1)"
    )
    loss: str = option("cosine", flag="--loss", choices=LOSS_KINDS, help="D: negative cosine similarity, or the symmetrized cross-entropy")


# Experiment loggers (Lightning's own): name -> the package it needs and the extra that installs it.
LOGGERS = {"tensorboard": ("tensorboard", None), "csv": (None, None), "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}
LOGGER_OPTIONS = ("wandb.project", "wandb.name", "wandb.entity", "mlflow.tracking_uri", "mlflow.experiment", "mlflow.run_name")


def logger_problem(names: tuple[str, ...]) -> str | None:
    """An unknown logger, or one whose package is missing (the extra to install named), before any data is read."""
    import importlib.util

    from simsiam.options import closest

    for name in names:
        if name not in LOGGERS:
            guess = closest(name, LOGGERS)
            return f"unknown logger {name!r}" + (f"; did you mean {guess}?" if guess else f"; choose from {', '.join(LOGGERS)}")
        package, extra = LOGGERS[name]
        if package and importlib.util.find_spec(package) is None:
            return f"{name} needs the {package} package: pip install 'simsiam[{extra}]'" if extra else f"{name} needs {package}"
    return None if names else "name at least one logger"


def logger_option_problem(items: tuple[str, ...]) -> str | None:
    from simsiam.options import closest

    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not value:
            return f"expected KEY=VALUE, got {item!r}"
        if key not in LOGGER_OPTIONS:
            guess = closest(key, LOGGER_OPTIONS)
            return f"unknown logger setting {key!r}" + (f"; did you mean {guess}?" if guess else f" (known: {', '.join(LOGGER_OPTIONS)})")
    return None


@dataclass
class TrainConfig:
    """Everything ``simsiam train`` is told; ``config.yaml`` in a run folder is this, resolved.

    Its checks of ``data``, ``val`` and ``out`` are of the text only: a stored
    config (a checkpoint read on another machine) names paths that need not be
    there. Whether they are is checked where a run is started (``check_paths``).
    """

    data: str | None = option(None, check=path_problem, help="image folder or CIFAR-10 batches (None: the bundled demo set)")
    val: str | None = option(
        None,
        flag="--val",
        metavar="DATA",
        check=path_problem,
        help="labeled images for the online kNN queries (default: hold out --held-out of DATA)",
    )
    out: str | None = option(
        None,
        flag="--out",
        metavar="DIR",
        check=output_name_problem,
        help="run folder (default: runs/<data name>, numbered if taken)",
    )
    logger: tuple[str, ...] = option(
        ("tensorboard",),
        flag="--logger",
        metavar="NAME",
        repeat=True,
        check=logger_problem,
        resumable=True,
        help="where the metrics go besides metrics.csv: tensorboard, csv, wandb, mlflow; repeat for several (default: tensorboard)",
    )
    logger_option: tuple[str, ...] = option(
        (),
        flag="--logger-option",
        metavar="KEY=VALUE",
        repeat=True,
        check=logger_option_problem,
        resumable=True,
        help="a logger's setting, repeatable: wandb.project=P, wandb.name=N, wandb.entity=E, mlflow.tracking_uri=URI, "
        "mlflow.experiment=E, mlflow.run_name=N (default: project and experiment simsiam, named after the run folder, "
        "MLflow in a file store in the run folder unless $MLFLOW_TRACKING_URI)",
    )
    init_weights: str | None = option(
        None,
        flag="--init-weights",
        metavar="FILE",
        check=path_problem,
        help="start the backbone from these weights: simsiam's export, a torchvision or timm state_dict of the same network, "
        "or a .safetensors file; the projector and predictor start fresh",
    )
    init_weights_nonstrict: bool = option(
        False,
        flag="--init-weights-nonstrict",
        help="load the --init-weights tensors that fit and name the others, instead of refusing a file that does not fit exactly",
    )
    init_weights_sha256: str | None = option(None, help="the SHA-256 of --init-weights, recorded when the run starts")
    recipe: str | None = option(
        None,
        flag="--recipe",
        choices=tuple(RECIPES),
        help="named settings: cifar10 (paper, appendix D), imagenet (paper, section 4), demo, cpu",
    )
    epochs: int = option(100, flag="--epochs", check=at_least(1, MAX_EPOCHS), resumable=True, help="passes over the training images")
    batch_size: int = option(
        512, flag="--batch-size", check=at_least(2, MAX_BATCH), help="global batch over all processes; batch norm needs at least 2"
    )
    image_size: int | None = option(
        None,
        flag="--image-size",
        metavar="PX",
        check=in_range(8, MAX_IMAGE_SIZE),
        help="training resolution (default: the data's median shorter side, at most 224)",
    )
    held_out: float = option(
        0.1,
        flag="--held-out",
        metavar="FRACTION",
        check=in_range(0, 1, high_open=True),
        help="fraction of labeled DATA kept out as online kNN queries",
    )
    knn_k: int = option(200, flag="--knn-k", metavar="K", check=at_least(1, MAX_KNN_K), help="neighbours that vote in the online kNN")
    knn_temperature: float = option(0.1, flag="--knn-temperature", metavar="T", check=positive, help="kNN vote weight exp(similarity / T)")
    knn_every: int = option(
        1,
        flag="--knn-every",
        metavar="EPOCHS",
        check=at_least(0, MAX_EPOCHS),
        resumable=True,
        help="epochs between online kNN evaluations, 0 for never",
    )
    seed: int = option(
        0, flag="--seed", check=in_range(0, 2**32, high_open=True), help="seed of the initialisation, the views and the epoch order"
    )
    accelerator: str = option(
        "auto", flag="--accelerator", choices=ACCELERATORS, resumable=True, help="where to train (default: the GPU when there is one)"
    )
    devices: int | str = option(
        "auto",
        flag="--devices",
        metavar="N",
        parse=_devices,
        check=_check_devices,
        resumable=True,
        help="processes per node, one per GPU (default: all GPUs, or 1 on CPU)",
    )
    num_nodes: int = option(
        1,
        flag="--num-nodes",
        metavar="N",
        check=at_least(1, MAX_PROCESSES),
        resumable=True,
        help="machines taking part in distributed training",
    )
    precision: str | None = option(
        None,
        flag="--precision",
        choices=PRECISIONS,
        resumable=True,
        help="Lightning precision (default: bf16-mixed on a GPU and on CPUs with AMX, else 32-true)",
    )
    compile: bool | None = option(None, flag="--compile", resumable=True, help="torch.compile the training step (default: on a GPU)")
    compile_mode: str = option(
        "default",
        flag="--compile-mode",
        choices=COMPILE_MODES,
        resumable=True,
        help="torch.compile mode of the step; reduce-overhead replays CUDA graphs",
    )
    compile_augment: bool = option(False, flag="--compile-augment", resumable=True, help="also torch.compile the rendering of the views")
    channels_last: bool | None = option(
        None, flag="--channels-last", help="channels_last memory format (default: on a GPU, and on a CPU with oneDNN)"
    )
    sync_batchnorm: bool = option(True, flag="--sync-batchnorm", help="synchronise batch norm across processes under DDP (needs GPUs)")
    log_every: int = option(
        50,
        flag="--log-every",
        metavar="STEPS",
        check=at_least(1, MAX_STEPS),
        resumable=True,
        help="steps between reads of the loss (each read is a host-device sync)",
    )
    checkpoint_every: int = option(
        1,
        flag="--checkpoint-every",
        metavar="EPOCHS",
        check=at_least(1, MAX_EPOCHS),
        resumable=True,
        help="epochs between saves of checkpoints/last.ckpt (and at the end)",
    )
    strict: bool = option(
        False, flag="--strict", resumable=True, help="stop at the first file that cannot be decoded, instead of skipping it"
    )
    data_on: str = option(
        "auto", flag="--data-on", choices=DATA_ON, resumable=True,
        help="where the decoded images are read from while training: the GPU, (pinned) memory, or the disk cache in prefetched batches "
        "(default: the GPU when they take under half its free memory, else memory when under half of the free RAM, else disk)",
    )  # fmt: skip
    cache_format: str = option(
        "auto", flag="--cache-format", choices=CACHE_FORMATS,
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
        None,
        check=lambda v: _per_channel(v, low=0.0),
        help="per-channel standard deviation, as for mean (default: ImageNet's for RGB, else the data's)",
    )
    model: ModelConfig = option(help="the networks", default_factory=ModelConfig)
    augment: AugmentConfig = option(help="the view augmentations", default_factory=AugmentConfig)
    optim: OptimConfig = option(help="the optimizer and schedule", default_factory=OptimConfig)

    def cross_checks(self):
        if self.compile_mode != "default" and self.compile is False:
            yield "compile_mode", "applies to the compiled step; add --compile (on by default only on a GPU)"
        if self.cache_size is not None and self.image_size is not None and self.cache_size < self.image_size:
            yield (
                "cache_size",
                f"{self.cache_size} is smaller than --image-size {self.image_size}; the views are cropped from the cached images",
            )
        if self.cache_size is not None and self.image_size is None:
            yield "cache_size", "needs --image-size, the training size it is at least"
        for key in ("mean", "std"):
            values, channels = getattr(self, key), self.model.channels
            if values is not None and channels is not None and len(values) != channels:
                yield key, f"needs one value per channel: {channels}, got {len(values)}"

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel, for pixels scaled to [0, 1]: the config's, else ImageNet's (RGB, and runs saved before these fields)."""
        from simsiam.augment import normalization

        if (self.mean is None or self.std is None) and (self.model.channels or 3) != 3:
            raise ConfigError(
                f"a {self.model.channels}-channel run needs its per-channel mean and std (ImageNet's are for RGB)", key="mean"
            )
        return normalization(self.mean, self.std, self.model.channels or 3)

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
