"""Checkpoints: written atomically through Lightning's CheckpointIO, read back with clear errors.

Lightning writes checkpoints through a ``CheckpointIO`` plug-in; ours saves to a
hidden temporary file beside the target and renames it into place (see
:mod:`simsiam.io`), so ``last.ckpt`` is always a complete checkpoint: a
kill during a save leaves the previous one, and a full disk raises
:class:`CheckpointError` with the previous one still there.

Reading goes through :func:`read_checkpoint`, which turns every way a file can
be wrong (missing, truncated, not a checkpoint, a checkpoint of some other
model) into one :class:`CheckpointError` that names the file, and
:func:`load_checkpoint` rebuilds the trained SimSiam from it: the one way
evaluation, exploration and export get a model. A run folder stands for its
``checkpoints/last.ckpt``, the final epoch, the figure the evaluation
conventions report.

>>> from simsiam.checkpoint import load_checkpoint
>>> model, cfg = load_checkpoint("runs/demo")  # doctest: +SKIP
>>> feats = model.features(images)  # doctest: +SKIP
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .io import atomic_write


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read; the message names the file."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's TorchCheckpointIO with an atomic, fsync'ed write to local paths.

    >>> import lightning as L
    >>> trainer = L.Trainer(plugins=[AtomicCheckpointIO()], logger=False, enable_progress_bar=False)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if "://" in str(path):  # remote storage: fsspec's own transaction is the atomic write there
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        had_previous = path.exists()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_atomic(checkpoint, path)
        except OSError as e:
            kept = "the previous checkpoint there is kept" if had_previous else "no checkpoint was written"
            raise CheckpointError(f"{path}: cannot save the checkpoint ({e.strerror or e}); {kept}") from e


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` through :func:`atomic_write`: the file is whole or absent.

    Serialised in memory first, as Lightning's own save does: torch's zip writer
    does not pass on a failed write to a file object (a full disk surfaces later
    as "RuntimeError: unexpected pos"), while a plain write raises OSError(ENOSPC).
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_write(path) as fh:
        fh.write(buffer.getbuffer())


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A simsiam training checkpoint as a dict (on the CPU), or CheckpointError saying what is wrong with the file.

    Loads with ``weights_only=True``: a checkpoint is tensors and plain values, and
    nothing in a file handed to us runs code.
    """
    from .config import ConfigError, TrainConfig

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for damaged files
        text = str(e)
        if found := re.search(r"Unsupported global: GLOBAL (\S+)", text):
            raise CheckpointError(f"{path}: not a simsiam checkpoint (it stores Python objects such as {found[1]}, not only tensors and values)") from None
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
    return state


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
        for candidate in (path / "checkpoints" / "last.ckpt", path / "last.ckpt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{path}: a folder without checkpoints/last.ckpt; pass a run folder of `simsiam train` or a .ckpt file")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run folder")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """The trained SimSiam (eval mode) and its resolved TrainConfig, from a checkpoint file or a run folder."""
    from .config import TrainConfig
    from .engine import build_model

    file = resolve_checkpoint(path)
    state = read_checkpoint(file)
    cfg = TrainConfig.from_dict(state["hyper_parameters"]["config"])
    if cfg.model.small_images is None or cfg.model.proj_layers is None:
        raise CheckpointError(f"{file}: its training config is not resolved (model.small_images, model.proj_layers unset)")
    model = build_model(cfg)
    weights = {k[len("model.") :]: v for k, v in state["state_dict"].items() if k.startswith("model.")}
    check_weights_fit(file, weights, model.state_dict())
    model.load_state_dict(weights, strict=True)
    return model.to(map_location).eval(), cfg


def run_folder_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint file belongs to (its checkpoints/ folder's parent), else the file's folder."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def _looks_like_backbone(state: Any) -> bool:
    return isinstance(state, dict) and any(isinstance(k, str) and k.startswith(("conv1.", "layer1.")) for k in state)
