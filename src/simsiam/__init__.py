"""SimSiam (Chen & He, 2020): self-supervised pretraining of image encoders.

>>> from simsiam import SimSiam, simsiam_loss, Augment, load_checkpoint
>>> model, cfg = load_checkpoint("runs/demo")  # doctest: +SKIP

Importing the package is light: it loads the model, the loss, the augmentations
and the evaluation functions, and changes no global state of Pillow or
matplotlib. ``load_checkpoint`` (which needs Lightning) is imported on first use.
"""

from functools import partial

from simsiam import lazy
from simsiam.augment import Augment
from simsiam.evaluate import knn_accuracy
from simsiam.loss import simsiam_loss
from simsiam.model.siamese import PredictionHead, ProjectionHead, SimSiam

__all__ = ["SimSiam", "ProjectionHead", "PredictionHead", "simsiam_loss", "Augment", "knn_accuracy", "load_checkpoint"]
__version__ = "0.1.0"
_HOMES = {"load_checkpoint": "simsiam.checkpoint"}  # it needs Lightning, whose import takes seconds: only when a checkpoint is read
__getattr__ = partial(lazy.attribute, __name__, _HOMES)  # PEP 562: a name's module is imported on first use
__dir__ = partial(lazy.names, __name__, _HOMES)
