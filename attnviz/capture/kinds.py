"""The kinds of attention weight: ONE table (:data:`KIND_SPECS`) that says, per kind, everything the rest of attnviz
needs to know about it.

================  ==================  ==========  ==============================  =================================
kind              canonical shape     sums to 1   spatial view (what is overlaid)  detail drawing
================  ==================  ==========  ==============================  =================================
channel           (B, C)              no (gate)   the gate effect (below); named   bar chart of the largest weights
                                                  view "gate-weighted": the gate-
                                                  weighted mean activation
spatial           (B, H, W)           no (gate)   the gate itself                  none (the overlay is the map)
branch            (B, K, C)           over K      the mean output activation       K bars per channel
pairwise          (B, heads, N, N)    each row    where the query attends, head    where the query attends, per head
                                                  mean                             and averaged (gray tiles)
channel_pairwise  (B, C, C)           each row    none                             the C x C matrix
memory            (B, S, H, W)        over S      the most variable memory unit    every unit's map (gray tiles)
token             (B, heads, Q, N),   each row    the class token's attention      its rows per head and their mean,
                  N = k + H*W                     over the grid, head mean; a      the other prefix tokens' rows
                                                  clicked query's row              (gray tiles)
  (N x M)         (B, heads, Nq, Nk)  each row    on the keys' grid: what each     the same per head and their mean
                  on two grids                    key receives (query + head       (gray tiles)
                                                  mean) or the class token's row;
                                                  a clicked query's row
window            (B, nW, heads,      each row    what each position receives in   a clicked query's row on the grid,
                  M², M²)                         its window (query + head mean),  per head and averaged (gray tiles)
                                                  shift undone; a clicked query's
                                                  row on the whole grid
================  ==================  ==========  ==============================  =================================

A ``channel`` map's default view is its **gate effect** (:func:`gate_effect`): where in the image the gate changes the
block's features compared with uniform gating at the same mean gate. A kind may have other named spatial views
(:attr:`KindSpec.views`, :data:`VIEW_NAMES`): a channel map's ``"gate-weighted"`` view is the former default, the
channel mean of the gated output, which shows the activations more than the gates (it hardly changes when the gate's
weights are randomised; ``bench/gate_effect.py``).

A ``token`` map is a vision transformer's attention (Dosovitskiy et al., ICLR 2021) read against the patch grid
(:mod:`attnviz.capture.tokens`): N = k + H*W tokens, the k prefix tokens (class, distillation, registers) first.
``data`` holds every head's N x N matrix, or their mean alone (heads = 1) where the recorder's keep policy
(:class:`attnviz.capture.fused.KeepPolicy`) kept less; with ``keep="rows"`` the map's ``rows`` (B, heads, k, N) keep the
prefix tokens' rows of every head beside it. Q = N, except in class attention (CaiT, Touvron et al., ICCV 2021),
where only the Q <= k prefix (class) tokens query: ``data`` is (B, heads, Q, N) and every view is the class token's
row. Blocks that run before the class token joins (CaiT's self-attention, ConViT's GPSA) have k = 0.

Queries and keys on different grids (N x M) are ``token`` maps too, not a kind of their own (one table, one set of
views per kind): spatial-reduction attention (PVT), pooling attention (MViT), LeViT's subsampling attention. ``data``
is (B, heads, Nq, Nk) with Nq = kq + Hq*Wq queries and Nk = k + Hk*Wk keys; ``size`` is the keys' grid as for every
token map, and the queries' grid rides beside it (``Canon.tokens.query``, ``AttentionMap.qgrid``, ``View.qgrid``, the
view rules' ``qgrid``). Its views lie on the keys' grid (:mod:`attnviz.capture.pooled`): what each key receives (the
mean over queries and heads) or, where the queries have a class token, its row; a clicked query (a cell of the
queries' grid) shows its row. Switching it off is uniform 1/Nk over the keys, as for every softmax.

A ``window`` map is windowed attention (Swin, Liu et al., ICCV 2021) kept per window, with its
:class:`~attnviz.capture.windows.WindowLayout` (window size, cyclic shift, padding) in ``Canon.window`` /
``AttentionMap.window``; an adapter lays a weight out as one (the block's window, shift and partition), or discovery
where the windows' tokens equal a map's positions exactly (:mod:`attnviz.capture.partitions`), never from shapes.

Each entry also holds how a tap's weight becomes the canonical shape (:meth:`KindSpec.canonical`), how any tensor is
laid out as the kind when an adapter or a user fixes it (:meth:`KindSpec.force`), and what switching the weight off
means (:attr:`KindSpec.off`: a gate's neutral value is 1, a softmax's is uniform over its axis). The names are
:data:`attnviz.blocks.KINDS` (blocks sit below capture and know only the names); this table covers exactly them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from .. import render
from ..blocks.tap import KINDS
from .pooled import key_maps
from .tokens import MAX_PREFIX, TokenLayout
from .windows import WindowLayout, query_rows, received

__all__ = [
    "KIND_SPECS",
    "KINDS",
    "VIEW_NAMES",
    "Canon",
    "Drawable",
    "KindSpec",
    "detail_image",
    "gate_effect",
    "gray_tiles",
    "spec",
]


@dataclass
class Canon:
    """A weight in its kind's canonical shape.

    Attributes:
        kind: a kind of :data:`KINDS`, or ``"axis"`` (one coordinate-attention axis gate, paired by the recorder).
        data: the canonical tensor (batch first).
        size: (H, W) of the feature map for pairwise and memory maps, and the map's own for spatial ones.
        raw: the full tensor where the canonical one is a reduction of it (full-size and grouped gates), else None.
        layout: how the weight was laid out when computed, e.g. ``"(B, C, 1, 1) gate"``.
        window: a ``window`` map's windows on its grid (:class:`~attnviz.capture.windows.WindowLayout`), else None.
        tokens: a ``token`` map's token layout (:class:`~attnviz.capture.tokens.TokenLayout`: the keys', with the
            queries' as its ``query`` where they lie on another grid), where it was read from one; else None.
    """

    kind: str
    data: Tensor
    size: tuple[int, int] | None = None
    raw: Tensor | None = None
    layout: str = ""
    window: WindowLayout | None = None
    tokens: TokenLayout | None = None

    @property
    def qgrid(self) -> tuple[int, int] | None:
        """A token map's query grid where its queries lie on another grid than its keys (N x M), else None."""
        return None if self.tokens is None or self.tokens.query is None else self.tokens.query.grid


class Drawable(Protocol):
    """What a detail drawing reads of a view (:class:`attnviz.capture.views.View` is one)."""

    @property
    def kind(self) -> str: ...

    @property
    def data(self) -> np.ndarray: ...

    @property
    def title(self) -> str: ...

    @property
    def grid(self) -> tuple[int, int] | None: ...

    @property
    def cell(self) -> tuple[int, int] | None: ...

    @property
    def rows(self) -> np.ndarray | None: ...

    @property
    def window(self) -> WindowLayout | None: ...

    @property
    def qgrid(self) -> tuple[int, int] | None: ...


#: (data without the batch dimension, feature-map size, owner's activation or None, query or None (the kind's
#: default), the map's kept prefix rows per head without the batch dimension or None, a window map's layout or None,
#: an N x M token map's query grid or None) -> (map or None, label, query cell or None)
ViewRule = Callable[
    [
        np.ndarray,
        "tuple[int, int] | None",
        "np.ndarray | None",
        "tuple[float, float] | None",
        "np.ndarray | None",
        "WindowLayout | None",
        "tuple[int, int] | None",
    ],
    "tuple[np.ndarray | None, str, tuple[int, int] | None]",
]
#: (weight, batch, ref shape) -> Canon, or the reason it cannot be laid out as the kind
ForceRule = Callable[[Tensor, int, "tuple[int, ...] | None"], "Canon | str"]


@dataclass(frozen=True)
class KindSpec:
    """Everything about one kind of attention weight.

    Attributes:
        name: the kind (a name of :data:`KINDS`).
        shape: the canonical shape, as DESIGN.md writes it.
        ndim: the canonical number of dimensions, batch included.
        normalised: the axis of the weight (canonical, or as a tap sees it: the two agree) that sums to 1; ``None``
            for a gate (values in 0..1, each on its own).
        grid: ``"shape"`` where the canonical shape ends in the feature map's (H, W), ``"size"`` where the map refers
            to the N = H*W positions of a feature map whose size it carries beside it, ``None`` for no grid.
        channels: the values weigh the block's channels (flattened per image, the channel profile).
        off: what switching the weight off means (README, result.json).
        not_normalised: why a weight declared as this kind is refused when it does not sum to 1 over ``normalised``.
        layout: any tensor laid out as the kind, where adapters and declarations fix the kind (:meth:`force`).
        view: the spatial view rule (data without the batch dimension, feature-map size, the owner's activation or
            ``None``, the query as fractions of the image or ``None``, the map's ``rows`` (per-head prefix rows kept
            beside a head mean) without the batch dimension or ``None``) -> (the (h, w) map or ``None``, its label,
            query cell).
        detail: the detail drawing (view, top-k channels) -> RGB array, or None where the kind has none.
        reshape: a tap's weight -> the canonical shape; ``None``: kept as it is, with ``ndim`` dimensions.
        view_name: the name of the default spatial view (``view``), ``""`` where the kind has no other.
        views: the kind's other spatial views by name (rules like ``view``), chosen with :meth:`rule`.
    """

    name: str
    shape: str
    ndim: int
    normalised: int | None
    grid: str | None
    channels: bool
    off: str
    not_normalised: str
    layout: ForceRule = field(repr=False)
    view: ViewRule = field(repr=False)
    detail: Callable[[Drawable, int | None], np.ndarray | None] = field(repr=False)
    reshape: Callable[[Tensor], Tensor] | None = field(default=None, repr=False)
    view_name: str = ""
    views: dict[str, ViewRule] = field(default_factory=dict, repr=False)

    def rule(self, name: str | None = None) -> ViewRule:
        """The spatial view rule named ``name`` (:data:`VIEW_NAMES`); the default one for ``None`` and for a name
        this kind does not have (a choice of channel view leaves other kinds' views as they are)."""
        return self.views.get(name, self.view) if name is not None else self.view

    @property
    def op(self) -> str:
        """The operation that makes such a weight: ``"sigmoid"`` (a gate) or ``"softmax"``."""
        return "sigmoid" if self.normalised is None else "softmax"

    def canonical(self, x: Tensor) -> Tensor:
        """A weight as it passes a tap of this kind, in the canonical shape (a view where possible).

        channel: (B, C, 1, 1) | (B, 1, C) | (B, C) -> (B, C)
        spatial: (B, C', H, W) -> (B, H, W), the mean over C' (C' = 1 for CBAM; SimAM, coordinate
            attention: the channel mean of the per-position gate)
        branch: (B, K, C, 1, 1) | (B, K, C) -> (B, K, C)
        pairwise (B, heads, N, N), channel_pairwise (B, C, C), memory (B, S, H, W), token (B, heads, N, N): as
        they are.

        Raises:
            ValueError: a pairwise, channel_pairwise or memory weight with another number of dimensions.
        """
        if self.reshape is not None:
            return self.reshape(x)
        if x.dim() != self.ndim:
            shape = tuple(x.shape)
            raise ValueError(f"a {self.name!r} tap expects a {self.ndim}-d tensor {self.shape}, got shape {shape}")
        return x

    def force(self, t: Tensor, batch: int, ref: tuple[int, ...] | None) -> Canon | str:
        """``t`` laid out as this kind (an adapter or a declaration fixed it), or why it cannot be.

        Args:
            t: the weight as computed (batch first, or batch times groups/heads first).
            batch: B, the batch size of the model's input.
            ref: shape of the reference feature map, normally (B, C, H, W); ``None`` if unknown.
        """
        s = tuple(t.shape)
        if not s or s[0] % batch:
            return f"{shape_str(s)}: the first dimension is not the batch ({batch}), as a {self.name!r} map needs"
        try:
            return self.layout(t, batch, ref)
        except RuntimeError as e:
            return f"{shape_str(s)}: cannot be laid out as {self.name!r} ({e})"


# -- shapes and grids --------------------------------------------------------------------------------------------
def shape_str(s: tuple[int, ...]) -> str:
    """``(1, 64, 1, 1)``."""
    return "(" + ", ".join(map(str, s)) + ")"


def grid_of(n: int, ref: tuple[int, ...] | None, strict: bool = False) -> tuple[int, int] | None:
    """(H, W) with H*W = n: the reference's own, else (unless ``strict`` and a reference is known) a square grid."""
    if ref is not None and len(ref) == 4 and ref[2] * ref[3] == n:
        return int(ref[2]), int(ref[3])
    if strict and ref is not None and len(ref) == 4:
        return None
    r = math.isqrt(n)
    return (r, r) if r * r == n and n > 1 else None


def prefix_hint(m: int) -> str:
    """'N = 197 = 1 prefix token + a 14 x 14 grid' when ``m`` is a square grid plus a few prefix tokens."""
    for k in range(1, 9):
        r = math.isqrt(m - k)
        if r > 1 and r * r == m - k:
            return (
                f"; N = {m} = {k} prefix token(s) (class, distillation, registers) + a {r} x {r} grid: token "
                "attention with prefix tokens is not read as pairwise"
            )
    return ""


def _spatial_tap(x: Tensor) -> Tensor:
    if x.dim() == 3:
        return x
    if x.dim() != 4:
        raise ValueError(f"a 'spatial' tap expects a 4-d tensor (B, H, W), got shape {tuple(x.shape)}")
    return x[:, 0] if x.shape[1] == 1 else x.mean(dim=1, dtype=torch.float32)


# -- forced layouts (adapters, declarations) ---------------------------------------------------------------------
def _force_channel(t: Tensor, batch: int, ref: tuple[int, ...] | None) -> Canon | str:
    s = tuple(t.shape)
    x = t.reshape(batch, -1, *s[2:]) if s[0] // batch > 1 else t
    if x.dim() == 4 and x.shape[2] * x.shape[3] > 1:
        x = x.mean(dim=(2, 3), dtype=torch.float32)
    return Canon("channel", x.reshape(batch, -1), None, None, f"{shape_str(s)} as channel")


def _force_spatial(t: Tensor, batch: int, ref: tuple[int, ...] | None) -> Canon | str:
    s = tuple(t.shape)
    if t.dim() == 4:
        x = t.reshape(batch, -1, *s[2:])
        raw = x if x.shape[1] > 1 else None
        mean = x[:, 0] if x.shape[1] == 1 else x.mean(dim=1, dtype=torch.float32)
        return Canon("spatial", mean, (s[2], s[3]), raw, f"{shape_str(s)} as spatial")
    if t.dim() == 3 and s[0] // batch == 1 and 1 not in s[1:]:
        return Canon("spatial", t, (s[1], s[2]), None, f"{shape_str(s)} as spatial")
    grid = grid_of(t.numel() // batch, ref, strict=True)
    if grid is None:
        return f"{shape_str(s)}: not a spatial map of the feature map"
    return Canon("spatial", t.reshape(batch, *grid), grid, None, f"{shape_str(s)} as spatial")


def _force_branch(t: Tensor, batch: int, ref: tuple[int, ...] | None) -> Canon | str:
    s = tuple(t.shape)
    return Canon("branch", t.reshape(batch, s[0] // batch * s[1], -1), None, None, f"{shape_str(s)} as branch")


def _force_pairwise(t: Tensor, batch: int, ref: tuple[int, ...] | None) -> Canon | str:
    s = tuple(t.shape)
    m = s[-1]
    grid = grid_of(m, ref, strict=True)
    if grid is None or s[-2] != m:
        hint = prefix_hint(m) if s[-2] == m else ""
        return f"{shape_str(s)}: not an N x N map with N = H*W of the feature map{hint}"
    return Canon("pairwise", t.reshape(batch, -1, m, m), grid, None, f"{shape_str(s)} as pairwise")


def _force_channel_pairwise(t: Tensor, batch: int, ref: tuple[int, ...] | None) -> Canon | str:
    s = tuple(t.shape)
    m = s[-1]
    return Canon("channel_pairwise", t.reshape(batch, m, m), None, None, f"{shape_str(s)} as C x C")


def _force_memory(t: Tensor, batch: int, ref: tuple[int, ...] | None) -> Canon | str:
    s = tuple(t.shape)
    if t.dim() == 4:
        return Canon("memory", t, (s[2], s[3]), None, f"{shape_str(s)} as memory")
    grid = grid_of(s[-1], ref, strict=True)
    if grid is None:
        return f"{shape_str(s)}: not (B, S, N) with N = H*W of the feature map"
    return Canon("memory", t.reshape(batch, -1, *grid), grid, None, f"{shape_str(s)} as memory")


def _force_token(t: Tensor, batch: int, ref: tuple[int, ...] | None) -> Canon | str:
    """(..., N, N) token attention: the grid is the reference feature map's when N = k + H*W, else the square one
    with the fewest prefix tokens (a declaration or an adapter says it is token attention)."""
    s = tuple(t.shape)
    n = s[-1]
    if t.dim() < 3 or s[-2] != n:
        return f"{shape_str(s)}: not an N x N token attention"
    grid = None
    if ref is not None and len(ref) == 4 and 0 <= n - ref[2] * ref[3] <= MAX_PREFIX:
        grid = (int(ref[2]), int(ref[3]))
    for k in range(MAX_PREFIX + 1):
        r = math.isqrt(max(n - k, 0))
        if grid is None and r > 1 and r * r == n - k:
            grid = (r, r)
    if grid is None:
        return f"{shape_str(s)}: N = {n} is not k + H*W with at most {MAX_PREFIX} prefix tokens"
    k = n - grid[0] * grid[1]
    return Canon("token", t.reshape(batch, -1, n, n), grid, None, f"{shape_str(s)} as token, {k} prefix + {grid}")


def _force_window(t: Tensor, batch: int, ref: tuple[int, ...] | None) -> Canon | str:
    """A window map needs its block's window layout (window size, shift), which only an adapter reads."""
    return f"{shape_str(tuple(t.shape))}: window attention is laid out by its block's adapter (window size, shift)"


# -- spatial views -----------------------------------------------------------------------------------------------
Size = tuple[int, int] | None
Shown = tuple[np.ndarray | None, str, tuple[int, int] | None]
Query = tuple[float, float] | None
Rows = np.ndarray | None
Act = np.ndarray | None
Win = WindowLayout | None
Data = np.ndarray


def _view_none(
    data: Data, size: Size, activation: Act, query: Query, rows: Rows = None, window: Win = None, qgrid: Size = None
) -> Shown:
    return None, "", None


def _view_spatial(
    data: Data, size: Size, activation: Act, query: Query, rows: Rows = None, window: Win = None, qgrid: Size = None
) -> Shown:
    return data, "spatial gate", None


def _view_activation(label: str) -> ViewRule:
    """The owner's activation (channel mean of the attention module's output), where the caller passes one."""

    def view(
        data: Data, size: Size, activation: Act, query: Query, rows: Rows = None, window: Win = None, qgrid: Size = None
    ) -> Shown:
        if activation is not None and activation.ndim == 3:  # a channel map's (output, input) channel means, float64
            activation = activation[0].astype(np.float32)  # equal to the recorded float32 output mean
        return (activation, label, None) if activation is not None else (None, "", None)

    return view


def gate_effect(gate: np.ndarray, out_mean: np.ndarray, in_mean: np.ndarray) -> np.ndarray:
    """The gate effect of a channel gate: ``E(x, y) = (1/C) Σ_c (g_c − ḡ) · A_c(x, y)``, (h, w).

    ``A`` (C, h, w) is the activation the gate multiplies (the gating module's input), ``g`` (C,) the gate, ``ḡ`` its
    mean over the channels. It is the block's channel-mean output minus what uniform gating at ``ḡ`` would give, so
    with ``out = g · A`` it is computed from two channel means alone: ``E = mean_c(out) − ḡ · mean_c(A)``.

    Why this definition: the gate-weighted mean activation ``mean_c(g_c A_c)`` is ``ḡ · mean_c(A)`` plus this term;
    the first part is the activation map whatever the gate says, and in trained SE/ECA blocks it dominates, so that
    view passes the cascading randomisation test of Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018
    (re-drawing the gate's weights must change a map that claims to show the gate) only with Spearman 0.96-1.00.
    ``E`` keeps what only the gate's choice of channels contributes: it is 0 for a uniform gate, positive where the
    channels the gate favours are active, negative where those it suppresses are. It is left signed (``|E|`` keeps
    the parts where the gate suppresses as peaks and measured worse under randomisation, ``bench/gate_effect.py``)
    and in activation units, not divided by the gate's spread: a nearly uniform gate then shows a nearly flat map in
    the stage-wide and absolute normalisations instead of an amplified one.
    """
    g = np.asarray(gate, dtype=np.float64).reshape(-1)
    out64, in64 = np.asarray(out_mean, dtype=np.float64), np.asarray(in_mean, dtype=np.float64)
    return (out64 - g.mean() * in64).astype(np.float32)  # a small difference of two means: taken in float64


def _view_gate_effect(
    data: Data, size: Size, activation: Act, query: Query, rows: Rows = None, window: Win = None, qgrid: Size = None
) -> Shown:
    """A channel map's gate effect, from ``activation`` (2, h, w) float64: the owner's output and input channel means
    (:func:`attnviz.capture.views.view_activations`); the gate-weighted mean activation where only the output's is
    known (the owner's input is not a feature map of the output's shape)."""
    if activation is None:
        return None, "", None
    if activation.ndim == 2:
        return activation, "gate-weighted mean activation (the gate's input was not recorded)", None
    return gate_effect(data, activation[0], activation[1]), "gate effect vs uniform gating", None


def _view_pairwise(
    data: Data, size: Size, activation: Act, query: Query, rows: Rows = None, window: Win = None, qgrid: Size = None
) -> Shown:
    if size is None:
        return None, "", None
    cell = render.query_cell(query or (0.5, 0.5), (1, 1), size)  # the query as fractions of a unit image (centre)
    return render.pairwise_query(data, size, cell)[-1], f"attention from query ({cell[0]}, {cell[1]}), head mean", cell


def _view_memory(
    data: Data, size: Size, activation: Act, query: Query, rows: Rows = None, window: Win = None, qgrid: Size = None
) -> Shown:
    unit = int(data.reshape(data.shape[0], -1).std(axis=1).argmax())
    return data[unit], f"memory unit {unit} (most variable)", None


def token_prefix(data: np.ndarray, size: tuple[int, int]) -> int:
    """k, the prefix tokens of a token map's data (heads, N, N) over the grid ``size`` (N = k + H*W)."""
    return data.shape[-1] - size[0] * size[1]


def token_query(data: np.ndarray, size: tuple[int, int], cell: tuple[int, int]) -> np.ndarray:
    """Where the patch token at ``cell`` attends over the grid, (heads + 1, h, w): each head's map, then the head
    mean last; (1, h, w), the head mean alone, where only it was kept (``data`` is (1, N, N))."""
    k = token_prefix(data, size)
    q = k + cell[0] * size[1] + cell[1]
    row = data[:, q, k:]  # (heads, H*W)
    rows = np.concatenate([row, row.mean(axis=0, keepdims=True)]) if len(row) > 1 else row
    return rows.reshape(-1, *size).astype(np.float32, copy=False)


def token_prefix_rows(data: np.ndarray, size: tuple[int, int], rows: Rows = None) -> np.ndarray:
    """The prefix tokens' attention over the grid, (heads + k, h, w): the first prefix token's (the class token's)
    row per head (from ``rows`` (heads, k, N) where only the head mean was kept with them), then each prefix token's
    head mean (class, then distillation and registers)."""
    k = token_prefix(data, size)
    per_head = rows if rows is not None else data[:, :k] if data.shape[0] > 1 else None  # (heads, k, N)
    mean = data.mean(axis=0)[:k, k:]  # (k, H*W)
    heads = [] if per_head is None else [per_head[:, 0, k:]]
    return np.concatenate([*heads, mean]).reshape(-1, *size).astype(np.float32, copy=False)


def _view_token(
    data: Data, size: Size, activation: Act, query: Query, rows: Rows = None, window: Win = None, qgrid: Size = None
) -> Shown:
    if size is None:
        return None, "", None
    if qgrid is not None:  # queries and keys on different grids (N x M): on the keys' grid (attnviz.capture.pooled)
        cell = None if query is None else render.query_cell(query, (1, 1), qgrid)
        maps, label = key_maps(data, size, qgrid, cell, rows)
        return maps[-1], f"{label}, head mean", cell
    k = token_prefix(data, size)
    if k > 0 and (query is None or data.shape[-2] <= k):  # the block's view, or class attention (only prefix queries)
        return data[:, 0, k:].mean(axis=0).reshape(size), "class token's attention, head mean", None
    cell = render.query_cell(query or (0.5, 0.5), (1, 1), size)
    return token_query(data, size, cell)[-1], f"attention from query ({cell[0]}, {cell[1]}), head mean", cell


def _view_window(
    data: Data, size: Size, activation: Act, query: Query, rows: Rows = None, window: Win = None, qgrid: Size = None
) -> Shown:
    if window is None:
        return None, "", None
    if query is None:  # the block's view: what each position receives in its window (attnviz.capture.windows)
        queries = "the global context map's queries" if window.is_global else "query"
        return received(data, window), f"attention received within its window, {queries} and head mean", None
    cell = render.query_cell(query, (1, 1), window.grid)
    return query_rows(data, window, cell)[-1], f"attention from {window.query_label(cell)}, head mean", cell


# -- detail drawings (charts are drawn with matplotlib, which render loads on first use) --------------------------
def gray_tiles(tile01: np.ndarray, min_side: int = 384) -> np.ndarray:
    """A 0..1 tiling as uint8 RGB, enlarged by whole pixels (nearest) so small feature grids stay visible."""
    k = max(1, min_side // max(tile01.shape))
    return render.apply_colormap(tile01, "gray").repeat(k, 0).repeat(k, 1)


def _detail_pairwise(view: Drawable, topk: int | None) -> np.ndarray | None:
    if view.grid is None or view.cell is None:
        return None
    heads = render.pairwise_query(view.data, view.grid, view.cell)
    return gray_tiles(render.tile_maps(heads, cols=len(heads)))


def _detail_token(view: Drawable, topk: int | None) -> np.ndarray | None:
    if view.grid is None:
        return None
    qgrid = getattr(view, "qgrid", None)
    if qgrid is not None:  # N x M: per head and their mean on the keys' grid
        tiles = key_maps(view.data, view.grid, qgrid, view.cell, view.rows)[0]
    elif view.cell is not None:
        tiles = token_query(view.data, view.grid, view.cell)
    elif token_prefix(view.data, view.grid) > 0:
        tiles = token_prefix_rows(view.data, view.grid, view.rows)
    else:
        return None
    return gray_tiles(render.tile_maps(tiles, cols=min(len(tiles), 8)))


def _detail_window(view: Drawable, topk: int | None) -> np.ndarray | None:
    if view.window is None or view.cell is None:
        return None
    tiles = query_rows(view.data, view.window, view.cell)
    return gray_tiles(render.tile_maps(tiles, cols=min(len(tiles), 8)))


_UNIFORM = "skip path (x) where the block is x + f(x), else uniform"
_ROWS = "its rows do not sum to 1 (not attention over positions or channels)"

#: kind -> everything about it (module docstring); keyed by, and covering exactly, :data:`KINDS`.
KIND_SPECS: dict[str, KindSpec] = {
    s.name: s
    for s in (
        KindSpec(
            name="channel",
            shape="(B, C)",
            ndim=2,
            normalised=None,
            grid=None,
            channels=True,
            off="gate set to 1 (identity)",
            not_normalised="",
            reshape=lambda x: x.reshape(x.shape[0], -1),
            layout=_force_channel,
            view=_view_gate_effect,
            detail=lambda v, k: render.channel_chart(v.data, k, v.title),
            view_name="gate-effect",
            views={
                "gate-weighted": _view_activation(
                    "gate-weighted mean activation (its peaks favour the zero-padded border)"
                )
            },
        ),
        KindSpec(
            name="spatial",
            shape="(B, H, W)",
            ndim=3,
            normalised=None,
            grid="shape",
            channels=False,
            off="gate set to 1 (identity)",
            not_normalised="",
            reshape=_spatial_tap,
            layout=_force_spatial,
            view=_view_spatial,
            detail=lambda v, k: None,
        ),
        KindSpec(
            name="branch",
            shape="(B, K, C)",
            ndim=3,
            normalised=1,
            grid=None,
            channels=True,
            off="softmax set to uniform 1/K over the branches",
            not_normalised="its weights do not sum to 1 over the branches",
            reshape=lambda x: x.reshape(x.shape[0], x.shape[1], -1),
            layout=_force_branch,
            view=_view_activation("mean output activation"),
            detail=lambda v, k: render.branch_chart(v.data, v.title, topk=k),
        ),
        KindSpec(
            name="pairwise",
            shape="(B, heads, N, N), N = H*W",
            ndim=4,
            normalised=-1,
            grid="size",
            channels=False,
            off=f"{_UNIFORM} 1/N over positions",
            not_normalised=_ROWS,
            layout=_force_pairwise,
            view=_view_pairwise,
            detail=_detail_pairwise,
        ),
        KindSpec(
            name="channel_pairwise",
            shape="(B, C, C)",
            ndim=3,
            normalised=-1,
            grid=None,
            channels=False,
            off=f"{_UNIFORM} 1/C",
            not_normalised=_ROWS,
            layout=_force_channel_pairwise,
            view=_view_none,
            detail=lambda v, k: render.matrix_image(v.data, v.title),
        ),
        KindSpec(
            name="memory",
            shape="(B, S, H, W)",
            ndim=4,
            normalised=1,
            grid="shape",
            channels=False,
            off=f"{_UNIFORM} 1/S over the memory units",
            not_normalised="its weights sum to 1 neither over the units at each position nor over the positions of "
            "each unit",
            layout=_force_memory,
            view=_view_memory,
            detail=lambda v, k: gray_tiles(render.tile_maps(v.data)),
        ),
        KindSpec(
            name="token",
            shape="(B, heads, N, N), N = k + H*W",
            ndim=4,
            normalised=-1,
            grid="size",
            channels=False,
            off=f"{_UNIFORM} 1/N over the tokens",
            not_normalised=_ROWS,
            layout=_force_token,
            view=_view_token,
            detail=_detail_token,
        ),
        KindSpec(
            name="window",
            shape="(B, nW, heads, M², M²), nW windows of M² = Mh*Mw tokens",
            ndim=5,
            normalised=-1,
            grid="size",
            channels=False,
            off=f"{_UNIFORM} 1/M² over the window",
            not_normalised=_ROWS,
            layout=_force_window,
            view=_view_window,
            detail=_detail_window,
        ),
    )
}
assert tuple(KIND_SPECS) == KINDS, "KIND_SPECS must cover attnviz.blocks.KINDS, in its order"

#: every named spatial view (the choices of ``build_views(view=...)`` and ``attnviz render --channel-view``)
VIEW_NAMES: tuple[str, ...] = tuple(dict.fromkeys(n for s in KIND_SPECS.values() for n in (s.view_name, *s.views) if n))


def spec(kind: str) -> KindSpec:
    """The :class:`KindSpec` of ``kind``.

    Raises:
        ValueError: ``kind`` is not a kind.
    """
    s = KIND_SPECS.get(kind)
    if s is None:
        raise ValueError(f"unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    return s


def detail_image(view: Drawable, topk: int | None = 32) -> np.ndarray | None:
    """The detail drawing of ``view`` (see the table above), as (H, W, 3) uint8, or None."""
    return KIND_SPECS[view.kind].detail(view, topk)
