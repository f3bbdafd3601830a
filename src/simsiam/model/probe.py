"""The dummy forward that finds what a network gives: its output, and the side of its last feature map.

A backbone's feature width is found, never looked up in a table: a (2, C, S, S)
batch goes through it on the meta device (shapes only, so free for any size of
network), or, where a module does something the meta device cannot, for real in
eval mode.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.func import functional_call


def probe(net: nn.Module, channels: int, size: int):
    """The output of a (2, C, S, S) batch and the side of the last feature map before global pooling.

    On the meta device first (shapes only: free for any size of network); where a
    module does something the meta device cannot, a real forward in eval mode.
    The network's modes and statistics are left as they were.
    """
    modes = {m: m.training for m in net.modules()}
    sides = _Sides(net)
    net.eval()
    try:
        with torch.no_grad():
            try:
                state = {k: torch.empty_like(v, device="meta") for k, v in (*net.named_parameters(), *net.named_buffers())}
                out = functional_call(net, state, (torch.empty(2, channels, size, size, device="meta"),))
            except Exception:
                sides.reset()
                device = next(net.parameters(), torch.empty(0)).device
                out = net(torch.zeros(2, channels, size, size, device=device))
    finally:
        sides.remove()
        for m, training in modes.items():
            m.training = training
    return out, sides.side


class _Sides:
    """Forward hooks that find the side of the last feature map before global pooling (None when there is none)."""

    def __init__(self, net: nn.Module):
        self.handles = [m.register_forward_hook(self._hook) for m in net.modules()]
        self.reset()

    def reset(self):
        self.last = self.pooled = None

    def _hook(self, module, inputs, output):
        if not isinstance(output, torch.Tensor):
            return
        x = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        if "Pool" in type(module).__name__ and x is not None and x.ndim == 4 and (output.ndim < 4 or _side(output) == 1):
            self.pooled = _side(x)  # the input of the latest global pool: squeeze-excitation pools come earlier
        elif output.ndim == 4 and _side(output) is not None:
            self.last = _side(output)

    @property
    def side(self) -> int | None:
        return self.pooled if self.pooled is not None else self.last

    def remove(self):
        for h in self.handles:
            h.remove()


def _side(t: torch.Tensor) -> int | None:
    """The spatial side of a map of a square image, laid out (B, C, H, W) or (B, H, W, C)."""
    if t.shape[2] == t.shape[3]:
        return int(t.shape[2])
    return int(t.shape[1]) if t.shape[1] == t.shape[2] else None
