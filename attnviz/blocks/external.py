"""External Attention (Guo et al., "Beyond Self-attention: External Attention using Two Linear Layers for
Visual Tasks", TPAMI 2022, arXiv:2105.02358).

Used as a residual module after a ResNet stage, wrapped as in the authors' EANet block: 1x1 conv, external
attention, 1x1 conv + BN, add, ReLU. The final BN's weight starts at 0 (DANet's zero gain), so the module
is the identity on the non-negative output of a ResNet stage at initialisation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import check_channels, check_positive

__all__ = ["ExternalAttention"]

from .registry import register_attention
from .tap import Tap


@register_attention("ea", placement="stage", kinds=("memory",), paper="Guo et al., TPAMI 2022 (EANet)", stages=(3, 4))
class ExternalAttention(nn.Module):
    """External attention: A = F Mk^T (N x S); softmax over N, then l1-normalise over S; out = A Mv.

    Args:
        channels: C of the input.
        memory: S, the number of memory units (64).
        hidden: width d of the features attended over; default C // 4 (at least 1), as the EANet head
            reduces 2048 -> 512 before its attention.
        eps: guard of the l1 normalisation (the blog code had none; ATTENTION.md bug 3).

    The weights over the S units at each position sum to 1; they are captured as (B, S, H, W).
    """

    def __init__(self, channels: int, memory: int = 64, hidden: int | None = None, eps: float = 1e-9) -> None:
        super().__init__()
        check_channels("ea", channels)
        s = check_positive("ea", "memory", memory)
        d = check_positive("ea", "hidden", hidden) if hidden is not None else max(channels // 4, 1)
        self.eps = eps
        self.conv1 = nn.Conv2d(channels, d, 1)
        self.mk = nn.Conv1d(d, s, 1, bias=False)  # memory keys Mk: (S, d)
        self.mv = nn.Conv1d(s, d, 1, bias=False)  # memory values Mv: (d, S)
        self.mv.weight.data.copy_(self.mk.weight.data.permute(1, 0, 2))  # tied at init, as the authors' code
        self.conv2 = nn.Conv2d(d, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)
        self.act = nn.ReLU(inplace=True)
        self.tap = Tap("memory")

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        f = self.conv1(x)
        b, d, h, w = f.shape
        attn = self.mk(f.flatten(2))  # (B, S, N)
        attn = torch.softmax(attn, dim=-1)  # over the N positions
        attn = attn / (self.eps + attn.sum(dim=1, keepdim=True))  # l1 over the S units
        attn = self.tap(attn.view(b, -1, h, w)).flatten(2)  # (B, S, H, W) -> (B, S, N)
        f = self.mv(attn).view(b, d, h, w)  # (B, d, H, W)
        return self.act(self.bn(self.conv2(f)) + identity)
