"""Multi-head self-attention with 2D relative position logits, as in BoTNet (Srinivas et al., "Bottleneck
Transformers for Visual Recognition", CVPR 2021, arXiv:2101.11605; Vaswani et al., NeurIPS 2017).

Replaces the 3x3 convolution of the blocks of the last stage. No mask (images need none) and no dropout on
the weights, so every captured row sums to 1 (ATTENTION.md, bug 6). The softmax is explicit: a fused
kernel would never build the map this tool shows.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import check_channels, check_positive, check_stride
from .registry import register_attention
from .tap import Tap

__all__ = ["MultiHeadSelfAttention"]


def _rel_index(n: int, extent: int, device: torch.device) -> Tensor:
    """(n, n) indices into a (2*extent - 1)-row table of relative offsets key - query, clipped to +-(extent-1)."""
    pos = torch.arange(n, device=device)
    return (pos[None, :] - pos[:, None]).clamp(-(extent - 1), extent - 1) + (extent - 1)


@register_attention(
    "mhsa", placement="conv", kinds=("pairwise",), paper="Srinivas et al., CVPR 2021 (BoTNet)", stages=(4,)
)
class MultiHeadSelfAttention(nn.Module):
    """Per head: softmax(Q K^T / sqrt(d) + Q R^T) V, R = relative height + width embeddings; heads concatenated.

    Args:
        channels: C of the input and output; must be divisible by ``heads``.
        stride: 1 or 2; a stride-2 block average-pools 2x2 after attention, as BoTNet.
        heads: number of heads (4).
        rel_extent: relative offsets up to +-(rel_extent - 1) have their own embedding; larger offsets
            share the outermost one (clipped relative positions, Shaw et al. 2018), so any H x W works.
    """

    def __init__(self, channels: int, stride: int = 1, heads: int = 4, rel_extent: int = 32) -> None:
        super().__init__()
        check_positive("mhsa", "heads", heads)
        check_channels("mhsa", channels, divisible_by=heads, why=f"into {heads} heads")
        stride = check_stride("mhsa", stride)
        self.heads = heads
        self.dim_head = channels // heads
        self.scale = self.dim_head**-0.5
        self.rel_extent = check_positive("mhsa", "rel_extent", rel_extent)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
        self.rel_h = nn.Parameter(torch.randn(2 * rel_extent - 1, self.dim_head) * self.scale)
        self.rel_w = nn.Parameter(torch.randn(2 * rel_extent - 1, self.dim_head) * self.scale)
        self.tap = Tap("pairwise")
        self.pool = nn.AvgPool2d(2, ceil_mode=True) if stride == 2 else nn.Identity()

    def rel_logits(self, q: Tensor, h: int, w: int) -> Tensor:
        """Q R^T for q of shape (B, heads, N, d): (B, heads, N, N), height and width terms summed."""
        b = q.shape[0]
        q = q.view(b, self.heads, h, w, self.dim_head)
        rh = self.rel_h[_rel_index(h, self.rel_extent, q.device)]  # (H, H', d)
        rw = self.rel_w[_rel_index(w, self.rel_extent, q.device)]  # (W, W', d)
        lh = torch.einsum("bnhwd,hkd->bnhwk", q, rh.to(q.dtype))  # (B, heads, H, W, H')
        lw = torch.einsum("bnhwd,wkd->bnhwk", q, rw.to(q.dtype))  # (B, heads, H, W, W')
        return (lh.unsqueeze(-1) + lw.unsqueeze(-2)).reshape(b, self.heads, h * w, h * w)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).view(b, 3, self.heads, self.dim_head, h * w).unbind(1)  # each (B, heads, d, N)
        q = q.transpose(-1, -2)  # (B, heads, N, d)
        logits = (q @ k) * self.scale + self.rel_logits(q, h, w)  # (B, heads, N, N)
        attn = self.tap(torch.softmax(logits, dim=-1), size=(h, w))
        out = v @ attn.transpose(-1, -2)  # (B, heads, d, N)
        return self.pool(out.reshape(b, c, h, w))
