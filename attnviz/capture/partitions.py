"""Partitioned attention in code attnviz did not write: which window tokens are which image positions, verified.

Windowed attention (Swin, Liu et al., ICCV 2021), MaxViT's block and grid attention (Tu et al., ECCV 2022) and
YOLOv12's area attention (Tian et al., 2025) all compute a softmax (B·nW, heads, M, M): nW windows of M tokens of a
feature map. The shape does not say which tokens form a window (contiguous blocks, a dilated grid, runs of the
row-major sequence, shifted or not): the three give the same shapes. Known classes say it through their attributes
(:mod:`attnviz.capture.adapters`); for any other code the discovery pass reads it from the tensors themselves, by
exact equality, never from the shapes:

1. the tokens: the input of the innermost running module that got B·nW windows of M tokens, (B·nW, M, C),
   (B·nW, Ph, Pw, C) or (B·nW, C, Ph, Pw); or, for a fused attention call, its query's first head (B·nW, M, d);
2. the map: a running module's input or a recent module output (B, H, W, C) or (B, C, H, W) with H·W = nW·M whose
   H·W position vectors are all distinct and hold every token vector exactly (the query's d values as d consecutive
   channels of each position);
3. the partition: the positions found, (nW, M), must be those of one :class:`~attnviz.capture.windows.WindowLayout`
   of the grid: blocks (any shift), a dilated grid or runs, so that a later forward of another size is read too.

Anything else (tokens changed before the split, e.g. a position embedding added per block as in NesT; zero padding;
an order that is no such partition) is not read: the weight is listed as unclassified with the reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import numpy as np
from torch import Tensor

from .kinds import Canon, shape_str
from .windows import WindowLayout

__all__ = ["Found", "find_partition", "window_canon"]

#: at most this many candidate channel offsets are tried for a query's first token
_MAX_OFFSETS = 64


def window_canon(
    t: Tensor, ref: tuple[int, ...] | None, layout: WindowLayout, computed: tuple[int, ...] | None = None
) -> Canon:
    """A window softmax (B·nW, heads, M², M²) -> (B, nW, heads, M², M²), with its layout (``computed``: the shape
    the module computed, where the caller reordered it)."""
    nw, (mh, mw) = layout.count, layout.window
    s = tuple(t.shape)
    if ref is None or t.dim() != 4 or s[0] % nw or s[-1] != mh * mw or s[-2] != s[-1]:
        raise ValueError(f"not (B·nW, heads, M², M²) for {layout.describe()}")
    data = t.reshape(s[0] // nw, nw, s[1], s[2], s[3])
    layout_text = f"{shape_str(computed or s)} softmax, {s[1]} head(s), {layout.describe()}"
    return Canon("window", data, layout.grid, None, layout_text, layout)


@dataclasses.dataclass(frozen=True)
class Found:
    """A partition read from the tensors: the layout, and how later forwards read their grid from the reference
    module's input ((B, H, W, C) when ``channels_last``, else (B, C, H, W))."""

    layout: WindowLayout
    channels_last: bool

    def transform(self, owner: object, t: Tensor, ref: tuple[int, ...] | None) -> Canon:
        """The site's transform in later forwards: the same partition over this forward's grid."""
        if ref is None or len(ref) != 4:
            raise ValueError("the reference feature map was not seen")
        grid = (int(ref[1]), int(ref[2])) if self.channels_last else (int(ref[2]), int(ref[3]))
        (h, w), (mh, mw) = grid, self.layout.window
        if self.layout.partition == "block" and (h % mh or w % mw):
            raise ValueError(f"the {mh} x {mw} windows were read without padding; a {h} x {w} grid needs it")
        layout = dataclasses.replace(self.layout, grid=grid)  # checks a grid or runs partition's fit
        return window_canon(t, ref, layout)


def _rows(x: Tensor, lead: int, m: int) -> list[np.ndarray]:
    """The token vectors (lead·M, C) a module input of ``lead`` windows of M tokens holds: (lead, M, C),
    (lead, Ph, Pw, C) or (lead, C, Ph, Pw) (both readings where both fit)."""
    s = tuple(x.shape)
    if not s or s[0] != lead:
        return []
    out = []
    if x.dim() == 3 and s[1] == m:
        out.append(x.reshape(lead * m, s[2]))
    if x.dim() == 4 and s[1] * s[2] == m:
        out.append(x.reshape(lead * m, s[3]))
    if x.dim() == 4 and s[2] * s[3] == m:
        out.append(x.flatten(2).transpose(1, 2).reshape(lead * m, s[1]))
    return [r.detach().float().cpu().numpy() for r in out]


def _maps(t: Tensor, batch: int, n: int) -> list[tuple[np.ndarray, tuple[int, int], bool]]:
    """The first image's position vectors (H·W, C) of a map (B, H, W, C) or (B, C, H, W) with H·W = n, its grid and
    whether it is channels-last (both readings where both fit)."""
    if t.dim() != 4 or t.shape[0] != batch:
        return []
    out = []
    _, a, b, c = t.shape
    if a * b == n:
        out.append((t[0].reshape(n, c), (int(a), int(b)), True))
    if b * c == n:
        out.append((t[0].reshape(a, n).t(), (int(b), int(c)), False))
    return [(v.detach().float().cpu().numpy(), g, last) for v, g, last in out]


def _match(tokens: np.ndarray, vectors: np.ndarray) -> np.ndarray | None:
    """For each token vector (T, C) the index of the one position vector (P, C) it equals exactly, where every position
    vector is distinct and the tokens are a permutation of them; else ``None``."""
    if tokens.shape[0] != vectors.shape[0] or tokens.shape[1] != vectors.shape[1]:
        return None
    where = {np.ascontiguousarray(v).tobytes(): i for i, v in enumerate(vectors)}
    if len(where) != len(vectors):  # repeated position vectors: which is which cannot be told
        return None
    pos = np.fromiter((where.get(np.ascontiguousarray(t).tobytes(), -1) for t in tokens), np.int64, len(tokens))
    if (pos < 0).any() or len(np.unique(pos)) != len(pos):
        return None
    return pos


def _offsets(first: np.ndarray, vectors: np.ndarray) -> list[int]:
    """Channel offsets c at which some position vector holds the d values of ``first`` as channels c .. c + d - 1."""
    d = len(first)
    hits = np.argwhere(vectors[:, : vectors.shape[1] - d + 1] == first[0])[:_MAX_OFFSETS]
    return sorted({int(c) for p, c in hits if np.array_equal(vectors[p, c : c + d], first)})


def _layouts(grid: tuple[int, int], count: int, m: int, first: int) -> Iterable[WindowLayout]:
    """Every block (shift from where window 0's first token lies), dilated grid and runs partition of ``grid`` into
    ``count`` windows of ``m`` tokens."""
    h, w = grid
    if h * w != count * m:
        return
    yield WindowLayout(grid, (1, m), partition="runs")
    for mh in range(1, m + 1):
        if m % mh or h % mh or w % (m // mh):
            continue
        mw = m // mh
        sy, sx = divmod(first, w)
        if sy < mh and sx < mw:
            yield WindowLayout(grid, (mh, mw), (sy, sx))
        yield WindowLayout(grid, (mh, mw), partition="grid")


def _recognise(pos: np.ndarray, grid: tuple[int, int], count: int, m: int) -> WindowLayout | None:
    pos = pos.reshape(count, m)
    for layout in _layouts(grid, count, m, int(pos[0, 0])):
        if layout.count == count and np.array_equal(layout.positions(), pos):
            return layout
    return None


def find_partition(
    weight: Tensor,
    batch: int,
    inputs: list[tuple[Tensor, bool]],
    query: Tensor | None,
    recent: list[Tensor],
    grid_input: Callable[[tuple[int, int], bool], tuple[int, bool] | None],
) -> tuple[Found, int] | str:
    """The partition of a softmax (B·nW, heads, M, M) (module docstring), and the index (into the running modules, as
    ``grid_input`` counts them) of the reference module whose input is the partitioned map; else why not.

    Args:
        weight: the softmax (B·nW, heads, M, M).
        batch: B.
        inputs: the (first) inputs of the running modules, innermost first, each with whether it was the module's
            only tensor argument (a module that also got, e.g., a global query may attend from other tokens).
        query: a fused attention call's query (B·nW, heads, M, d), else ``None``.
        recent: the maps the tokens may come from: the running modules' inputs, innermost first, then recent module
            outputs, latest first.
        grid_input: (grid, channels_last) -> (the index of the innermost running module whose input is a map of that
            grid, (B, H, W, C) or (B, C, H, W), and whether it is channels-last), or ``None``; the map's own layout
            (``channels_last``) is preferred where both fit.
    """
    s = tuple(weight.shape)
    lead, m = s[0], s[-1]
    nw = lead // batch
    shape = shape_str(s)
    # (token vectors, a query's first head (d consecutive channels of a position), its module got them alone)
    sources = [(r, False, alone) for x, alone in inputs for r in _rows(x, lead, m)]
    if query is not None and query.dim() == 4 and query.shape[0] == lead and query.shape[2] == m:
        sources.append((query[:, 0].reshape(lead * m, -1).detach().float().cpu().numpy(), True, True))
    if not sources:
        return (
            f"{shape}: a softmax over {nw} windows of {m} tokens, but no module got those windows' tokens (nor a "
            "fused call's query) to read which positions they are; the windows are not guessed from shapes"
        )
    seen: set[int] = set()
    for t in recent:
        if id(t) in seen:
            continue
        seen.add(id(t))
        for vectors, grid, last in _maps(t, batch, nw * m):
            for tokens, partial, alone in sources:
                first = tokens[:1]  # window 0's first token
                if partial:
                    offsets = _offsets(first[0], vectors)
                    cands = [vectors[:, c : c + tokens.shape[1]] for c in offsets]
                else:
                    cands = [vectors]
                for cand in cands:
                    pos = _match(tokens[: nw * m], cand)  # the first image's windows
                    if pos is None:
                        continue
                    if not alone:
                        return (
                            f"{shape}: its {nw} windows of {m} tokens are positions of a {grid[0]} x {grid[1]} map, "
                            "but their module also got another tensor (a global query?): its queries may be no window's"
                        )
                    layout = _recognise(pos, grid, nw, m)
                    if layout is None:
                        return (
                            f"{shape}: its {nw} windows of {m} tokens are positions of a {grid[0]} x {grid[1]} map in "
                            "an order that is no block, dilated-grid or area partition"
                        )
                    ref = grid_input(grid, last)
                    if ref is None:
                        return f"{shape}: {layout.describe()}, but no module got the {grid[0]} x {grid[1]} map"
                    return Found(layout, ref[1]), ref[0]
    return (
        f"{shape}: a softmax over {nw} windows of {m} tokens whose tokens equal no recent feature map's positions "
        "(changed before the split, e.g. a position embedding, or padded); the windows are not guessed from shapes"
    )
