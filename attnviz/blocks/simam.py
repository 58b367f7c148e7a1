"""SimAM (Yang et al., "SimAM: A Simple, Parameter-Free Attention Module for CNNs", ICML 2021)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import check_channels
from .registry import register_attention
from .tap import Tap

__all__ = ["SimAM"]


@register_attention("simam", placement="mid", kinds=("spatial",), paper="Yang et al., ICML 2021")
class SimAM(nn.Module):
    """Parameter-free energy attention: e = (x - mu)^2 / (4 (sigma^2 + lambda)) + 0.5 per channel; out = x * sigmoid(e).

    Args:
        channels: C of the input (any; the module has no parameters).
        lam: lambda (1e-4).

    sigma^2 = sum (x - mu)^2 / (H W - 1) as the authors' code; a 1x1 map uses H W - 1 = 1 instead of 0.
    The captured map is sigmoid(e) averaged over channels: (B, H, W).
    """

    def __init__(self, channels: int, lam: float = 1e-4) -> None:
        super().__init__()
        check_channels("simam", channels)
        if not lam > 0:
            raise ValueError(f"simam: lam must be > 0, got {lam!r}")
        self.lam = lam
        self.tap = Tap("spatial")

    def forward(self, x: Tensor) -> Tensor:
        n = max(x.shape[2] * x.shape[3] - 1, 1)
        d = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)  # (B, C, H, W)
        e = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + self.lam)) + 0.5
        return x * self.tap(torch.sigmoid(e))
