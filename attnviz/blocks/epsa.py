"""EPSA, the Pyramid Split Attention module (Zhang et al., "EPSANet: An Efficient Pyramid Squeeze Attention
Block on Convolutional Neural Network", 2021, arXiv:2105.14447).

Replaces the 3x3 convolution of a ResNet block. Unlike the blog code this project started from, the
convolutions are registered submodules (saved, moved with ``.to()``), nothing is written in place, and the
branches are concatenated in scale order (ATTENTION.md, bug 5).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._checks import check_channels, check_odd_kernel, check_stride, hidden_width
from .registry import register_attention
from .tap import Tap

__all__ = ["EPSA", "SEWeight"]


class SEWeight(nn.Module):
    """The SE weight shared by all scales: sigmoid(W2 ReLU(W1 GAP(F_i))), (B, C/S, 1, 1)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))


@register_attention("epsa", placement="conv", kinds=("branch",), paper="Zhang et al., 2021 (EPSANet)")
class EPSA(nn.Module):
    """Pyramid split attention: F_i = Conv(k_i, g_i)(X); Z_i = SE(F_i); att = softmax_i(Z); out = cat_i(F_i * att_i).

    Args:
        channels: C of the input and output; must be divisible by the number of scales S.
        stride: 1 or 2 (the replaced convolution's stride).
        kernels: odd kernel sizes, one per scale (3, 5, 7, 9).
        groups: conv groups per scale (1, 4, 8, 16); each is reduced to its largest divisor that also
            divides C and C/S, so narrow layers still build.
        reduction: SE reduction (16); hidden width ``max((C/S) // r, min_hidden)``.
        min_hidden: lower bound of the SE width.

    As in the authors' code the SE weight keeps its sigmoid before the softmax across scales.
    """

    def __init__(
        self,
        channels: int,
        stride: int = 1,
        kernels: tuple[int, ...] = (3, 5, 7, 9),
        groups: tuple[int, ...] = (1, 4, 8, 16),
        reduction: int = 16,
        min_hidden: int = 8,
    ) -> None:
        super().__init__()
        if len(kernels) != len(groups) or not kernels:
            raise ValueError(f"epsa: give one group count per kernel, got kernels={kernels}, groups={groups}")
        s = len(kernels)
        check_channels("epsa", channels, divisible_by=s, why=f"into {s} scales")
        stride = check_stride("epsa", stride)
        split = channels // s
        self.scales = s
        self.convs = nn.ModuleList(
            nn.Conv2d(
                channels,
                split,
                check_odd_kernel("epsa", k, "kernels"),
                stride,
                padding=(k - 1) // 2,
                groups=math.gcd(math.gcd(g, split), channels),
                bias=False,
            )
            for k, g in zip(kernels, groups, strict=True)
        )
        self.se = SEWeight(split, hidden_width("epsa", split, reduction, min_hidden))
        self.tap = Tap("branch")

    def forward(self, x: Tensor) -> Tensor:
        feats = torch.stack([conv(x) for conv in self.convs], dim=1)  # (B, S, C/S, H', W')
        b, s, c = feats.shape[:3]
        z = self.se(feats.flatten(0, 1)).view(b, s, c, 1, 1)  # (B, S, C/S, 1, 1), one shared SE
        att = self.tap(torch.softmax(z, dim=1))  # softmax over the S scales
        return (feats * att).flatten(1, 2)  # (B, C, H', W'), scales concatenated in order
