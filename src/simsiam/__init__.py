"""SimSiam (Chen & He, 2020): self-supervised pretraining of image encoders.

>>> from simsiam import SimSiam, simsiam_loss, Augment, load_checkpoint
>>> model, cfg = load_checkpoint("runs/demo")  # doctest: +SKIP

Importing the package is light: each public name (the model, the loss, the
augmentations, kNN, ``load_checkpoint``) loads its module on first use, and
nothing changes the global state of Pillow or matplotlib.
"""

from functools import partial

from simsiam import lazy

__all__ = ["SimSiam", "ProjectionHead", "PredictionHead", "simsiam_loss", "Augment", "knn_accuracy", "load_checkpoint"]
__version__ = "0.1.0"
# Each name loads its module on first use: `import simsiam` (and `simsiam --help`) loads no torch, which
# takes seconds; load_checkpoint also brings Lightning.
_HOMES = {
    "SimSiam": "simsiam.model.siamese",
    "ProjectionHead": "simsiam.model.siamese",
    "PredictionHead": "simsiam.model.siamese",
    "simsiam_loss": "simsiam.loss",
    "Augment": "simsiam.augment",
    "knn_accuracy": "simsiam.evaluate",
    "load_checkpoint": "simsiam.checkpoint",
}
__getattr__ = partial(lazy.attribute, __name__, _HOMES)  # PEP 562
__dir__ = partial(lazy.names, __name__, _HOMES)
