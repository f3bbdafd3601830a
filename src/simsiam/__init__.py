"""SimSiam (Chen & He, 2020): self-supervised pretraining of image encoders.

>>> from simsiam import SimSiam, simsiam_loss, Augment, load_checkpoint
>>> model, cfg = load_checkpoint("runs/demo")  # doctest: +SKIP

Importing the package is light: it loads the model, the loss, the augmentations
and the evaluation functions, and changes no global state of Pillow or
matplotlib. ``load_checkpoint`` (which needs Lightning) is imported on first use.
"""

from typing import Any

from simsiam.augment import Augment
from simsiam.evaluate import knn_accuracy
from simsiam.loss import simsiam_loss
from simsiam.model.siamese import PredictionHead, ProjectionHead, SimSiam

__all__ = ["SimSiam", "ProjectionHead", "PredictionHead", "simsiam_loss", "Augment", "knn_accuracy", "load_checkpoint"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "load_checkpoint":  # Lightning's import takes seconds: only when a checkpoint is read
        from simsiam.checkpoint import load_checkpoint

        return load_checkpoint
    raise AttributeError(f"module 'simsiam' has no attribute {name!r}")
