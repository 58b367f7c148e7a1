"""Selective Kernel (Li et al., "Selective Kernel Networks", CVPR 2019, arXiv:1903.06586).

Replaces the 3x3 convolution of a ResNet block. Parameter names (``paths.i.conv``, ``paths.i.bn``,
``attn.fc_reduce``, ``attn.bn``, ``attn.fc_select``) match ``timm.layers.SelectiveKernel`` built with
``split_input=False``, so a state dict moves between the two unchanged.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import Tensor, nn

from ._checks import check_channels, check_positive, check_stride, hidden_width
from .registry import register_attention
from .tap import Tap

__all__ = ["SelectiveKernel", "SelectiveKernelAttn"]


class SelectiveKernelAttn(nn.Module):
    """Fuse and select: s = GAP(sum_i U_i); z = ReLU(BN(W s)); a = softmax over branches of (A_i z).

    Returns the branch weights as (B, K, C, 1, 1), summing to 1 over K (dim 1, not dim 0: blog bug 7).
    """

    def __init__(self, channels: int, branches: int, hidden: int) -> None:
        super().__init__()
        self.branches = branches
        self.fc_reduce = nn.Conv2d(channels, hidden, 1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc_select = nn.Conv2d(hidden, channels * branches, 1, bias=False)
        self.tap = Tap("branch")

    def forward(self, u: Tensor) -> Tensor:
        b, k, c = u.shape[:3]  # u: (B, K, C, H, W), the stacked branch outputs
        s = u.sum(1).mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        z = self.act(self.bn(self.fc_reduce(s)))  # (B, d, 1, 1)
        logits = self.fc_select(z).view(b, k, c, 1, 1)  # (B, K, C, 1, 1)
        return self.tap(torch.softmax(logits, dim=1))


@register_attention("sk", placement="conv", kinds=("branch",), paper="Li et al., CVPR 2019", owns_norm=True)
class SelectiveKernel(nn.Module):
    """Selective Kernel convolution: V = sum_i a_i * U_i over a 3x3 and a dilated 3x3 branch.

    Args:
        channels: C of the input and output.
        stride: 1 or 2 (the replaced convolution's stride).
        branches: M; branch i is a 3x3 conv with dilation i + 1 (3x3, then "5x5" as 3x3 dilation 2).
        groups: G (32); the largest divisor of C that divides G is used, so any C works.
        reduction: r (16); the fuse width is ``max(C // r, min_hidden)`` (the paper's d = max(C/r, L)).
        min_hidden: L (32).
        hidden: explicit fuse width.
    """

    def __init__(
        self,
        channels: int,
        stride: int = 1,
        branches: int = 2,
        groups: int = 32,
        reduction: int = 16,
        min_hidden: int = 32,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        check_channels("sk", channels)
        stride = check_stride("sk", stride)
        check_positive("sk", "branches", branches)
        g = math.gcd(channels, check_positive("sk", "groups", groups))
        self.paths = nn.ModuleList(
            nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(channels, channels, 3, stride, padding=i + 1, dilation=i + 1, groups=g, bias=False),
                    bn=nn.BatchNorm2d(channels),
                    act=nn.ReLU(inplace=True),
                )
            )
            for i in range(branches)
        )
        self.attn = SelectiveKernelAttn(channels, branches, hidden_width("sk", channels, reduction, min_hidden, hidden))

    def forward(self, x: Tensor) -> Tensor:
        u = torch.stack([path(x) for path in self.paths], dim=1)  # (B, K, C, H', W')
        a = self.attn(u)  # (B, K, C, 1, 1)
        return (u * a).sum(1)  # (B, C, H', W')
