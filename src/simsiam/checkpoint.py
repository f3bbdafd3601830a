"""Checkpoints: saved whole, read back with clear errors, loaded as the trained SimSiam.

Training writes checkpoints through Lightning with :func:`simsiam.files.save_torch_atomic`
(``AtomicCheckpointIO`` in :mod:`simsiam.train`): to a hidden temporary file
beside the target, renamed into place, so ``last.ckpt`` is always a complete
checkpoint: a kill during a save leaves the previous one, and a full disk raises
:class:`CheckpointError` with the previous one still there.

Reading goes through :func:`read_checkpoint`, which turns every way a file can
be wrong (missing, truncated, not a checkpoint, a checkpoint of some other
model) into one :class:`CheckpointError` that names the file, and
:func:`load_checkpoint` rebuilds the trained SimSiam from it: the one way
evaluation, exploration and export get a model. Nothing in a checkpoint is
trusted: its stored config passes the same schema and checks as the flags of
``simsiam train`` (:func:`stored_config`), and its weights must be the model's,
tensor by tensor: names, kind of numbers, shapes, all finite
(:func:`check_weights_fit`, which ``train --resume`` goes through too). A run folder stands for its
``checkpoints/last.ckpt``, the final epoch, the figure the evaluation
conventions report. Checkpoints of the previous layout of the model (backbone
and projector beside the predictor, before the encoder f had its own module)
load too: their weight names are renamed on reading.

This module does not import Lightning: ``import simsiam`` stays light.

>>> from simsiam.checkpoint import load_checkpoint
>>> model, cfg = load_checkpoint("runs/demo")  # doctest: +SKIP
>>> feats = model.features(images)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from simsiam.config.schema import TrainConfig
from simsiam.errors import CheckpointError, ConfigError
from simsiam.model.siamese import SimSiam
from simsiam.options import validate
from simsiam.run_folder import LAST, RunFolder

# Weight names of the previous layout -> today's (the LightningModule prefixes "model.").
LEGACY_PREFIXES = {"model.backbone.": "model.encoder.backbone.", "model.projector.": "model.encoder.projector."}


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A simsiam training checkpoint as a dict (on the CPU), or CheckpointError saying what is wrong with the file.

    Loads with ``weights_only=True``: a checkpoint is tensors and plain values, and
    nothing in a file handed to us runs code. Weight names of the previous model
    layout come back renamed (:func:`rename_legacy_weights`).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # a damaged file is the one line below, not torch's warnings about its bytes
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for damaged files
        text = str(e)
        if found := re.search(r"Unsupported global: GLOBAL (\S+)", text):
            raise CheckpointError(
                f"{path}: not a simsiam checkpoint (it stores Python objects such as {found[1]}, not only tensors and values)"
            ) from None
        if found := re.search(r"WeightsUnpickler error: \s*(.+)", text):
            why = found[1]
        else:
            why = text.strip().split(". ")[0] if text.strip() else "the file ends too early"
        size = path.stat().st_size
        raise CheckpointError(f"{path}: the checkpoint is corrupt or truncated ({size} bytes; {type(e).__name__}: {why[:160]})") from None
    hyper = state.get("hyper_parameters") if isinstance(state, dict) else None
    config = hyper.get("config") if isinstance(hyper, dict) else None
    if not isinstance(config, dict) or not isinstance(state.get("state_dict"), dict):
        hint = " (backbone.pt holds backbone weights only; pass the run folder)" if _looks_like_backbone(state) else ""
        raise CheckpointError(f"{path}: not a simsiam checkpoint (no simsiam config and weights in it){hint}")
    stored_config(path, config)
    names = [k for k in state["state_dict"] if not isinstance(k, str)]
    if names:
        raise CheckpointError(f"{path}: not a simsiam checkpoint (a weight name that is not text: {names[0]!r})")
    for key in ("epoch", "global_step"):
        value = state.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CheckpointError(f"{path}: not a simsiam checkpoint ({key} is {str(value)[:40]!r}, not a count)")
    state["state_dict"] = rename_legacy_weights(state["state_dict"])
    return state


def stored_config(path: str | Path, config: dict[str, Any]) -> TrainConfig:
    """The config a checkpoint stores, through the same schema and checks as the flags of ``simsiam train``.

    A key the schema does not know, a value of the wrong type, and a value that
    its option's check refuses (an image size of millions, a negative width) are
    one CheckpointError naming the file and the key: nothing downstream sizes a
    model or a tensor from an unchecked value.
    """
    try:
        cfg = TrainConfig.from_dict(config)
        validate(cfg)
    except ConfigError as e:
        raise CheckpointError(f"{path}: the config stored in the checkpoint is refused: {e}") from None
    return cfg


def rename_legacy_weights(weights: dict[str, Any]) -> dict[str, Any]:
    """The weights with the previous layout's names (``model.backbone.*``) renamed to today's (``model.encoder.backbone.*``).

    >>> list(rename_legacy_weights({"model.backbone.conv1.weight": 0, "model.predictor.net.0.weight": 1}))
    ['model.encoder.backbone.conv1.weight', 'model.predictor.net.0.weight']
    """
    renamed = {}
    for key, value in weights.items():
        old = next((p for p in LEGACY_PREFIXES if key.startswith(p)), None)
        renamed[key if old is None else LEGACY_PREFIXES[old] + key[len(old) :]] = value
    return renamed


def check_weights_fit(path: str | Path, saved: dict[str, Any], model_state: dict[str, torch.Tensor]) -> None:
    """Raise CheckpointError unless the saved weights are the model's: its names and shapes, its kinds of numbers, all finite.

    The one check of a checkpoint's tensors, before any is loaded or used: every
    command that reads weights (evaluate, embed, neighbors, map, export) and
    ``train --resume`` come through here (:func:`config_of`). The error names the
    file and the first tensor at fault, by its name in the file.
    """
    missing = sorted(set(model_state) - set(saved))
    unexpected = sorted(set(saved) - set(model_state))
    problems = []
    if missing:
        problems.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weights (e.g. {unexpected[0]})")
    if problems:
        raise CheckpointError(f"{path}: the weights are from another model than its config describes: {'; '.join(problems)}")
    for key, want in model_state.items():
        problem = tensor_problem(saved[key], want)
        if problem:
            raise CheckpointError(f"{path}: weight {key} {problem}")


def check_training_state(path: str | Path, state: dict[str, Any]) -> None:
    """Raise CheckpointError unless every number of the optimizer and lr schedule that ``--resume`` restores is finite.

    A NaN momentum buffer or learning rate would make the first step after resuming
    NaN; the error names the file and where in it the value is.
    """
    for key in ("optimizer_states", "lr_schedulers"):
        try:
            where = _first_not_finite(state.get(key), key)
        except RecursionError:
            raise CheckpointError(f"{path}: {key} is nested too deeply to be an optimizer's state") from None
        if where:
            raise CheckpointError(f"{path}: {where} is not finite (NaN or infinite); --resume would continue from it")


def _first_not_finite(value: Any, where: str) -> str | None:
    if isinstance(value, torch.Tensor):
        return where if value.is_floating_point() and not bool(torch.isfinite(value).all()) else None
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    return next((w for k, v in items if (w := _first_not_finite(v, f"{where}[{k!r}]"))), None)


def tensor_problem(value: Any, want: torch.Tensor) -> str | None:
    """What is wrong with a saved tensor where the model has ``want`` (what it is, its kind of numbers, its shape, finiteness), or None.

    >>> tensor_problem(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 3))
    'is int64, where the model has floating-point numbers (float32)'
    >>> tensor_problem(torch.tensor([1.0, float("nan")]), torch.zeros(2))
    'is not finite: 1 NaN and 0 infinite of its 2 values'
    """
    if not isinstance(value, torch.Tensor):
        return f"is a {type(value).__name__}, not a tensor"
    if value.layout != torch.strided or value.device.type != "cpu" or value.is_quantized:
        return f"is a {value.layout} tensor on {value.device}{' (quantized)' if value.is_quantized else ''}, not a plain one"
    kind = lambda t: (
        "complex" if t.is_complex() else "floating-point" if t.is_floating_point() else "bool" if t.dtype == torch.bool else "integer"
    )
    if kind(value) != kind(want):
        return f"is {str(value.dtype).removeprefix('torch.')}, where the model has {kind(want)} numbers ({str(want.dtype).removeprefix('torch.')})"
    if tuple(value.shape) != tuple(want.shape):
        return f"is {tuple(value.shape)}, the model's is {tuple(want.shape)}: the weights are from another model than its config describes"
    if value.is_floating_point():
        loaded = value if value.dtype == want.dtype else value.to(want.dtype)  # float64's 1e300 is float32's inf
        if not bool(torch.isfinite(loaded).all()):
            nan, inf = int(torch.isnan(loaded).sum()), int(torch.isinf(loaded).sum())
            return f"is not finite: {nan} NaN and {inf} infinite of its {value.numel()} values"
    return None


def check_finite_features(feats: torch.Tensor, checkpoint: str | Path | None = None) -> None:
    """Raise CheckpointError, naming the checkpoint, unless every feature (N, D) is a finite number."""
    bad = ~torch.isfinite(feats).all(dim=1)  # (N,)
    if bool(bad.any()):
        first, count = int(bad.nonzero()[0]), int(bad.sum())
        raise CheckpointError(
            f"{checkpoint or 'the model'}: its features are not finite (NaN or infinite) for {count} of {len(feats)} images, "
            f"the first image {first}: its weights overflow on these images; nothing was written"
        )


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file that ``path`` stands for: the file itself, or a run folder's checkpoints/last.ckpt."""
    path = Path(path)
    if path.is_dir():
        for candidate in (RunFolder(path).last_checkpoint, path / LAST):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{path}: a folder without checkpoints/{LAST}; pass a run folder of `simsiam train` or a .ckpt file")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run folder")
    return path


def config_of(file: str | Path, state: dict[str, Any]) -> TrainConfig:
    """The resolved config of a checkpoint read by :func:`read_checkpoint`, once its weights are known to fit the model it describes.

    The model is built on the meta device (shapes only: no memory, no time).
    """
    cfg = stored_config(file, state["hyper_parameters"]["config"])
    if cfg.model.small_images is None or cfg.model.proj_layers is None:
        raise CheckpointError(f"{file}: its training config is not resolved (model.small_images, model.proj_layers unset)")
    try:
        with torch.device("meta"):
            model = SimSiam(**dataclasses.asdict(cfg.model), image_size=cfg.image_size)
    except Exception as e:
        raise CheckpointError(f"{file}: its config does not describe a model this simsiam can build ({type(e).__name__}: {e})") from None
    check_weights_fit(file, state["state_dict"], {f"model.{k}": v for k, v in model.state_dict().items()})
    return cfg


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[SimSiam, TrainConfig]:
    """The trained SimSiam (eval mode) and its resolved TrainConfig, from a checkpoint file or a run folder."""
    file = resolve_checkpoint(path)
    state = read_checkpoint(file)
    cfg = config_of(file, state)
    model = SimSiam(**dataclasses.asdict(cfg.model), image_size=cfg.image_size)  # a ViT is built for its training size
    model.load_state_dict(_model_weights(state), strict=True)
    return model.to(map_location).eval(), cfg


def run_folder_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint file belongs to (its checkpoints/ folder's parent), else the file's folder."""
    return RunFolder.of_checkpoint(checkpoint).path


def _model_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k[len("model.") :]: v for k, v in state["state_dict"].items() if k.startswith("model.")}


def _looks_like_backbone(state: Any) -> bool:
    """Whether ``state`` is a bare state_dict (weight names to tensors), as ``export --format torchvision`` and backbone.pt hold.

    Any network's: a ResNet's (conv1., layer1.), a MobileNet's (features.0.0.), a ViT's (encoder.layers.), a timm model's.
    """
    if not isinstance(state, dict) or not state or "state_dict" in state or "hyper_parameters" in state:
        return False
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()) and any(
        k.endswith((".weight", ".bias", ".running_mean")) for k in state
    )
