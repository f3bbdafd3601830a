"""SimSiam (Chen & He, 2020): self-supervised pretraining of image encoders.

>>> from simsiam import SimSiam, simsiam_loss, Augment, load_checkpoint
>>> model, cfg = load_checkpoint("runs/demo")  # doctest: +SKIP
"""

from .augment import Augment
from .checkpoint import load_checkpoint
from .evaluate import knn_accuracy
from .loss import simsiam_loss
from .model import PredictionHead, ProjectionHead, SimSiam

__all__ = ["SimSiam", "ProjectionHead", "PredictionHead", "simsiam_loss", "Augment", "knn_accuracy", "load_checkpoint"]
__version__ = "0.1.0"
