"""Checkpoints: saved whole, read back with clear errors, loaded as the trained SimSiam.

Training writes checkpoints through Lightning with :func:`simsiam.io.save_torch_atomic`
(``AtomicCheckpointIO`` in :mod:`simsiam.train`): to a hidden temporary file
beside the target, renamed into place, so ``last.ckpt`` is always a complete
checkpoint: a kill during a save leaves the previous one, and a full disk raises
:class:`CheckpointError` with the previous one still there.

Reading goes through :func:`read_checkpoint`, which turns every way a file can
be wrong (missing, truncated, not a checkpoint, a checkpoint of some other
model) into one :class:`CheckpointError` that names the file, and
:func:`load_checkpoint` rebuilds the trained SimSiam from it: the one way
evaluation, exploration and export get a model. A run folder stands for its
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
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig
from .errors import CheckpointError, ConfigError
from .model import SimSiam
from .run_folder import LAST, RunFolder

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
    config = state.get("hyper_parameters", {}).get("config") if isinstance(state, dict) else None
    if not isinstance(config, dict) or not isinstance(state.get("state_dict"), dict):
        hint = " (backbone.pt holds backbone weights only; pass the run folder)" if _looks_like_backbone(state) else ""
        raise CheckpointError(f"{path}: not a simsiam checkpoint (no simsiam config and weights in it){hint}")
    try:
        TrainConfig.from_dict(config)
    except ConfigError as e:
        raise CheckpointError(f"{path}: not a checkpoint of this simsiam version ({e})") from None
    state["state_dict"] = rename_legacy_weights(state["state_dict"])
    return state


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


def check_weights_fit(path: str | Path, saved: dict[str, torch.Tensor], model_state: dict[str, torch.Tensor]) -> None:
    """Raise CheckpointError unless the saved weights have exactly the model's names and shapes."""
    missing = sorted(set(model_state) - set(saved))
    unexpected = sorted(set(saved) - set(model_state))
    wrong = [
        f"{k} is {tuple(saved[k].shape)}, the model's is {tuple(model_state[k].shape)}"
        for k in model_state
        if k in saved and tuple(saved[k].shape) != tuple(model_state[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weights (e.g. {unexpected[0]})")
    if wrong:
        problems.append(f"{len(wrong)} of another shape (e.g. {wrong[0]})")
    if problems:
        raise CheckpointError(f"{path}: the weights are from another model than its config describes: {'; '.join(problems)}")


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
    cfg = TrainConfig.from_dict(state["hyper_parameters"]["config"])
    if cfg.model.small_images is None or cfg.model.proj_layers is None:
        raise CheckpointError(f"{file}: its training config is not resolved (model.small_images, model.proj_layers unset)")
    try:
        with torch.device("meta"):
            model = SimSiam(**dataclasses.asdict(cfg.model), image_size=cfg.image_size)
    except Exception as e:
        raise CheckpointError(f"{file}: its config does not describe a model this simsiam can build ({type(e).__name__}: {e})") from None
    check_weights_fit(file, _model_weights(state), model.state_dict())
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
