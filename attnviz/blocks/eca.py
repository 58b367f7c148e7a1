"""ECA (Wang et al., "ECA-Net: Efficient Channel Attention for Deep CNNs", CVPR 2020, arXiv:1910.03151)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._checks import check_channels, check_odd_kernel
from .registry import register_attention
from .tap import Tap

__all__ = ["ECA", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """The paper's adaptive kernel size k = psi(C) = |log2(C)/gamma + b/gamma|_odd, at least 3.

    As in the authors' code: t = int(|(log2 C + b) / gamma|), k = t if t is odd else t + 1.
    """
    t = int(abs((math.log2(channels) + b) / gamma))
    return max(t if t % 2 else t + 1, 3)


@register_attention("eca", placement="post", kinds=("channel",), paper="Wang et al., CVPR 2020")
class ECA(nn.Module):
    """Efficient Channel Attention: w = sigmoid(Conv1d_k(GAP(x))) across channels, no bias; out = w * x.

    Args:
        channels: C of the input.
        kernel_size: odd k; default from :func:`eca_kernel_size` (gamma=2, b=1).
        gamma, b: the paper's mapping constants.

    The gate for channel i depends only on channels i - k//2 .. i + k//2 (zero padding (k-1)//2).
    """

    def __init__(self, channels: int, kernel_size: int | None = None, gamma: float = 2.0, b: float = 1.0) -> None:
        super().__init__()
        check_channels("eca", channels)
        k = eca_kernel_size(channels, gamma, b) if kernel_size is None else check_odd_kernel("eca", kernel_size)
        self.kernel_size = k
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)
        self.tap = Tap("channel")

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        y = x.mean((2, 3)).view(b, 1, c)  # (B, 1, C)
        w = torch.sigmoid(self.conv(y)).view(b, c, 1, 1)  # (B, C, 1, 1)
        return x * self.tap(w)
