"""SimSiam (Chen & He, 2020): self-supervised pretraining of image encoders.

>>> from simsiam import SimSiam, simsiam_loss, Augment
"""

from .augment import Augment
from .evaluate import knn_accuracy
from .loss import simsiam_loss
from .model import PredictionHead, ProjectionHead, SimSiam

__all__ = ["SimSiam", "ProjectionHead", "PredictionHead", "simsiam_loss", "Augment", "knn_accuracy"]
__version__ = "0.1.0"
