"""ECA (Wang et al., "ECA-Net: Efficient Channel Attention for Deep CNNs", CVPR 2020, arXiv:1910.03151).

Two registry entries: ``eca`` (the paper's block: global average pooling, one 1-D convolution across channels)
and ``eca_max`` (``ECA(pool="avgmax")``: average *and* max pooling over space, both through the same 1-D
convolution, summed before the sigmoid, as the seed posts' ECA variant does). ``eca_max`` is not the paper's
block: the paper pools by average only; the avg + max pair is CBAM's channel descriptor (Woo et al., ECCV 2018).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from ._checks import check_channels, check_odd_kernel
from .registry import register_attention
from .tap import Tap

__all__ = ["ECA", "POOLS", "ECAAvgMax", "eca_kernel_size"]

#: ECA's spatial pooling: ``"avg"`` (the paper's), ``"avgmax"`` (average and max, through the same conv).
POOLS: dict[str, str] = {
    "avg": "global average pooling (the paper's)",
    "avgmax": "average and max pooling, through one shared convolution",
}


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
        pool: ``"avg"`` (the paper's) or ``"avgmax"``: w = sigmoid(Conv1d_k(AvgPool(x)) + Conv1d_k(MaxPool(x))),
            both pooled over space (one value per channel) and passed through the same convolution; the
            registered ``eca_max`` is this block with ``pool="avgmax"``.

    The gate for channel i depends only on channels i - k//2 .. i + k//2 (zero padding (k-1)//2).

    Raises:
        ValueError: bad ``channels``, an even or non-positive ``kernel_size``, or an unknown ``pool``.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | None = None,
        gamma: float = 2.0,
        b: float = 1.0,
        pool: Literal["avg", "avgmax"] = "avg",
    ) -> None:
        super().__init__()
        check_channels("eca", channels)
        if pool not in POOLS:
            raise ValueError(f"eca: pool must be 'avg' (the paper's) or 'avgmax' (average and max), got {pool!r}")
        k = eca_kernel_size(channels, gamma, b) if kernel_size is None else check_odd_kernel("eca", kernel_size)
        self.kernel_size = k
        self.pool = pool
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)
        self.tap = Tap("channel")

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C, H, W)
        b, c = x.shape[:2]
        z = self.conv(x.mean((2, 3)).view(b, 1, c))  # (B, 1, C)
        if self.pool == "avgmax":
            z = z + self.conv(x.amax((2, 3)).view(b, 1, c))  # (B, 1, C): the same conv on the max over space
        w = torch.sigmoid(z).view(b, c, 1, 1)  # (B, C, 1, 1)
        return x * self.tap(w)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, pool={self.pool!r}"


@register_attention("eca_max", placement="post", kinds=("channel",), paper="Wang et al., CVPR 2020, avg + max pooling")
class ECAAvgMax(ECA):
    """ECA with average and max pooling: w = sigmoid(Conv1d_k(AvgPool(x)) + Conv1d_k(MaxPool(x))); out = w * x.

    :class:`ECA` with ``pool="avgmax"`` (Wang et al., "ECA-Net: Efficient Channel Attention for Deep CNNs", CVPR
    2020, arXiv:1910.03151), the ECA variant of the blog posts this project started from. What differs from the
    paper: the paper pools by average only; here a max over space (one per channel, as CBAM's channel module,
    Woo et al., ECCV 2018) goes through the same 1-D convolution and the two are summed before the sigmoid. No
    extra parameters (k weights, like ``eca``), and the bias-free convolution is linear, so this equals
    sigmoid(Conv1d_k(AvgPool(x) + MaxPool(x))). Same arguments as :class:`ECA`, without ``pool``.
    """

    def __init__(self, channels: int, **kwargs: object) -> None:
        if kwargs.get("pool", "avgmax") != "avgmax":
            raise ValueError("eca_max: pool is always 'avgmax' (average and max); use 'eca' for the paper's block")
        kwargs.pop("pool", None)
        super().__init__(channels, pool="avgmax", **kwargs)  # type: ignore[arg-type]
