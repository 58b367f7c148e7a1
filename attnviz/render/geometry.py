"""Geometry: upsampling maps to the image (half-pixel bilinear), query cells, pairwise queries, tiles, display sizes."""

from __future__ import annotations

import math
import numbers

import numpy as np
from PIL import Image

from ._checks import _array, _finite, _pair
from .encode import _level


def upsample(map2d: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a map bilinearly (half-pixel centres, edges clamped) to an image's size.

    Args:
        map2d: (h, w) real values, finite.
        size: (width, height) of the target, as PIL gives it.

    Returns:
        (height, width) float32.
    """
    m = _array(map2d, "map2d", 2, "(h, w)")
    _finite(m, "map2d")
    width, height = _pair(size, "size", "(width, height)")
    src = np.ascontiguousarray(m, dtype=np.float32)
    if src.shape == (height, width):
        return src.copy()
    if height >= src.shape[0] and width >= src.shape[1]:  # enlarging, as maps are: OpenCV, ~10x PIL, same values
        import cv2

        return cv2.resize(src, (width, height), interpolation=cv2.INTER_LINEAR)
    img = Image.fromarray(src).resize((width, height), Image.Resampling.BILINEAR)  # shrinking: PIL's filter
    return np.asarray(img, dtype=np.float32).copy()


def query_cell(xy: tuple[float, float], image_size: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """The feature-grid cell containing a click on the image.

    Args:
        xy: the click (x, y) in image pixels.
        image_size: (width, height) of the image.
        grid: (h, w) of the feature grid.

    Returns:
        (row, col) = (floor(y / H * h), floor(x / W * w)), clamped to the grid.
    """
    if not isinstance(xy, (tuple, list)) or len(xy) != 2:
        raise TypeError(f"xy must be a pair (x, y) of numbers, got {xy!r}")
    if any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in xy):
        raise TypeError(f"xy must be a pair (x, y) of numbers, got {xy!r}")
    x, y = float(xy[0]), float(xy[1])
    if not (math.isfinite(x) and math.isfinite(y)):
        raise ValueError(f"xy must be finite, got {xy!r}")
    width, height = _pair(image_size, "image_size", "(width, height)")
    h, w = _pair(grid, "grid", "(h, w)")
    row = min(max(math.floor(y / height * h), 0), h - 1)
    col = min(max(math.floor(x / width * w), 0), w - 1)
    return row, col


def pairwise_query(attn: np.ndarray, grid: tuple[int, int], cell: tuple[int, int]) -> np.ndarray:
    """Where one query position attends, per head and averaged over heads.

    Args:
        attn: (heads, N, N) with N = h * w; row i is query i's weights over the N keys.
        grid: (h, w) of the feature grid.
        cell: (row, col) of the query.

    Returns:
        (heads + 1, h, w) float32: each head's map, then the head average last.
    """
    a = _array(attn, "attn", 3, "(heads, N, N)")
    _finite(a, "attn")
    h, w = _pair(grid, "grid", "(h, w)")
    n = h * w
    if a.shape[1:] != (n, n):
        raise ValueError(f"attn must be (heads, N, N) with N = h*w = {n} for grid {(h, w)}, got shape {a.shape}")
    row, col = _pair(cell, "cell", "(row, col)", positive=False)
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"cell {(row, col)} lies outside the grid {(h, w)}")
    per_head = a[:, row * w + col, :].astype(np.float32).reshape(a.shape[0], h, w)
    mean = per_head.mean(axis=0, dtype=np.float64).astype(np.float32)
    return np.concatenate([per_head, mean[None]], axis=0)


def tile_maps(maps: np.ndarray, cols: int = 8, pad: int = 1) -> np.ndarray:
    """Tile S maps in a grid, each normalised on its own (External Attention's memory units).

    Args:
        maps: (S, h, w) finite.
        cols: tiles per row (at most S are used).
        pad: pixels of value 0 between tiles (none around the border).

    Returns:
        2-D float32 of shape (rows*h + (rows-1)*pad, c*w + (c-1)*pad), c = min(cols, S), rows = ceil(S / c),
        tiles in row-major order; slots past S are 0.
    """
    m = _array(maps, "maps", 3, "(S, h, w)")
    _finite(m, "maps")
    for name, v, low in (("cols", cols, 1), ("pad", pad, 0)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
        if v < low:
            raise ValueError(f"{name} must be >= {low}, got {v}")
    s, h, w = m.shape
    c = min(int(cols), s)
    rows = -(-s // c)
    x = m.astype(np.float64)
    lo = x.min(axis=(1, 2), keepdims=True)
    hi = x.max(axis=(1, 2), keepdims=True)
    x = np.clip((x - lo) / np.maximum(hi - lo, 1e-8), 0.0, 1.0).astype(np.float32)
    out = np.zeros((rows * h + (rows - 1) * pad, c * w + (c - 1) * pad), dtype=np.float32)
    for i in range(s):
        r, q = divmod(i, c)
        out[r * (h + pad) : r * (h + pad) + h, q * (w + pad) : q * (w + pad) + w] = x[i]
    return out


def display_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The (width, height) an image of ``size`` is shown at: scaled down, aspect kept, to fit ``max_side``.

    Args:
        size: (width, height) of the image.
        max_side: longest side allowed (>= 1); an image that fits is kept at its size.

    Returns:
        (width, height), each at least 1.
    """
    w, h = _pair(size, "size", "(width, height)")
    scale = _level(max_side, "max_side", 1, 2**31) / max(w, h)
    if scale >= 1.0:
        return w, h
    return max(1, round(w * scale)), max(1, round(h * scale))
