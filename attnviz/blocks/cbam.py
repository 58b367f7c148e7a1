"""CBAM (Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018, arXiv:1807.06521).

Four registry entries: ``channel`` (the channel module alone), ``spatial`` (the spatial module alone),
``cbam`` (channel then spatial, in sequence: the paper's block) and ``cbam_sc`` (the same two modules in the
reverse order, spatial then channel: ``CBAM(order="sc")``, the arrangement of the seed posts' ``SCAttention``).

Deliberate choices, checked in tests:
* Channel pooling is over space, one avg and one max per channel (the blog code took a max over channels).
* The spatial descriptor is ``[mean over channels; max over channels]`` in the paper's order, as timm does.
  The authors' code concatenates ``[max; mean]``; that is the same module with the conv's two input
  channels swapped (``tests/test_parity_timm.py`` checks both orders).
* The spatial conv is followed by BatchNorm as in the authors' code and timm (``norm=False`` gives the
  paper's bare conv with a bias); the channel MLP has no bias, as the paper's equation and timm.
* ``cbam_sc`` is not the paper's block. The paper's arrangement study (Sec. 4.1, "Arrangement of the channel
  and spatial attention") tried channel-first, spatial-first and parallel and kept channel-first, which was
  slightly better on ImageNet; spatial-first is offered because users bring networks built that way.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ._checks import check_channels, check_odd_kernel, hidden_width
from .registry import register_attention
from .tap import Tap

__all__ = ["CBAM", "ORDERS", "CBAMSpatialFirst", "ChannelAttention", "SpatialAttention"]

#: CBAM's arrangements: ``"cs"`` channel then spatial (the paper's), ``"sc"`` spatial then channel.
ORDERS: dict[str, str] = {"cs": "channel then spatial (the paper's)", "sc": "spatial then channel"}


@register_attention("channel", placement="post", kinds=("channel",), paper="Woo et al., ECCV 2018")
class ChannelAttention(nn.Module):
    """CBAM channel attention: Mc = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F))), one shared MLP.

    Args:
        channels: C of the input.
        reduction: r (16); hidden width ``max(C // r, min_hidden)`` unless ``hidden`` is given.
        min_hidden: lower bound of the hidden width.
        hidden: explicit hidden width.
        bias: biases in the MLP (off, as in the paper's equation and timm).
    """

    def __init__(
        self, channels: int, reduction: int = 16, min_hidden: int = 8, hidden: int | None = None, bias: bool = False
    ) -> None:
        super().__init__()
        check_channels("channel", channels)
        d = hidden_width("channel", channels, reduction, min_hidden, hidden)
        self.fc1 = nn.Conv2d(channels, d, 1, bias=bias)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(d, channels, 1, bias=bias)
        self.tap = Tap("channel")

    def forward(self, x: Tensor) -> Tensor:
        avg = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))  # (B, C, 1, 1)
        mx = self.fc2(self.act(self.fc1(x.amax((2, 3), keepdim=True))))  # (B, C, 1, 1), max over space
        return x * self.tap(torch.sigmoid(avg + mx))


@register_attention("spatial", placement="post", kinds=("spatial",), paper="Woo et al., ECCV 2018")
class SpatialAttention(nn.Module):
    """CBAM spatial attention: Ms = sigmoid(conv_kxk([mean_c(F); max_c(F)])).

    Args:
        channels: C of the input (any; the descriptor has 2 channels).
        kernel_size: odd k (7); padding (k-1)//2 keeps the map's size.
        norm: BatchNorm after the conv (authors' code, timm); ``False`` gives a biased conv.
    """

    def __init__(self, channels: int, kernel_size: int = 7, norm: bool = True) -> None:
        super().__init__()
        check_channels("spatial", channels)
        k = check_odd_kernel("spatial", kernel_size)
        self.conv = nn.Conv2d(2, 1, k, padding=(k - 1) // 2, bias=not norm)
        self.bn = nn.BatchNorm2d(1) if norm else nn.Identity()
        self.tap = Tap("spatial")

    def forward(self, x: Tensor) -> Tensor:
        desc = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # (B, 2, H, W)
        gate = torch.sigmoid(self.bn(self.conv(desc)))  # (B, 1, H, W)
        return x * self.tap(gate)


@register_attention("cbam", placement="post", kinds=("channel", "spatial"), paper="Woo et al., ECCV 2018")
class CBAM(nn.Module):
    """CBAM: channel attention then spatial attention, in sequence (F'' = Ms(F') * F', F' = Mc(F) * F).

    Args:
        channels: C of the input.
        reduction: channel-MLP reduction r (16).
        kernel_size: spatial kernel k (7).
        min_hidden: lower bound of the channel MLP width.
        hidden: explicit channel-MLP width.
        norm: BatchNorm in the spatial module.
        order: ``"cs"`` (channel then spatial, the paper's) or ``"sc"`` (spatial then channel: F' = Ms(F) * F,
            F'' = Mc(F') * F'); the registered ``cbam_sc`` is this block with ``order="sc"``. The modules and
            their parameter names are the same in both orders (``channel.*``, ``spatial.*``); only the order in
            which they are applied, and so the order of the captured maps, differs.

    Raises:
        ValueError: an ``order`` other than ``"cs"`` or ``"sc"``, or the modules' own argument errors.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        kernel_size: int = 7,
        min_hidden: int = 8,
        hidden: int | None = None,
        norm: bool = True,
        order: Literal["cs", "sc"] = "cs",
    ) -> None:
        super().__init__()
        if order not in ORDERS:
            raise ValueError(
                f"cbam: order must be 'cs' (channel then spatial, the paper's) or 'sc' (spatial then channel), "
                f"got {order!r}"
            )
        self.order = order
        # modules are registered in the order they run, so named_modules() lists the taps in forward order
        if order == "cs":
            self.channel = ChannelAttention(channels, reduction, min_hidden, hidden)
            self.spatial = SpatialAttention(channels, kernel_size, norm)
        else:
            self.spatial = SpatialAttention(channels, kernel_size, norm)
            self.channel = ChannelAttention(channels, reduction, min_hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C, H, W)
        if self.order == "sc":
            return self.channel(self.spatial(x))  # the channel gate pools the spatially gated map
        return self.spatial(self.channel(x))  # the spatial descriptor is taken from the channel-gated map

    def extra_repr(self) -> str:
        return f"order={self.order!r}"


@register_attention(
    "cbam_sc", placement="post", kinds=("spatial", "channel"), paper="Woo et al., ECCV 2018, spatial gate first"
)
class CBAMSpatialFirst(CBAM):
    """CBAM with the spatial gate first: F' = Ms(F) * F, then F'' = Mc(F') * F'.

    :class:`CBAM` with ``order="sc"``: CBAM's own :class:`SpatialAttention` and :class:`ChannelAttention`
    (Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018, arXiv:1807.06521), applied in the
    reverse of the paper's order, as the ``SCAttention`` of the blog posts this project started from does. What
    differs from the paper: only the order. The paper compares both sequential orders and a parallel one
    (Sec. 4.1) and keeps channel-first; the channel pooling here is over space (one avg and one max per channel),
    as the paper says, not the blog code's max over channels. Same arguments as :class:`CBAM`, without ``order``.
    """

    def __init__(self, channels: int, **kwargs: object) -> None:
        if kwargs.get("order", "sc") != "sc":
            raise ValueError("cbam_sc: order is always 'sc' (spatial then channel); use 'cbam' for the paper's order")
        kwargs.pop("order", None)
        super().__init__(channels, order="sc", **kwargs)  # type: ignore[arg-type]
