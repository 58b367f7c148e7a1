"""What to show for each captured map: one :class:`View` per map, with the spatial map to overlay (if any)
and what it means. Pure: maps and activations in, views out; the app, the exporter, the checks and the statistics all
draw from these.

Spatial view per kind (:data:`attnviz.capture.kinds.KIND_SPECS`):
  spatial          the gate itself (values in 0..1)
  channel          the gate-weighted mean activation of the block (channel mean of the module's output),
                   unless the same block also has a spatial gate (CBAM), which is then its view
  branch           the channel mean of the module's output (SK, EPSA)
  pairwise         where the query position attends, head mean (the query defaults to the centre)
  memory           the External Attention unit whose weights vary most over positions
  token            the class token's attention over the patch grid, head mean (no query given; a transformer
                   without prefix tokens: the centre's), else where the query's patch attends, head mean
  channel_pairwise none (drawn as a C x C matrix)

The one rule for a block's activation view is :func:`view_activations`: a spatial gate wins, else the owner's
gate-weighted activation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

from ..render import normalize, value_range
from .kinds import KIND_SPECS
from .recorder import AttentionMap

__all__ = [
    "Captured",
    "View",
    "build_views",
    "owner_activation",
    "owner_module",
    "spatial_view",
    "spatial_views",
    "view_activations",
]

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

    @property
    def title(self) -> str:
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
    activation), and where no attention module owns the map."""
    with_spatial = {m.block for m in maps if m.kind == "spatial"}
    return [None if m.block in with_spatial else owner_activation(activations, m.name) for m in maps]


def spatial_view(
    kind: str,
    data: np.ndarray,
    size: tuple[int, int] | None,
    activation: np.ndarray | None,
    query: tuple[float, float] | None = None,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray | None, str, tuple[int, int] | None]:
    """The spatial map to overlay for one map of one image (module docstring), its label, and the query cell.

    Args:
        kind: the map's kind; data: its canonical data without the batch dimension.
        size: (h, w) of the feature map for pairwise/memory maps.
        activation: channel mean of the owning attention module's output (h, w), for channel/branch kinds;
            pass ``None`` where another view of the block is preferred (CBAM's spatial gate: :func:`view_activations`).
        query: (x, y) fractions of the image for pairwise and token maps; ``None``: the kind's default (the centre;
            a token map's class token).
        rows: a token map's kept prefix rows per head (heads, k, N) without the batch dimension, or ``None``.
    """
    return KIND_SPECS[kind].view(data, size, activation, query, rows)


def build_views(result: Captured, query: tuple[float, float] | None = None) -> list[View]:
    """Views for every map of ``result``, in forward order.

    Args:
        result: an :func:`attnviz.analyze` result, or anything with its ``maps`` and ``activations``
            (:class:`Captured`).
        query: (x, y) as fractions (0..1) of the image's width and height for pairwise and token maps; default
            (``None``): the centre, and a token map's class token.
    """
    views: list[View] = []
    for m, act in zip(result.maps, view_activations(result.maps, result.activations), strict=True):
        data = m.data[0].numpy()
        rows = None if m.rows is None else m.rows[0].numpy()
        spatial, label, cell = spatial_view(m.kind, data, m.size, act, query, rows)
        gate = m.kind == "spatial"
        views.append(View(m.name, m.block, m.stage, m.kind, data, spatial, label, gate, m.size, cell, rows))
    return views


def spatial_views(views: list[View], norm: str) -> tuple[list[View], list[np.ndarray], list[tuple[float, float]]]:
    """The views that have a spatial map, their maps normalised with ``norm``, and each one's value range."""
    shown = [v for v in views if v.spatial is not None]
    arrays = [v.spatial for v in shown]  # type: ignore[misc]
    groups = [v.stage for v in shown]
    return shown, normalize(arrays, norm, groups), value_range(arrays, norm, groups)
