"""Selective Kernel (Li et al., "Selective Kernel Networks", CVPR 2019, arXiv:1903.06586).

Replaces the 3x3 convolution of a ResNet block. Parameter names (``paths.i.conv``, ``paths.i.bn``,
``attn.fc_reduce``, ``attn.bn``, ``attn.fc_select``) match ``timm.layers.SelectiveKernel`` built with
``split_input=False``, so a state dict moves between the two unchanged.

Two registry names (ATTENTION.md, SK row):
  ``sk``      the paper's block: every branch a grouped convolution, for training from scratch.
  ``sk_pre``  the first branch is a plain 3x3 convolution (groups = 1) with the shapes of the ResNet block's
              ``conv2`` and ``bn2``, which load into it from an ImageNet state dict (``backbone_keys``).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import Tensor, nn

from ._checks import check_channels, check_positive, check_stride, hidden_width
from .registry import register_attention
from .tap import Tap

__all__ = ["SelectiveKernel", "SelectiveKernelAttn", "SelectiveKernelPretrained"]


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
        pretrained_branch: make branch 0 a plain 3x3 convolution (groups = 1) + BN + ReLU, shaped like the
            replaced ``conv2`` + ``bn2`` of a ResNet block so that their pretrained weights load into it
            (see :class:`SelectiveKernelPretrained`); the other branches stay grouped. Default: the paper's block.

    Attributes:
        backbone_keys: state-dict prefixes of the ResNet block's modules this block takes the weights of, relative
            to the block (``{"conv2": "paths.0.conv", "bn2": "paths.0.bn"}`` with ``pretrained_branch``, else
            empty); :func:`attnviz.sources.weights.load_backbone_state_dict` reads it.
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
        pretrained_branch: bool = False,
    ) -> None:
        super().__init__()
        check_channels("sk", channels)
        stride = check_stride("sk", stride)
        check_positive("sk", "branches", branches)
        g = math.gcd(channels, check_positive("sk", "groups", groups))
        self.paths = nn.ModuleList(
            nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(
                        channels,
                        channels,
                        3,
                        stride,
                        padding=i + 1,
                        dilation=i + 1,
                        groups=1 if pretrained_branch and i == 0 else g,
                        bias=False,
                    ),
                    bn=nn.BatchNorm2d(channels),
                    act=nn.ReLU(inplace=True),
                )
            )
            for i in range(branches)
        )
        self.attn = SelectiveKernelAttn(channels, branches, hidden_width("sk", channels, reduction, min_hidden, hidden))
        self.pretrained_branch = bool(pretrained_branch)
        self.backbone_keys: dict[str, str] = {"conv2": "paths.0.conv", "bn2": "paths.0.bn"} if pretrained_branch else {}

    def forward(self, x: Tensor) -> Tensor:
        u = torch.stack([path(x) for path in self.paths], dim=1)  # (B, K, C, H', W')
        a = self.attn(u)  # (B, K, C, 1, 1)
        return (u * a).sum(1)  # (B, C, H', W')


@register_attention(
    "sk_pre",
    placement="conv",
    kinds=("branch",),
    paper="Li et al., CVPR 2019, pretrained 3x3 first branch",
    owns_norm=True,
    variant_of="sk",
)
class SelectiveKernelPretrained(SelectiveKernel):
    """Selective Kernel whose first branch is the backbone's pretrained 3x3 convolution.

    :class:`SelectiveKernel` with ``pretrained_branch=True``: branch 0 is a 3x3 convolution with groups = 1
    followed by BN and ReLU, the same layers (and parameter shapes) as a ResNet block's ``conv2`` and ``bn2``, so
    an ImageNet state dict fills it (:attr:`backbone_keys`); branch 1 (3x3, dilation 2) stays the paper's grouped
    convolution, and fuse/select are the paper's equations. Why: the paper's block replaces the 3x3 convolution
    with grouped ones, whose weights no ImageNet ResNet has, so about a third of a ResNet-50 would stay untrained;
    with this variant only the new branch and the fuse/select layers are. For training from scratch use ``sk``.
    """

    def __init__(self, channels: int, stride: int = 1, **kwargs: object) -> None:
        if "pretrained_branch" in kwargs:
            raise ValueError("sk_pre: the first branch is always the pretrained one; use 'sk' for the paper's block")
        super().__init__(channels, stride, pretrained_branch=True, **kwargs)  # type: ignore[arg-type]
