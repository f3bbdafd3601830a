"""Reading a trained SimSiam back from a run: the one way evaluation, exploration and export get a model.

A checkpoint is the Lightning file that ``simsiam train`` writes
(``checkpoints/last.ckpt``, ``checkpoints/best.ckpt``); it carries the resolved
training config, so the network is rebuilt exactly as it was trained. A run
folder stands for its ``checkpoints/last.ckpt``: the final epoch, the figure the
evaluation conventions report.

>>> from simsiam.checkpoint import load_checkpoint
>>> model, cfg = load_checkpoint("runs/demo")  # doctest: +SKIP
>>> feats = model.features(images)  # doctest: +SKIP
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from .config import ConfigError, TrainConfig
from .model import SimSiam


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or not from ``simsiam train``; the message names the file."""


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file that ``path`` stands for: the file itself, or a run folder's checkpoints/last.ckpt."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "last.ckpt", path / "last.ckpt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{path}: a folder without checkpoints/last.ckpt; pass a run folder of `simsiam train` or a .ckpt file")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run folder")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[SimSiam, TrainConfig]:
    """The trained SimSiam (eval mode) and its resolved TrainConfig, from a checkpoint file or a run folder.

    Only plain data is unpickled (``weights_only=True``), so a checkpoint from an
    untrusted source cannot run code.
    """
    file = resolve_checkpoint(path)
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{file}: cannot read the checkpoint ({type(e).__name__}: {reason[:200]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: not a simsiam checkpoint (it holds a {type(state).__name__}, not a Lightning checkpoint)")
    config = state.get("hyper_parameters", {}).get("config") if isinstance(state.get("hyper_parameters"), dict) else None
    if "state_dict" not in state or not isinstance(config, dict):
        hint = " (backbone.pt holds backbone weights only; pass the run folder)" if _looks_like_backbone(state) else ""
        raise CheckpointError(f"{file}: not a simsiam checkpoint: no training config and model weights in it{hint}")
    try:
        cfg = TrainConfig.from_dict(config, where=f"{file} config")
    except ConfigError as e:
        raise CheckpointError(f"{file}: its training config does not fit this version of simsiam ({e})") from None
    if cfg.model.small_images is None or cfg.model.proj_layers is None:
        raise CheckpointError(f"{file}: its training config is not resolved (model.small_images, model.proj_layers unset)")

    from .engine import build_model

    model = build_model(cfg)
    weights = {k[len("model.") :]: v for k, v in state["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise CheckpointError(f"{file}: the weights do not fit the {cfg.model.backbone} of its config ({first[:200]})") from None
    return model.eval(), cfg


def run_folder_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint file belongs to (its checkpoints/ folder's parent), else the file's folder."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def _looks_like_backbone(state: dict) -> bool:
    return any(isinstance(k, str) and k.startswith(("conv1.", "layer1.")) for k in state)
