"""What to show for each captured map: one :class:`View` per map, with the spatial map to overlay (if any)
and what it means. Pure: maps and activations in, views out; the app, the exporter, the checks and the statistics all
draw from these.

Spatial view per kind (:data:`attnviz.capture.kinds.KIND_SPECS`):
  spatial          the gate itself (values in 0..1)
  channel          the gate effect (:func:`attnviz.capture.kinds.gate_effect`: the channel mean of the module's
                   output minus the mean gate times its input's), or by name (``view="gate-weighted"``) the
                   gate-weighted mean activation (the output's channel mean); unless the same block also has a
                   spatial gate (CBAM), which is then its view
  branch           the channel mean of the module's output (SK, EPSA)
  pairwise         where the query position attends, head mean (the query defaults to the centre)
  memory           the External Attention unit whose weights vary most over positions
  token            the class token's attention over the patch grid, head mean (no query given; a transformer
                   without prefix tokens: the centre's), else where the query's patch attends, head mean
  window           what each position receives within its window, averaged over the window's queries and heads,
                   shift undone (no query given), else the query's row in its window on the whole grid
  channel_pairwise none (drawn as a C x C matrix)

A network with two or more token maps over one grid and one prefix (a ViT's blocks) also gets one network-level
view: attention rollout (Abnar & Zuidema 2020, :mod:`attnviz.capture.rollout`; head fusion mean, max or min and a
discard ratio, by default mean and nothing discarded), the class token's row of the rolled-out matrix over the grid
(:func:`rollout_view`). Its ``data`` is that matrix (1, N, N), so it draws, exports and answers a query click as a
token map does. A token or window view can show one head in place of the head mean (:func:`head_view`).

The one rule for a block's activation view is :func:`view_activations`: a spatial gate wins, else the owner's
gate-weighted activation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

import numpy as np

from ..render import normalize, value_range
from .kinds import KIND_SPECS, token_prefix
from .maps import IO, AttentionMap
from .pooled import key_maps
from .rollout import rollout_matrix
from .windows import WindowLayout, query_rows, received

__all__ = [
    "ROLLOUT_KEY",
    "Captured",
    "View",
    "build_views",
    "head_view",
    "owner_activation",
    "owner_module",
    "rollout_data",
    "rollout_heads",
    "rollout_maps",
    "rollout_view",
    "spatial_view",
    "spatial_views",
    "token_heads",
    "view_activations",
]

#: the key (and block) of the network-level rollout view
ROLLOUT_KEY = "rollout"

T = TypeVar("T")


class Captured(Protocol):
    """What :func:`build_views` reads of a result (:class:`attnviz.pipeline.core.Result` is one)."""

    @property
    def maps(self) -> list[AttentionMap]: ...

    @property
    def activations(self) -> Mapping[str, np.ndarray]: ...


@dataclass
class View:
    """One captured map, ready to draw.

    Attributes:
        key: the tap's module path (unique per map).
        block: residual block or stage module path (``"layer2.1"``).
        stage: ResNet stage 1..4 (or ``None``).
        kind: the map's kind.
        data: the map without the batch dimension (numpy float32, canonical shape minus B).
        spatial: the (h, w) map to overlay on the image, or ``None``.
        spatial_label: what ``spatial`` shows.
        is_gate: ``spatial`` holds gate values in 0..1 (the "absolute" normalisation is natural).
        grid: (h, w) of the feature map for pairwise/memory maps.
        cell: (row, col) of the query cell on ``grid`` for pairwise maps.
        rows: a token map's prefix rows per head (heads, k, N) kept beside its head mean, else ``None``.
        name: a title of its own (the rollout view), else ``""`` (the title says stage, block and kind).
        window: a ``window`` map's windows on its grid (:class:`~attnviz.capture.windows.WindowLayout`), else None.
        qgrid: a token map's query grid where its queries lie on another grid than its keys (N x M: ``grid`` is the
            keys'; ``cell`` is on the queries' grid), else None.
    """

    key: str
    block: str
    stage: int | None
    kind: str
    data: np.ndarray
    spatial: np.ndarray | None
    spatial_label: str
    is_gate: bool = False
    grid: tuple[int, int] | None = None
    cell: tuple[int, int] | None = None
    rows: np.ndarray | None = None
    name: str = ""
    window: WindowLayout | None = None
    qgrid: tuple[int, int] | None = None

    @property
    def title(self) -> str:
        if self.name:
            return self.name + (f": {self.spatial_label}" if self.spatial_label else "")
        stage = f"stage {self.stage}" if self.stage is not None else "model"
        return f"{stage} · {self.block} · {self.kind}" + (f": {self.spatial_label}" if self.spatial_label else "")


def owner_module(paths: list[str], name: str) -> str | None:
    """The innermost attention module path among ``paths`` that owns the map ``name`` (``None`` if none does)."""
    owners = [k for k in paths if name.startswith(k + ".")]
    return max(owners, key=len) if owners else None


def owner_activation(activations: Mapping[str, T], name: str) -> T | None:
    """The activation of the innermost attention module that owns the tap ``name`` (``None`` if none does)."""
    owner = owner_module(list(activations), name)
    return None if owner is None else activations[owner]


def view_activations(maps: Sequence[AttentionMap], activations: Mapping[str, T]) -> list[T | None]:
    """Per map, the activation its spatial view may show (the channel mean of the owning attention module's output):
    ``None`` where the map's block has a spatial gate, which wins (CBAM shows its spatial gate, not the gate-weighted
    activation), and where no attention module owns the map. A channel map gets its owner's output and input channel
    means (..., 2, h, w) float64 where they were recorded (:data:`~attnviz.capture.maps.IO`), for its gate effect."""
    with_spatial = {m.block for m in maps if m.kind == "spatial"}
    owners = [k for k in activations if IO not in k]
    out: list[T | None] = []
    for m in maps:
        owner = None if m.block in with_spatial else owner_module(owners, m.name)
        both = activations.get(owner + IO) if owner is not None and m.kind == "channel" else None
        out.append(both if both is not None else None if owner is None else activations[owner])
    return out


def spatial_view(
    kind: str,
    data: np.ndarray,
    size: tuple[int, int] | None,
    activation: np.ndarray | None,
    query: tuple[float, float] | None = None,
    rows: np.ndarray | None = None,
    window: WindowLayout | None = None,
    view: str | None = None,
    qgrid: tuple[int, int] | None = None,
) -> tuple[np.ndarray | None, str, tuple[int, int] | None]:
    """The spatial map to overlay for one map of one image (module docstring), its label, and the query cell.

    Args:
        kind: the map's kind; data: its canonical data without the batch dimension.
        size: (h, w) of the feature map for pairwise/memory maps.
        activation: channel mean of the owning attention module's output (h, w), for channel/branch kinds (a
            channel map: (2, h, w) float64, the output's and the input's, from :func:`view_activations`);
            pass ``None`` where another view of the block is preferred (CBAM's spatial gate: :func:`view_activations`).
        query: (x, y) fractions of the image for pairwise and token maps; ``None``: the kind's default (the centre;
            a token map's class token).
        rows: a token map's kept prefix rows per head (heads, k, N) without the batch dimension, or ``None``.
        window: a window map's layout (:class:`~attnviz.capture.windows.WindowLayout`), or ``None``.
        view: a named view (:data:`~attnviz.capture.kinds.VIEW_NAMES`, e.g. a channel map's ``"gate-weighted"``);
            ``None`` or a name the kind does not have: its default.
        qgrid: an N x M token map's query grid (queries and keys on different grids, :mod:`attnviz.capture.pooled`;
            the query is a cell of it), or ``None``.
    """
    return KIND_SPECS[kind].rule(view)(data, size, activation, query, rows, window, qgrid)


def build_views(
    result: Captured,
    query: tuple[float, float] | None = None,
    *,
    rollout: bool = True,
    fusion: str = "mean",
    discard_ratio: float = 0.0,
    view: str | None = None,
    rolled: np.ndarray | None = None,
) -> list[View]:
    """Views for every map of ``result``, in forward order, then the network's rollout (where it applies).

    Args:
        result: an :func:`attnviz.analyze` result, or anything with its ``maps`` and ``activations``
            (:class:`Captured`).
        query: (x, y) as fractions (0..1) of the image's width and height for pairwise and token maps; default
            (``None``): the centre, and a token map's class token.
        rollout: add the rollout view (:func:`rollout_view`); ``fusion``, ``discard_ratio``: its settings;
            ``rolled``: its matrix already made for these maps and settings (:func:`rollout_data`; a page's cache).
        view: a named spatial view for the kinds that have it (:data:`~attnviz.capture.kinds.VIEW_NAMES`: a channel
            map's ``"gate-weighted"`` mean activation in place of its gate effect); ``None``: each kind's default.
    """
    views: list[View] = []
    for m, act in zip(result.maps, view_activations(result.maps, result.activations), strict=True):
        data = m.data[0].numpy()
        rows = None if m.rows is None else m.rows[0].numpy()
        spatial, label, cell = spatial_view(m.kind, data, m.size, act, query, rows, m.window, view, qgrid=m.qgrid)
        gate = m.kind == "spatial"
        at = (m.size, cell, rows, "", m.window, m.qgrid)  # grid, query cell, kept rows, name, window, query grid
        views.append(View(m.name, m.block, m.stage, m.kind, data, spatial, label, gate, *at))
    rv = (
        rollout_view(result.maps, query, fusion=fusion, discard_ratio=discard_ratio, rolled=rolled) if rollout else None
    )
    return views if rv is None else [*views, rv]


def rollout_maps(maps: Sequence[AttentionMap]) -> list[AttentionMap]:
    """The token maps :func:`rollout_view` multiplies, in forward order, or ``[]`` where rollout does not apply
    (its docstring says when)."""
    tokens = [m for m in maps if m.kind == "token" and m.size is not None and m.data.shape[-2] == m.data.shape[-1]]
    tokens = [m for m in tokens if m.qgrid is None]  # N x M attention (PVT, MViT) has no square product
    if len(tokens) < 2 or len({(m.size, m.data.shape[-1]) for m in tokens}) != 1:
        return []
    h, w = tokens[0].size  # type: ignore[misc]
    return tokens if int(tokens[0].data.shape[-1]) - h * w >= 1 else []


def rollout_heads(maps: Sequence[AttentionMap]) -> bool:
    """Whether the token maps that :func:`rollout_view` multiplies kept every head (``keep="full"``, or an explicit
    softmax): head fusion by max or min needs them; a head mean (``keep="rows"``/``"mean"``) fuses by the mean only."""
    tokens = rollout_maps(maps)
    return bool(tokens) and all(m.data.shape[1] > 1 for m in tokens)


def rollout_data(
    maps: Sequence[AttentionMap], *, fusion: str = "mean", discard_ratio: float = 0.0
) -> np.ndarray | None:
    """The rolled-out matrix of the first image (1, N, N) float32 that :func:`rollout_view` shows (the product over
    every block: the costly part, the same for every query), or ``None`` where rollout does not apply."""
    tokens = rollout_maps(maps)
    if not tokens:
        return None
    used = fusion if rollout_heads(tokens) else "mean"  # max/min need every head's matrix
    return rollout_matrix([m.data[:1] for m in tokens], fusion=used, discard_ratio=discard_ratio).float().numpy()


def rollout_view(
    maps: Sequence[AttentionMap],
    query: tuple[float, float] | None = None,
    *,
    fusion: str = "mean",
    discard_ratio: float = 0.0,
    rolled: np.ndarray | None = None,
) -> View | None:
    """The network's attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020)
    as one more view, or ``None`` where it does not apply: fewer than two token maps, token maps over different
    grids or token counts (a hybrid's stages), or no prefix (class) token; class attention maps (only the class
    token queries, CaiT) are left out of the product, which needs every token's row.

    The layers' heads are fused by ``fusion`` (mean, max or min) and the lowest ``discard_ratio`` of each fused
    matrix's weights dropped (the class token's column kept), ``Â = 0.5·A + 0.5·I`` with rows renormalised
    (:func:`attnviz.capture.rollout.rollout_matrix`), in forward order. Where a map kept only the head mean
    (``keep="rows"`` or ``"mean"``), max and min cannot be taken: the mean is, and the label says so
    (:func:`rollout_heads`). ``data`` is the rolled-out matrix of the first image (1, N, N); the spatial view is its
    class token's row over the grid (equal to :func:`attnviz.capture.rollout.rollout`), or the query's patch's row.
    ``rolled``: that matrix, made before by :func:`rollout_data` for these maps and settings (not made again).
    """
    tokens = rollout_maps(maps)
    if not tokens:
        return None
    size: tuple[int, int] = tokens[0].size  # type: ignore[assignment]
    used = fusion if rollout_heads(tokens) else "mean"  # max/min need every head's matrix
    data = rollout_data(tokens, fusion=fusion, discard_ratio=discard_ratio) if rolled is None else rolled  # (1, N, N)
    spatial, label, cell = KIND_SPECS["token"].view(data, size, None, query, None)
    label = label.replace("class token's attention, head mean", "class token")
    how = "head mean" if used == "mean" else f"head {used}"
    if used != fusion:
        how += f" (head {fusion} needs every head: only their mean was kept; keep='full' keeps them)"
    if discard_ratio > 0:
        how += f", lowest {discard_ratio:.0%} discarded"
    label = f"rollout over {len(tokens)} blocks, {how}, {label}"
    name = "model · attention rollout (Abnar & Zuidema 2020)"
    return View(ROLLOUT_KEY, ROLLOUT_KEY, None, "token", data, spatial, label, False, size, cell, None, name)


def token_heads(view: View) -> int:
    """How many heads of a token or window view can be shown one by one (:func:`head_view`): every head's matrix
    (``keep="full"``, or an explicit softmax; a window map under ``keep="auto"``), or the class token's rows per head
    (``keep="rows"``); 0 for other views."""
    if view.kind == "window" and view.window is not None:
        heads = int(view.data.shape[1])  # (nW, heads, M², M²)
        return heads if heads > 1 else 0
    if view.kind != "token" or view.grid is None or view.key == ROLLOUT_KEY:
        return 0
    if view.data.shape[0] > 1:
        return int(view.data.shape[0])
    return 0 if view.rows is None else int(view.rows.shape[0])


def head_view(view: View, head: int | None) -> View:
    """``view`` showing head ``head`` in place of the head mean (``None``, or a view with fewer heads: as it is).

    A window view shows what each position receives from that head's queries within its window, or the query's row
    of that head (:func:`attnviz.capture.windows.received`, :func:`~attnviz.capture.windows.query_rows`). A token
    view's class token's attention (no query) comes from every head's matrix or from the kept rows per head; a query's
    row needs every head's matrix (``keep="full"``): where only the head mean was kept, the view stays the head mean
    and its label says why.
    """
    n = token_heads(view)
    if head is None or not 0 <= head < n:
        return view
    if view.window is not None:  # a window map: its heads, one by one (attnviz.capture.windows)
        if view.cell is None:
            spatial = received(view.data[:, head : head + 1], view.window)
            label = f"attention received within its window, head {head}"
        else:
            spatial = query_rows(view.data, view.window, view.cell)[head]
            label = f"attention from {view.window.query_label(view.cell)}, head {head}"
        return replace(view, spatial=np.ascontiguousarray(spatial, dtype=np.float32), spatial_label=label)
    size: tuple[int, int] = view.grid  # type: ignore[assignment]
    if view.qgrid is not None:  # queries and keys on different grids: per head on the keys' grid
        maps, what = key_maps(view.data, size, view.qgrid, view.cell, view.rows)
        if len(maps) > 1:
            return replace(view, spatial=np.ascontiguousarray(maps[head]), spatial_label=f"{what}, head {head}")
        note = "only the class token's rows per head were kept; keep='full' keeps every query's"
        return replace(view, spatial_label=f"{view.spatial_label} (head {head}: {note})")
    k = token_prefix(view.data, size)
    if view.cell is None and k > 0:  # the class token's attention over the grid
        rows = view.data if view.data.shape[0] > 1 else view.rows  # (heads, >= 1, N)
        spatial = rows[head, 0, k:].reshape(size)  # type: ignore[index]
        label = f"class token's attention, head {head}"
    elif view.data.shape[0] > 1:  # a query's row
        cell = view.cell if view.cell is not None else (size[0] // 2, size[1] // 2)
        spatial = view.data[head, k + cell[0] * size[1] + cell[1], k:].reshape(size)
        label = f"attention from query ({cell[0]}, {cell[1]}), head {head}"
    else:
        return replace(
            view,
            spatial_label=f"{view.spatial_label} (head {head}: only the class token's rows per head "
            "were kept; keep='full' keeps every query's)",
        )
    return replace(view, spatial=np.ascontiguousarray(spatial, dtype=np.float32), spatial_label=label)


def spatial_views(views: list[View], norm: str) -> tuple[list[View], list[np.ndarray], list[tuple[float, float]]]:
    """The views that have a spatial map, their maps normalised with ``norm``, and each one's value range."""
    shown = [v for v in views if v.spatial is not None]
    arrays = [v.spatial for v in shown]  # type: ignore[misc]
    groups = [v.stage for v in shown]
    return shown, normalize(arrays, norm, groups), value_range(arrays, norm, groups)
