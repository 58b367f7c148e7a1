"""Token attention whose queries and keys lie on different grids (N x M), drawn on the keys' grid.

Spatial-reduction attention (PVT, Wang et al., ICCV 2021: keys and values from a strided convolution of the map;
PVT-v2's linear SRA pools them to 7 x 7), pooling attention (MViT, Fan et al., ICCV 2021; MViT-v2, Li et al., CVPR
2022: queries and keys pooled with different strides, a class token on both sides) and LeViT's subsampling
attention (Graham et al., ICCV 2021: 7 x 7 queries over 14 x 14 keys) attend from Nq = kq + Hq·Wq queries to
Nk = k + Hk·Wk keys. A ``token`` map with a ``qgrid`` holds their weights, ``data`` (heads, Nq, Nk) per image; its
``size`` is the keys' grid (Hk, Wk), ``qgrid`` the queries' (Hq, Wq) (:mod:`attnviz.capture.tokens` reads both).
Its views, each over the keys' grid (where the weights are distributions):

- :func:`key_maps` with no query and no class token: what each key position *receives*, the mean over every query
  and head: r(p) = mean_h mean_q A[h, q, k + p]. Rows sum to 1, so r sums to 1 less what the keys' prefix tokens
  receive on average;
- the class token's row (query 0) where the queries have prefix tokens (MViT with a class token);
- a clicked query's row: the query's cell on the queries' grid, its attention over the keys' grid.
"""

from __future__ import annotations

import numpy as np

__all__ = ["key_maps", "prefixes"]


def prefixes(data: np.ndarray, size: tuple[int, int], qgrid: tuple[int, int]) -> tuple[int, int]:
    """(kq, k): the prefix tokens of the queries and of the keys of ``data`` (heads, Nq, Nk)."""
    return int(data.shape[-2]) - qgrid[0] * qgrid[1], int(data.shape[-1]) - size[0] * size[1]


def key_maps(
    data: np.ndarray,
    size: tuple[int, int],
    qgrid: tuple[int, int],
    cell: tuple[int, int] | None = None,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, str]:
    """One map per head over the keys' grid, then their mean, (heads + 1, Hk, Wk) ((1, Hk, Wk): the head mean alone
    where only it was kept), and what they show (module docstring): the query ``cell``'s row (a cell of the queries'
    grid), else the class token's row where the queries have prefix tokens (per head from ``rows`` (heads, kq, Nk)
    where ``data`` is the head mean (1, Nq, Nk)), else what each key receives.

    Args:
        data: (heads, Nq, Nk) of one image. size: the keys' grid. qgrid: the queries' grid.
        cell: (row, col) on the queries' grid, or ``None``.
        rows: the kept prefix rows per head (heads, kq, Nk), or ``None``.
    """
    kq, k = prefixes(data, size, qgrid)
    if cell is not None:
        per = data[:, kq + cell[0] * qgrid[1] + cell[1], k:]  # (heads, Hk*Wk)
        label = f"attention from query ({cell[0]}, {cell[1]})"
    elif kq > 0:
        per = rows[:, 0, k:] if rows is not None and data.shape[0] == 1 else data[:, 0, k:]
        label = "class token's attention"
    else:
        per = data[:, :, k:].mean(axis=1, dtype=np.float64)  # (heads, Hk*Wk), the mean over every query
        label = "attention each key receives, query mean"
    mean = data[0, 0, k:][None] if cell is None and kq > 0 and data.shape[0] == 1 else per.mean(axis=0, keepdims=True)
    maps = np.concatenate([per, mean]) if len(per) > 1 else mean
    return maps.reshape(-1, *size).astype(np.float32, copy=False), label
