"""Dual Attention (Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019, arXiv:1809.02983).

Used as a residual module after a ResNet stage. Follows the paper, not the blog code (ATTENTION.md, bug 4):
any C and any H x W, C/8 query/key projections, zero-initialised gains, no scaling in the channel module.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import check_channels
from .registry import register_attention
from .tap import Tap

__all__ = ["ChannelAttentionModule", "DualAttention", "PositionAttention"]


class PositionAttention(nn.Module):
    """Position attention module: S = softmax(Q^T K) over positions; returns alpha * (V S^T).

    Q, K: 1x1 convs to C/8 (at least 1); V: 1x1 conv to C; alpha starts at 0. The map is (B, 1, N, N),
    rows summing to 1; it carries no position encoding, so it permutes with the input's positions.

    Under autocast the map is computed in the parameters' dtype (float32): Q, K and the softmax of their
    unscaled product. In bfloat16 the energies lose enough digits to move the map by more than 3e-2 (max abs) on
    a block test; in float32 the map matches the float32 run. Only the value product runs in the autocast dtype.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        qk = max(channels // 8, 1)
        self.query = nn.Conv2d(channels, qk, 1)
        self.key = nn.Conv2d(channels, qk, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.tap = Tap("pairwise", read_only=True)  # (B, 1, N, N), only read by the bmm below

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        with torch.autocast(x.device.type, enabled=False):
            xq = x.to(self.query.weight.dtype)  # the parameters' dtype: float32 under autocast
            q = self.query(xq).flatten(2).transpose(1, 2)  # (B, N, C/8)
            k = self.key(xq).flatten(2)  # (B, C/8, N)
            attn = torch.softmax(torch.bmm(q, k), dim=-1)  # (B, N, N): row i = where position i attends
        attn = self.tap(attn.unsqueeze(1), size=(h, w)).squeeze(1)
        v = self.value(x).flatten(2)  # (B, C, N)
        out = torch.bmm(v, attn.transpose(1, 2))  # (B, C, N): out_j = sum_i v_i S_ji
        return self.alpha * out.view(b, c, h, w)


class ChannelAttentionModule(nn.Module):
    """Channel attention module: X = softmax(A A^T) over channels; returns beta * (X A).

    beta starts at 0. The (B, C, C) energy and its softmax are computed in float32 even under autocast: A A^T
    sums N products, overflows float16 on real feature maps and loses the map's digits in bfloat16. What stays
    is the rounding of the block's input itself when the layers before it ran in bfloat16: the softmax of raw,
    unscaled energies is steep, so a bfloat16 network's channel map can still differ from a float32 network's
    by a few 1e-2 (the paper's formula, kept; the block cannot recover digits its input no longer has).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.zeros(1))
        self.tap = Tap("channel_pairwise", read_only=True)  # (B, C, C), only read by the bmm below

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        with torch.autocast(x.device.type, enabled=False):
            a = x.flatten(2).float()  # (B, C, N)
            attn = torch.softmax(torch.bmm(a, a.transpose(1, 2)), dim=-1)  # (B, C, C)
            attn = self.tap(attn)
            out = torch.bmm(attn, a).view(b, c, h, w)  # (B, C, H, W)
        return self.beta.to(x.dtype) * out.to(x.dtype)


@register_attention(
    "da",
    placement="stage",
    kinds=("pairwise", "channel_pairwise"),
    paper="Fu et al., CVPR 2019 (DANet)",
    stages=(3, 4),
)
class DualAttention(nn.Module):
    """Dual attention: out = x + alpha * PAM(x) + beta * CAM(x).

    This is the sum of the paper's two module outputs E_pos + E_chan with the input counted once
    (E_pos + E_chan - A), so the module is the identity at initialisation and can sit inside a
    pretrained ResNet.

    Args:
        channels: C of the input (any C >= 1; the query/key width is max(C // 8, 1)).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        check_channels("da", channels)
        self.position = PositionAttention(channels)
        self.channel = ChannelAttentionModule(channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.position(x) + self.channel(x)
