"""Windowed and partitioned attention read against the whole grid: Swin's shifted windows, MaxViT's block and grid
partitions, NesT's blocks, YOLOv12's areas.

A Swin block cuts its (B, H, W, C) map into windows of Mh x Mw tokens after a cyclic shift (``torch.roll`` by
-shift; every other block) and attends within each window: a softmax (B·nW, heads, M², M²), M² = Mh·Mw. Where the grid
is not a multiple of the window it is zero-padded at the bottom and right: timm (``SwinTransformerBlock._attn``)
rolls, then pads; torchvision (``shifted_window_attention``) pads, then rolls over the padded grid. A
:class:`WindowLayout` says which image position each window token is (:meth:`WindowLayout.positions`), so the
shift is undone (rolled back by +shift) and padding left out wherever a map is placed on the image.

Three partitions (``WindowLayout.partition``), each the one its module's code makes: read by an adapter from the
module's attributes (:mod:`attnviz.capture.adapters`), or by discovery from the tensors, matched exactly
(:mod:`attnviz.capture.partitions`); never guessed from the weight's shape, since the three give the same shapes:

- ``"block"``: contiguous Mh x Mw windows (Swin, Liu et al., ICCV 2021; MaxViT's block attention, Tu et al., ECCV
  2022; NesT's ``blockify``, Zhang et al., AAAI 2022), with an optional shift and padding;
- ``"grid"``: MaxViT's grid attention (dilated): a Gh x Gw grid of tokens with stride (H/Gh, W/Gw); window (a, b)
  holds the positions (i·H/Gh + a, j·W/Gw + b), i < Gh, j < Gw (timm ``grid_partition``);
- ``"runs"``: runs of L consecutive tokens of the row-major sequence, window = (1, L) (YOLOv12's area attention,
  Tian et al., 2025: the flattened H·W tokens reshaped into ``area`` equal parts; whole rows when ``area`` divides H).

The canonical ``window`` data is per window, (B, nW, heads, M², M²) (nW windows in the order the code made them); its
views over the whole H x W grid:

- the block's view, :func:`received`: the attention each position *receives*, averaged over the (non-padding)
  queries of its own window and over heads: r(p) = mean_h mean_{q in Q(w(p))} A[w(p), h, q, j(p)], where p is token
  j(p) of window w(p). Rows sum to 1, so r sums to 1 within each window (over its real keys, less what padding took).
- a query's view, :func:`query_rows`: the query position's row in its own window, placed on the grid (zeros
  elsewhere), per head and head mean.

Global queries (``WindowLayout.queries = "global"``): GCViT's global blocks (Hatamizadeh et al., ICML 2023) attend
from the tokens of a global context map (the image's features pooled to the window's size, Mh x Mw), shared by every
window, to each window's own positions: the keys are positions, the queries are not. The block's view is the same
(what each position receives, mean over the global queries); a clicked position stands for the global token whose
cell of the pooled map covers it, and its view is that token's row in every window, placed on the grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["WindowLayout", "query_rows", "received"]


@dataclass(frozen=True)
class WindowLayout:
    """How a block's windows lie on its grid.

    Attributes:
        grid: (H, W), the map the block received (before padding).
        window: (Mh, Mw).
        shift: (sh, sw): the block rolled its map by -shift before partitioning (0: plain windows).
        pad_first: padded before rolling (torchvision: the shift wraps over the padded grid); ``False``: rolled
            the H x W map, then padded (timm, the authors' code).
        partition: ``"block"`` (contiguous windows), ``"grid"`` (dilated: window = the Gh x Gw grid of tokens) or
            ``"runs"`` (window = (1, L): L consecutive tokens in row-major order); see the module docstring. Grid and
            runs partitions have no shift or padding: the grid must be a multiple of the window (of L tokens).
        queries: ``"window"`` (each window's queries are its own tokens) or ``"global"`` (GCViT: the Mh x Mw tokens
            of a global context map, shared by every window; the keys are the window's tokens).
    """

    grid: tuple[int, int]
    window: tuple[int, int]
    shift: tuple[int, int] = (0, 0)
    pad_first: bool = False
    partition: str = "block"
    queries: str = "window"

    def __post_init__(self) -> None:
        (h, w), (mh, mw) = self.grid, self.window
        if self.partition not in ("block", "grid", "runs"):
            raise ValueError(f"unknown partition {self.partition!r}: 'block', 'grid' or 'runs'")
        if self.queries not in ("window", "global"):
            raise ValueError(f"unknown queries {self.queries!r}: 'window' or 'global'")
        if self.partition != "block" and (any(self.shift) or self.pad_first):
            raise ValueError(f"a {self.partition} partition has no shift or padding")
        if self.partition == "grid" and (h % mh or w % mw):
            raise ValueError(f"a {mh} x {mw} grid partition needs a multiple of it, not {h} x {w}")
        if self.partition == "runs" and (mh != 1 or (h * w) % mw):
            raise ValueError(f"runs of (1, L) tokens need L to divide H·W = {h * w}, not {self.window}")

    @property
    def padded(self) -> tuple[int, int]:
        """(Hp, Wp): the grid padded up to whole windows (grid and runs partitions: the grid)."""
        (h, w), (mh, mw) = self.grid, self.window
        if self.partition != "block":
            return h, w
        return -(-h // mh) * mh, -(-w // mw) * mw

    @property
    def count(self) -> int:
        """nW, windows per image."""
        if self.partition == "runs":
            return self.grid[0] * self.grid[1] // self.window[1]
        hp, wp = self.padded
        return (hp // self.window[0]) * (wp // self.window[1])

    def describe(self) -> str:
        """``64 windows of 7 x 7 over a 56 x 56 grid, shift (3, 3)``; ``64 grids of 8 x 8 (stride 8 x 8) over a 64 x
        64 grid``; ``4 areas of 100 consecutive tokens over a 20 x 20 grid``."""
        (h, w), (mh, mw) = self.grid, self.window
        if self.partition == "grid":
            return f"{self.count} grids of {mh} x {mw} (stride {h // mh} x {w // mw}) over a {h} x {w} grid"
        if self.partition == "runs":
            return f"{self.count} areas of {mw} consecutive tokens (row-major) over a {h} x {w} grid"
        shift = f", shift {self.shift}" if any(self.shift) else ""
        glob = f"; queries: a global {mh} x {mw} context map's tokens, shared by every window" if self.is_global else ""
        return f"{self.count} windows of {mh} x {mw} over a {h} x {w} grid{shift}{glob}"

    @property
    def is_global(self) -> bool:
        """The queries are a global context map's tokens, not the window's own (GCViT)."""
        return self.queries == "global"

    def global_query(self, cell: tuple[int, int]) -> tuple[int, int]:
        """The global token (i, j) whose cell of the pooled Mh x Mw context map covers the grid position ``cell``."""
        (h, w), (mh, mw) = self.grid, self.window
        return min(cell[0] * mh // h, mh - 1), min(cell[1] * mw // w, mw - 1)

    def query_label(self, cell: tuple[int, int]) -> str:
        """What a query view of ``cell`` shows, for labels: ``query (y, x) in its window`` or, with global queries,
        ``global query (i, j) (covering (y, x)) in every window``."""
        if self.is_global:
            i, j = self.global_query(cell)
            return f"global query ({i}, {j}) (its context cell covers ({cell[0]}, {cell[1]})) in every window"
        return f"query ({cell[0]}, {cell[1]}) in its window"

    def positions(self) -> np.ndarray:
        """(nW, Mh·Mw) int64: the image position y·W + x of each window token (shift undone), -1 for padding."""
        (h, w), (mh, mw), (sh, sw) = self.grid, self.window, self.shift
        if self.partition == "runs":  # area k holds tokens k·L ... (k + 1)·L - 1 of the row-major sequence
            return np.arange(h * w, dtype=np.int64).reshape(self.count, mw)
        if self.partition == "grid":  # window (a, b), token (i, j) -> (i·H/Gh + a, j·W/Gw + b)
            nh, nw = h // mh, w // mw  # windows per column / row = the stride
            a = np.arange(nh).reshape(nh, 1, 1, 1)
            b = np.arange(nw).reshape(1, nw, 1, 1)
            i = np.arange(mh).reshape(1, 1, mh, 1)
            j = np.arange(mw).reshape(1, 1, 1, mw)
            return ((i * nh + a) * w + (j * nw + b)).reshape(self.count, mh * mw).astype(np.int64)
        hp, wp = self.padded
        a = np.arange(hp).reshape(hp // mh, 1, mh, 1)  # rows of the shifted (padded) frame, by window row
        b = np.arange(wp).reshape(1, wp // mw, 1, mw)
        if self.pad_first:  # shifted[a] = padded[(a + s) mod Hp]
            y, x = (a + sh) % hp, (b + sw) % wp
            valid = (y < h) & (x < w)
        else:  # shifted[a] = x[(a + s) mod H] for a < H; padding past it
            valid = (a < h) & (b < w)
            y, x = (a + sh) % h, (b + sw) % w
        pos = np.where(valid, y * w + x, -1)  # (nWh, nWw, Mh, Mw)
        return pos.reshape(self.count, mh * mw)


def received(data: np.ndarray, layout: WindowLayout) -> np.ndarray:
    """The attention each position receives, (H, W) (module docstring): ``data`` (nW, heads, M², M²) of one image."""
    pos = layout.positions()  # (nW, M²)
    real = pos >= 0
    asked = np.ones_like(real) if layout.is_global else real  # real queries: global tokens are all real
    a = data.astype(np.float64).mean(axis=1)  # (nW, M², M²), head mean
    got = (a * asked[:, :, None]).sum(axis=1) / np.maximum(asked.sum(axis=1, keepdims=True), 1)  # (nW, M²) over queries
    out = np.zeros(layout.grid[0] * layout.grid[1])
    out[pos[real]] = got[real]
    return out.reshape(layout.grid).astype(np.float32)


def query_rows(data: np.ndarray, layout: WindowLayout, cell: tuple[int, int]) -> np.ndarray:
    """Where the position ``cell`` attends, placed on the whole grid, (heads + 1, H, W) (each head, then the mean;
    (1, H, W) where one head was kept): its row in its own window, zeros outside it. With global queries: the row of
    the global token covering ``cell`` (:meth:`WindowLayout.global_query`) in every window (each window sums to 1)."""
    pos = layout.positions()
    if layout.is_global:
        i, j = layout.global_query(cell)
        rows = data[:, :, i * layout.window[1] + j]  # (nW, heads, M²): the global token's row in every window
        rows = np.concatenate([rows, rows.mean(axis=1, keepdims=True)], axis=1) if rows.shape[1] > 1 else rows
        real = pos >= 0
        out = np.zeros((rows.shape[1], layout.grid[0] * layout.grid[1]), dtype=np.float32)
        out[:, pos[real]] = rows.transpose(1, 0, 2)[:, real]
        return out.reshape(-1, *layout.grid)
    p = cell[0] * layout.grid[1] + cell[1]
    win, q = (int(i[0]) for i in np.nonzero(pos == p))
    row = data[win, :, q]  # (heads, M²)
    rows = np.concatenate([row, row.mean(axis=0, keepdims=True)]) if len(row) > 1 else row
    real = pos[win] >= 0
    out = np.zeros((len(rows), layout.grid[0] * layout.grid[1]), dtype=np.float32)
    out[:, pos[win][real]] = rows[:, real]
    return out.reshape(-1, *layout.grid)
