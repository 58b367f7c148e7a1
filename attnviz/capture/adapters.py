"""Exact adapters: where known library attention classes keep their weight, as :class:`~attnviz.capture.sites.Site`\\ s.

One table, one mechanism: each entry names a class (by qualified name, so timm and torchvision are never imported
for it) and the places its weight leaves the module: the output of a submodule (``On``), or the k-th gate/softmax
call during the module's forward (``Call``, for softmaxes computed inline). The recorder hooks these sites exactly
as it hooks discovered ones, keeps its handles, and removes them on exit; nothing is added to the model.

==========================================  ============================  ==========================================
class                                       site                          kind
==========================================  ============================  ==========================================
timm SEModule, EffectiveSEModule,           ``gate`` output               channel
SqueezeExcite (EfficientNet), Eca/Ceca
timm CbamModule, LightCbamModule            ``channel.gate`` (Light: its   channel, spatial
                                            inline sigmoid), ``spatial.gate``
timm SelectiveKernel                        ``attn`` output (B,K,C,1,1)   branch
timm SplitAttn (ResNeSt)                    ``rsoftmax`` output (B, R·C)  branch (B, R, C); channel when R = 1
timm GlobalContext                          its softmax over H·W;         spatial; channel
                                            ``gate`` (with mlp_scale)
timm GatherExcite                           ``gate`` output               channel, or spatial (full-size)
timm CoordAttn, EfficientLocalAttn,         ``gate`` (called for H, W)    axis gates -> spatial
timm SimpleCoordAttn                        ``gate`` output               spatial (full-size)
timm BottleneckAttn                         its softmax (B·heads, N, N)   pairwise
timm HaloAttn                               its softmax, block-local      pairwise (scattered into N x N)
torchvision SqueezeExcitation               ``scale_activation`` output   channel
timm SwinTransformerBlock                   its window softmax            window (B, nW, heads, M², M²), the
                                            (B·nW, heads, M², M²)         block's window_size and shift_size
torchvision ShiftedWindowAttention(V2)      its window softmax            window (padded, then rolled)
timm SwinTransformerV2Block, V2CrBlock      its window softmax (V2: the   window, as SwinTransformerBlock
                                            second call, after the cpb
                                            sigmoid)
timm PartitionAttentionCl / 2d (MaxViT)     its softmax (B·nW, heads,     window: ``partition_block`` -> contiguous
                                            P², P²)                       P x P blocks, else a dilated G x G grid
timm ParallelPartitionAttention             block, then grid softmax      window (block, grid)
timm NesT Attention                         softmax (B, heads, T, N, N)   window: T square blocks of N tokens
timm GlobalContextVitBlock                  its window softmax            window (a global block: queries are the
                                                                          global context map's tokens, shared)
ultralytics / YOLOv12 AAttn                 softmax (B·area, heads, L, L) window: ``area`` runs of L = H·W/area
                                                                          consecutive tokens (area attention)
torch nn.MultiheadAttention (torchvision    weights recomputed from its   token (ViT: class token + grid), or
ViT, DETR-like code)                        inputs (``Computed``)         pairwise over a feature map's grid
==========================================  ============================  ==========================================

Papers: SENet (Hu et al., CVPR 2018), ECA-Net (Wang et al., CVPR 2020), CBAM (Woo et al., ECCV 2018), SKNet (Li et
al., CVPR 2019), ResNeSt (Zhang et al., 2020), GCNet (Cao et al., ICCVW 2019), Gather-Excite (Hu et al., NeurIPS
2018), Coordinate Attention (Hou et al., CVPR 2021), BoTNet (Srinivas et al., CVPR 2021), HaloNet (Vaswani et al.,
CVPR 2021), MobileNetV3 / EfficientNet SE (Howard et al., ICCV 2019; Tan & Le, ICML 2019), Transformer multi-head
attention (Vaswani et al., NeurIPS 2017; :mod:`attnviz.capture.mha`), Swin (Liu et al., ICCV 2021), SwinV2 (Liu et
al., CVPR 2022), MaxViT (Tu et al., ECCV 2022), NesT (Zhang et al., AAAI 2022), YOLOv12's area attention (Tian et al.,
2025) (:mod:`attnviz.capture.windows`).

A ``Computed`` site's weight is computed from the module's inputs after its forward, only while a recorder keeps
the site (the module's own forward and output are untouched); it is a fused site (:class:`Site` ``fused``: the
recorder's keep policy applies) whose layout (token grid, reference feature map) the first recorded forward's
discovery pass reads around it, as it reads a discovered softmax's. A configuration the computation does not cover
is listed as unclassified with its reason (``unsupported``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .kinds import Canon
from .mha import mha_output, mha_unsupported, mha_weights
from .partitions import window_canon
from .sites import Site, qualname
from .windows import WindowLayout

__all__ = ["ADAPTERS", "Call", "Computed", "On", "adapter_sites"]

#: (owner, weight, ref shape) -> the weight, or laid out as a Canon where the adapter knows more than its shape says
Transform = Callable[[nn.Module, Tensor, "tuple[int, ...] | None"], "Tensor | Canon"]


@dataclass(frozen=True)
class On:
    """The weight is the output of submodule ``sub`` (every call of it)."""

    sub: str
    kind: str | Callable[[nn.Module], str] | None = None
    transform: Transform | None = None
    when: Callable[[nn.Module], bool] | None = None


@dataclass(frozen=True)
class Call:
    """The weight is the ``ordinal``-th gate/softmax function call during the module's forward."""

    ordinal: int
    suffix: str
    kind: str | Callable[[nn.Module], str] | None = None
    transform: Transform | None = None
    when: Callable[[nn.Module], bool] | None = None


@dataclass(frozen=True)
class Computed:
    """The weight (B, heads, Nq, Nk) is ``weights(module, args, kwargs)``, computed from the module's inputs after
    its forward (a softmax over the last dim); ``unsupported(module)``: why it cannot be, or ``None``;
    ``apply(module, args, kwargs, output, weight)``: the module's output with the weight replaced (the checks'
    ablation)."""

    suffix: str
    weights: Callable[[nn.Module, tuple, dict], Tensor]
    unsupported: Callable[[nn.Module], str | None] | None = None
    apply: Callable[[nn.Module, tuple, dict, Any, Tensor], Any] | None = None


def _radix(owner: nn.Module, t: Tensor, ref: tuple[int, ...] | None) -> Tensor:
    """RadixSoftmax output (B, R*C), radix-major as SplitAttn reads it -> (B, R, C)."""
    radix = owner.radix  # owner: the rsoftmax module
    return t.reshape(t.shape[0], radix, -1) if radix > 1 else t


def _halo(owner: nn.Module, t: Tensor, ref: tuple[int, ...] | None) -> Tensor:
    """HaloAttn's block-local softmax (B*heads, blocks, bs^2, win^2) scattered into (B, heads, N, N), N = H*W:
    each query's weights over its block's halo window; keys in the zero padding past the border are left out
    (their share of the row is not shown)."""
    if owner.block_stride != 1 or ref is None:
        raise ValueError("HaloAttn with a block stride of 2 (queries subsampled) is not mapped to N x N yet")
    _, _, h, w = ref
    bs, halo, win, heads = owner.block_size, owner.halo_size, owner.win_size, owner.num_heads
    nh, nw = h // bs, w // bs
    n = h * w
    dev = t.device
    bh, bw = torch.meshgrid(torch.arange(nh, device=dev), torch.arange(nw, device=dev), indexing="ij")
    bh, bw = bh.reshape(-1, 1), bw.reshape(-1, 1)  # (blocks, 1)
    i, j = torch.meshgrid(torch.arange(bs, device=dev), torch.arange(bs, device=dev), indexing="ij")
    rows = (bh * bs + i.reshape(1, -1)) * w + (bw * bs + j.reshape(1, -1))  # (blocks, bs^2)
    u, v = torch.meshgrid(torch.arange(win, device=dev), torch.arange(win, device=dev), indexing="ij")
    ky = bh * bs + u.reshape(1, -1) - halo  # (blocks, win^2)
    kx = bw * bs + v.reshape(1, -1) - halo
    valid = (ky >= 0) & (ky < h) & (kx >= 0) & (kx < w)
    cols = ky.clamp(0, h - 1) * w + kx.clamp(0, w - 1)
    flat = rows[:, :, None] * n + cols[:, None, :]  # (blocks, bs^2, win^2)
    mask = valid[:, None, :].expand_as(flat)
    out = t.new_zeros(t.shape[0], n * n)  # (B*heads, N*N)
    out[:, flat[mask]] = t[:, mask]
    return out.view(-1, heads, n, n)


def _gc_spatial(owner: nn.Module, t: Tensor, ref: tuple[int, ...] | None) -> Tensor:
    """GlobalContext's softmax (B, 1, H*W) -> (B, 1, H, W)."""
    assert ref is not None
    return t.reshape(t.shape[0], 1, ref[2], ref[3])


def _timm_swin(owner: nn.Module, t: Tensor, ref: tuple[int, ...] | None) -> Canon:
    """timm SwinTransformerBlock (input (B, H, W, C)): rolls by -shift_size, pads, partitions (``_attn``)."""
    if ref is None or len(ref) != 4:
        raise ValueError("the block's input (B, H, W, C) was not seen")
    window, shift = tuple(owner.window_size), tuple(owner.shift_size)
    return window_canon(t, ref, WindowLayout((int(ref[1]), int(ref[2])), window, shift, pad_first=False))


def _tv_swin(owner: nn.Module, t: Tensor, ref: tuple[int, ...] | None) -> Canon:
    """torchvision ShiftedWindowAttention(V2) (input (B, H, W, C)): ``shifted_window_attention`` pads, then rolls
    by -shift_size, with no shift along an axis the window covers."""
    if ref is None or len(ref) != 4:
        raise ValueError("the module's input (B, H, W, C) was not seen")
    grid, window = (int(ref[1]), int(ref[2])), (int(owner.window_size[0]), int(owner.window_size[1]))
    layout = WindowLayout(grid, window, pad_first=True)
    shift = tuple(0 if w >= p else int(s) for w, p, s in zip(window, layout.padded, owner.shift_size, strict=True))
    return window_canon(t, ref, WindowLayout(grid, window, shift, pad_first=True))  # type: ignore[arg-type]


def _grid_of(ref: tuple[int, ...] | None, channels_last: bool, what: str) -> tuple[int, int]:
    """(H, W) of a module's input (B, H, W, C) (``channels_last``) or (B, C, H, W)."""
    if ref is None or len(ref) != 4:
        raise ValueError(f"the {what}'s input (B, H, W, C) or (B, C, H, W) was not seen")
    return (int(ref[1]), int(ref[2])) if channels_last else (int(ref[2]), int(ref[3]))


def _maxvit_partition(block: bool, size: tuple[int, int], grid: tuple[int, int]) -> WindowLayout:
    """MaxViT's block (``window_partition``: contiguous P x P windows) or grid (``grid_partition``: a G x G grid of
    tokens with stride H/G) partition (Tu et al., ECCV 2022)."""
    return WindowLayout(grid, (int(size[0]), int(size[1])), partition="block" if block else "grid")


def _timm_maxvit(channels_last: bool) -> Transform:
    """timm PartitionAttentionCl (input (B, H, W, C)) / PartitionAttention2d ((B, C, H, W)): its ``partition_block``
    and ``partition_size`` say which partition ``_partition_attn`` makes."""

    def transform(owner: nn.Module, t: Tensor, ref: tuple[int, ...] | None) -> Canon:
        grid = _grid_of(ref, channels_last, "partition attention")
        return window_canon(t, ref, _maxvit_partition(bool(owner.partition_block), owner.partition_size, grid))

    return transform


def _timm_maxvit_parallel(block: bool) -> Transform:
    """timm ParallelPartitionAttention (input (B, H, W, C)): block attention (``attn_block``), then grid attention
    (``attn_grid``), both over ``partition_size``."""

    def transform(owner: nn.Module, t: Tensor, ref: tuple[int, ...] | None) -> Canon:
        grid = _grid_of(ref, True, "parallel partition attention")
        return window_canon(t, ref, _maxvit_partition(block, owner.partition_size, grid))

    return transform


def _timm_nest(owner: nn.Module, t: Tensor, ref: tuple[int, ...] | None) -> Canon:
    """timm NesT Attention (Zhang et al., AAAI 2022): its input (B, T, N, C) is ``blockify``'s T = g x g square
    blocks of N = b x b tokens (NestLevel's ``block_size``), row-major, of a (g·b) x (g·b) map; its softmax is
    (B, heads, T, N, N) -> (B, T, heads, N, N)."""
    if ref is None or len(ref) != 4 or t.dim() != 5:
        raise ValueError("not NesT's blocks: the input (B, T, N, C) or the softmax (B, heads, T, N, N) was not seen")
    blocks, n = int(ref[1]), int(ref[2])
    b, g = math.isqrt(n), math.isqrt(blocks)
    if b * b != n or g * g != blocks:
        raise ValueError(f"{blocks} blocks of {n} tokens are not g x g square blocks of b x b (blockify)")
    layout = WindowLayout((g * b, g * b), (b, b))
    return window_canon(t.transpose(1, 2).flatten(0, 1), ref, layout, tuple(t.shape))


def _area(owner: nn.Module, t: Tensor, ref: tuple[int, ...] | None) -> Canon:
    """YOLOv12's area attention (``AAttn``, Tian et al., 2025): the input (B, C, H, W)'s H·W tokens, flattened
    row-major, reshaped into ``area`` equal runs (B·area, N/area, ...) that attend within themselves."""
    h, w = _grid_of(ref, False, "area attention")
    area = max(int(owner.area), 1)
    return window_canon(t, ref, WindowLayout((h, w), (1, h * w // area), partition="runs"))


def _timm_gcvit(owner: nn.Module, t: Tensor, ref: tuple[int, ...] | None) -> Canon:
    """timm GlobalContextVitBlock (input (B, H, W, C)): ``window_partition`` into its ``window_size`` (GCViT,
    Hatamizadeh et al., ICML 2023). A global block (``attn.use_global``) attends from the tokens of the global
    context map (the image's features pooled to the window's size), shared by every window, to each window's own
    positions: a window map with global queries (:class:`WindowLayout` ``queries="global"``): its keys are the
    window's positions, its queries the context map's tokens."""
    grid = _grid_of(ref, True, "GCViT block")
    queries = "global" if getattr(owner.attn, "use_global", False) else "window"
    return window_canon(
        t, ref, WindowLayout(grid, (int(owner.window_size[0]), int(owner.window_size[1])), queries=queries)
    )


_SE = (On("gate"),)
_CBAM = (On("channel.gate", "channel"), On("spatial.gate", "spatial"))

#: qualified class name -> where its weights are.
ADAPTERS: dict[str, tuple[On | Call | Computed, ...]] = {
    "timm.layers.squeeze_excite.SEModule": _SE,
    "timm.layers.squeeze_excite.EffectiveSEModule": _SE,
    "timm.models._efficientnet_blocks.SqueezeExcite": _SE,
    "timm.layers.eca.EcaModule": _SE,
    "timm.layers.eca.CecaModule": _SE,
    "timm.layers.cbam.CbamModule": _CBAM,
    "timm.layers.cbam.LightCbamModule": (Call(0, "channel.sigmoid()", "channel"), On("spatial.gate", "spatial")),
    "timm.layers.selective_kernel.SelectiveKernel": (On("attn", "branch"),),
    "timm.layers.split_attn.SplitAttn": (On("rsoftmax", lambda m: "branch" if m.radix > 1 else "channel", _radix),),
    "timm.layers.global_context.GlobalContext": (
        Call(0, "softmax()", "spatial", _gc_spatial, when=lambda m: m.conv_attn is not None),
        On("gate", "channel", when=lambda m: m.mlp_scale is not None),
    ),
    "timm.layers.gather_excite.GatherExcite": _SE,
    "timm.layers.coord_attn.CoordAttn": _SE,
    "timm.layers.coord_attn.EfficientLocalAttn": _SE,
    "timm.layers.coord_attn.StripAttn": _SE,
    "timm.layers.coord_attn.SimpleCoordAttn": _SE,
    "timm.layers.bottleneck_attn.BottleneckAttn": (Call(0, "softmax()", "pairwise"),),
    "timm.layers.halo_attn.HaloAttn": (Call(0, "softmax()", "pairwise", _halo),),
    "torchvision.ops.misc.SqueezeExcitation": (On("scale_activation", "channel"),),
    "timm.models.swin_transformer.SwinTransformerBlock": (Call(0, "attn.softmax()", "window", _timm_swin),),
    "torchvision.models.swin_transformer.ShiftedWindowAttention": (Call(0, "softmax()", "window", _tv_swin),),
    # V2: the continuous position bias 16·sigmoid(cpb_mlp(...)) is the first call, the window softmax the second
    "torchvision.models.swin_transformer.ShiftedWindowAttentionV2": (Call(1, "softmax()", "window", _tv_swin),),
    # SwinV2 (Liu et al., CVPR 2022): cosine attention, rolled then padded as v1; timm's continuous position bias
    # 16·sigmoid(cpb_mlp(...)) is the first call, the window softmax the second
    "timm.models.swin_transformer_v2.SwinTransformerV2Block": (Call(1, "attn.softmax()", "window", _timm_swin),),
    "timm.models.swin_transformer_v2_cr.SwinTransformerV2CrBlock": (Call(0, "attn.softmax()", "window", _timm_swin),),
    "timm.models.maxxvit.PartitionAttentionCl": (Call(0, "attn.softmax()", "window", _timm_maxvit(True)),),
    "timm.models.maxxvit.PartitionAttention2d": (Call(0, "attn.softmax()", "window", _timm_maxvit(False)),),
    "timm.models.maxxvit.ParallelPartitionAttention": (
        Call(0, "attn_block.softmax()", "window", _timm_maxvit_parallel(True)),
        Call(1, "attn_grid.softmax()", "window", _timm_maxvit_parallel(False)),
    ),
    "timm.models.nest.Attention": (Call(0, "softmax()", "window", _timm_nest),),
    "timm.models.gcvit.GlobalContextVitBlock": (Call(0, "attn.softmax()", "window", _timm_gcvit),),
    # YOLOv12 (an ultralytics fork) and ultralytics keep AAttn at this path
    "ultralytics.nn.modules.block.AAttn": (Call(0, "softmax()", "window", _area),),
    "torch.nn.modules.activation.MultiheadAttention": (Computed("", mha_weights, mha_unsupported, mha_output),),
}


def adapter_sites(paths: dict[int, tuple[str, nn.Module]]) -> tuple[list[Site], set[int]]:
    """The adapters' sites in a model (given :func:`attnviz.capture.structure.module_paths`), and the ids of the adapted
    modules (discovery leaves their insides to the adapters)."""
    sites: list[Site] = []
    adapted: set[int] = set()
    inside: list[str] = []  # paths of adapted modules: an adapted class inside another is the outer one's business
    for path, module in paths.values():
        entries = ADAPTERS.get(qualname(module))
        if not entries or any(path.startswith(p + ".") for p in inside):
            continue
        adapted.add(id(module))
        inside.append(path)
        prefix = f"{path}." if path else ""
        for e in entries:
            if isinstance(e, Computed):
                why = e.unsupported(module) if e.unsupported is not None else None
                name = prefix + e.suffix if e.suffix else path
                site = Site(
                    name,
                    "adapter",
                    module,
                    op="softmax",
                    dim=3,
                    fused=True,
                    compute=e.weights,
                    apply=e.apply,
                    why=why or "",
                )
                sites.append(site)
                continue
            if e.when is not None and not e.when(module):
                continue
            if isinstance(e, On):
                owner = module.get_submodule(e.sub)
                kind = e.kind(module) if callable(e.kind) else e.kind
                sites.append(
                    Site(
                        prefix + e.sub, "adapter", owner, None, None, module, module, kind, "output", None, e.transform
                    )
                )
            else:
                kind = e.kind(module) if callable(e.kind) else e.kind
                sites.append(
                    Site(
                        prefix + e.suffix,
                        "adapter",
                        module,
                        e.ordinal,
                        None,
                        module,
                        module,
                        kind,
                        "softmax",
                        None,
                        e.transform,
                    )
                )
    return sites, adapted
