"""Squeeze-and-Excitation (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018, arXiv:1709.01507)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import check_channels, hidden_width
from .registry import register_attention
from .tap import Tap

__all__ = ["SqueezeExcite"]


@register_attention("se", placement="post", kinds=("channel",), paper="Hu et al., CVPR 2018")
class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation: s = sigmoid(W2 ReLU(W1 GAP(U))), out = s * U.

    Args:
        channels: C of the input.
        reduction: r; the hidden width is ``max(C // r, min_hidden)`` unless ``hidden`` is given.
        min_hidden: lower bound of the hidden width (guards small C).
        hidden: explicit hidden width.

    Parameter names (``fc1``, ``fc2``) match ``timm.layers.SEModule``.
    """

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 8, hidden: int | None = None) -> None:
        super().__init__()
        check_channels("se", channels)
        d = hidden_width("se", channels, reduction, min_hidden, hidden)
        self.fc1 = nn.Conv2d(channels, d, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(d, channels, 1, bias=True)
        self.tap = Tap("channel")

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1) squeeze
        s = torch.sigmoid(self.fc2(self.act(self.fc1(s))))  # (B, C, 1, 1) excitation
        return x * self.tap(s)
