"""EPSA, the Pyramid Split Attention module (Zhang et al., "EPSANet: An Efficient Pyramid Squeeze Attention
Block on Convolutional Neural Network", 2021, arXiv:2105.14447).

Replaces the 3x3 convolution of a ResNet block. Unlike the blog code this project started from, the
convolutions are registered submodules (saved, moved with ``.to()``), nothing is written in place, and the
branches are concatenated in scale order (ATTENTION.md, bug 5).

Two registry names (ATTENTION.md, EPSA row):
  ``epsa``      the paper's block, for training from scratch.
  ``epsa_pre``  the first scale is the backbone's pretrained 3x3 convolution, extended to every output channel
                (:class:`EPSAPretrained`), so an ImageNet ResNet's ``conv2`` loads into it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._checks import check_channels, check_odd_kernel, check_stride, hidden_width
from .registry import register_attention
from .tap import Tap

__all__ = ["EPSA", "EPSAPretrained", "SEWeight"]


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
        pretrained_branch: the first scale is a full 3x3 convolution C -> C with groups = 1 (``dense``, the shape of
            a ResNet block's ``conv2``, whose weights load into it); see :class:`EPSAPretrained`. Needs
            ``kernels[0] == 3`` and ``groups[0] == 1``. Default: the paper's block.

    As in the authors' code the SE weight keeps its sigmoid before the softmax across scales.

    Attributes:
        backbone_keys: state-dict prefixes of the ResNet block's modules this block takes the weights of, relative
            to the block (``{"conv2": "dense"}`` with ``pretrained_branch``, else empty);
            :func:`attnviz.sources.weights.load_backbone_state_dict` reads it.
    """

    def __init__(
        self,
        channels: int,
        stride: int = 1,
        kernels: tuple[int, ...] = (3, 5, 7, 9),
        groups: tuple[int, ...] = (1, 4, 8, 16),
        reduction: int = 16,
        min_hidden: int = 8,
        pretrained_branch: bool = False,
    ) -> None:
        super().__init__()
        if len(kernels) != len(groups) or not kernels:
            raise ValueError(f"epsa: give one group count per kernel, got kernels={kernels}, groups={groups}")
        s = len(kernels)
        check_channels("epsa", channels, divisible_by=s, why=f"into {s} scales")
        stride = check_stride("epsa", stride)
        split = channels // s
        self.scales = s
        self.pretrained_branch = bool(pretrained_branch)
        self.backbone_keys: dict[str, str] = {"conv2": "dense"} if pretrained_branch else {}
        self.dense: nn.Conv2d | None = None
        if pretrained_branch:
            if kernels[0] != 3 or groups[0] != 1:
                raise ValueError(
                    "epsa: with a pretrained first scale (the backbone's 3x3 convolution) the first kernel must be 3 "
                    f"and its groups 1, got kernels={kernels}, groups={groups}"
                )
            self.dense = nn.Conv2d(channels, channels, 3, stride, padding=1, bias=False)
            kernels, groups = kernels[1:], groups[1:]  # scale 0 is all dense; scales 1.. add their own kernel
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
        if pretrained_branch:
            for conv in self.convs:  # zero: at initialisation every scale is the pretrained 3x3 response
                nn.init.zeros_(conv.weight)
        self.se = SEWeight(split, hidden_width("epsa", split, reduction, min_hidden))
        self.tap = Tap("branch")

    def forward(self, x: Tensor) -> Tensor:
        if self.dense is None:
            feats = torch.stack([conv(x) for conv in self.convs], dim=1)  # (B, S, C/S, H', W')
        else:  # F_0 = dense rows of scale 0; F_i = dense rows of scale i + Conv(k_i, g_i)(X)
            parts = list(self.dense(x).chunk(self.scales, dim=1))
            for i, conv in enumerate(self.convs, start=1):
                parts[i] = parts[i] + conv(x)
            feats = torch.stack(parts, dim=1)  # (B, S, C/S, H', W')
        b, s, c = feats.shape[:3]
        z = self.se(feats.flatten(0, 1)).view(b, s, c, 1, 1)  # (B, S, C/S, 1, 1), one shared SE
        att = self.tap(torch.softmax(z, dim=1))  # softmax over the S scales
        return (feats * att).flatten(1, 2)  # (B, C, H', W'), scales concatenated in order


@register_attention(
    "epsa_pre",
    placement="conv",
    kinds=("branch",),
    paper="Zhang et al., 2021 (EPSANet), pretrained 3x3 first scale",
    variant_of="epsa",
)
class EPSAPretrained(EPSA):
    """EPSA whose first scale is the backbone's pretrained 3x3 convolution.

    :class:`EPSA` with ``pretrained_branch=True``. In the paper every scale maps C inputs to C/S outputs, and the
    first scale is a 3x3 convolution with groups = 1: its weight is S times narrower than a ResNet's ``conv2``
    (C -> C), so only a quarter of ``conv2`` could load into it and the rest of the block's output, normalised by
    the pretrained ``bn2``, would be random. Here the first scale is the whole pretrained convolution, ``dense``
    (C -> C, 3x3, groups = 1, loaded from ``conv2``): its output rows are split into S groups of C/S, and

        F_0 = dense(X)[rows of scale 0]
        F_i = dense(X)[rows of scale i] + Conv(k_i, g_i)(X)    for i = 1..S-1 (the paper's kernels 5, 7, 9 and
                                                                groups 4, 8, 16, initialised to zero)

    then the paper's equations: Z_i = SE(F_i) with one shared SE, att = softmax over the S scales,
    out = concat_i(F_i * att_i). The block's ``bn2`` stays and loads too. At initialisation F is exactly the
    pretrained ``conv2`` output, so an ImageNet network keeps its features and only the SE weights and the added
    kernels are untrained; training grows the pyramid from there. For training from scratch use ``epsa``.
    """

    def __init__(self, channels: int, stride: int = 1, **kwargs: object) -> None:
        if "pretrained_branch" in kwargs:
            raise ValueError("epsa_pre: the first scale is always the pretrained one; use 'epsa' for the paper's block")
        super().__init__(channels, stride, pretrained_branch=True, **kwargs)  # type: ignore[arg-type]
