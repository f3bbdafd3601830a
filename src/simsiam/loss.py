"""The symmetric SimSiam loss (paper, equations 1-4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("cosine", "cross_entropy")


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) = -(p/||p||) . (z/||z||), averaged over the batch (paper, eq. 1); minimum -1."""
    return -F.cosine_similarity(p, z, dim=-1).mean()


def symmetric_cross_entropy(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) = -softmax(z) . log softmax(p) (paper, section 4.5, "symmetrization")."""
    return -(F.softmax(z, dim=-1) * F.log_softmax(p, dim=-1)).sum(dim=-1).mean()


def simsiam_loss(
    p1: torch.Tensor,
    p2: torch.Tensor,
    z1: torch.Tensor,
    z2: torch.Tensor,
    kind: str = "cosine",
    stop_gradient: bool = True,
) -> torch.Tensor:
    """L = D(p1, stopgrad(z2))/2 + D(p2, stopgrad(z1))/2 (paper, eq. 4).

    The z are detached here too, so the stop-gradient holds for callers whose own
    encoder returns z with a graph; stop_gradient=False is the paper's ablation
    (section 4.1), which collapses.

    >>> z = torch.randn(8, 16)
    >>> round(simsiam_loss(z, z, z, z).item(), 4)
    -1.0
    """
    if kind == "cosine":
        D = negative_cosine
    elif kind == "cross_entropy":
        D = symmetric_cross_entropy
    else:
        raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
    if stop_gradient:
        z1, z2 = z1.detach(), z2.detach()
    return D(p1, z2) / 2 + D(p2, z1) / 2
