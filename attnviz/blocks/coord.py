"""Coordinate Attention (Hou et al., "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021,
arXiv:2103.02907). Parameter names (``conv1``, ``bn1``, ``conv_h``, ``conv_w``) match ``timm.layers.CoordAttn``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import check_channels, hidden_width
from .registry import register_attention
from .tap import Tap

__all__ = ["CoordinateAttention"]


@register_attention("coord", placement="post", kinds=("spatial",), paper="Hou et al., CVPR 2021")
class CoordinateAttention(nn.Module):
    """Pool along W and along H; shared 1x1 conv + BN + h-swish; split; g_h = sigmoid(conv_h), g_w = sigmoid(conv_w);
    out = x * g_h * g_w.

    Args:
        channels: C of the input.
        reduction: r (32); the shared width is ``max(min_hidden, C // r)`` (authors' code: max(8, C // 32)).
        min_hidden: lower bound of that width (8).

    The captured map is the gate g_h * g_w (B, C, H, W) averaged over channels: (B, H, W).
    """

    def __init__(self, channels: int, reduction: int = 32, min_hidden: int = 8) -> None:
        super().__init__()
        check_channels("coord", channels)
        mid = hidden_width("coord", channels, reduction, min_hidden)
        self.conv1 = nn.Conv2d(channels, mid, 1)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(mid, channels, 1)
        self.conv_w = nn.Conv2d(mid, channels, 1)
        self.tap = Tap("spatial")

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[2:]
        x_h = x.mean(3, keepdim=True)  # (B, C, H, 1): pooled along W
        x_w = x.mean(2, keepdim=True).transpose(2, 3)  # (B, C, W, 1): pooled along H
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))  # (B, mid, H + W, 1)
        y_h, y_w = torch.split(y, [h, w], dim=2)
        g_h = torch.sigmoid(self.conv_h(y_h))  # (B, C, H, 1)
        g_w = torch.sigmoid(self.conv_w(y_w.transpose(2, 3)))  # (B, C, 1, W)
        return x * self.tap(g_h * g_w)  # gate (B, C, H, W)
