"""The symmetric SimSiam loss (paper, equations 1-4), and the collapse signal z_std that training logs beside it.

The stop-gradient is not applied here: :class:`~simsiam.model.SimSiam` returns z
already detached (its one place, with the ablation switch beside it). A caller
with an encoder of its own detaches z before calling :func:`simsiam_loss`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from simsiam.settings import LOSS_KINDS


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) = -(p/||p||) . (z/||z||), averaged over the batch (paper, eq. 1); minimum -1."""
    return -F.cosine_similarity(p, z, dim=-1).mean()


def cross_entropy(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) = -softmax(z) . log softmax(p), averaged over the batch (paper, section 4.5).

    One-sided, like :func:`negative_cosine`; :func:`simsiam_loss` symmetrizes it.
    """
    return -(F.softmax(z, dim=-1) * F.log_softmax(p, dim=-1)).sum(dim=-1).mean()


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = dict(zip(LOSS_KINDS, (negative_cosine, cross_entropy)))


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """L = D(p1, stopgrad(z2))/2 + D(p2, stopgrad(z1))/2 (paper, eq. 4), with z1, z2 already detached.

    >>> z = torch.randn(8, 16)
    >>> round(simsiam_loss(z, z, z, z).item(), 4)
    -1.0
    """
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
    D = LOSSES[kind]
    return D(p1, z2) / 2 + D(p2, z1) / 2


def z_std(z: torch.Tensor) -> torch.Tensor:
    """Std over the batch of l2-normalised z, averaged over dimensions (paper, Figure 2).

    About 1/sqrt(d) for a healthy representation, 0 for a collapsed one.
    """
    return F.normalize(z.float(), dim=1).std(dim=0).mean()
