"""Colormaps: matplotlib's tables as 256-entry RGB lookups, applied with OpenCV."""

from __future__ import annotations

import functools

import numpy as np

from ._checks import _array, _finite

COLORMAPS: tuple[str, ...] = ("turbo", "jet", "viridis", "magma", "gray")


@functools.lru_cache(maxsize=16)
def _lut(name: str) -> np.ndarray:
    import matplotlib  # read once per colormap (cached): not needed to import attnviz.render

    cmap = matplotlib.colormaps[name]
    rgba = cmap(np.linspace(0.0, 1.0, 256))
    lut = np.rint(rgba[:, :3] * 255.0).astype(np.uint8)
    lut.flags.writeable = False
    return lut


def _check_cmap(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"cmap must be a str, one of {COLORMAPS}, got {type(name).__name__}")
    if name not in COLORMAPS:
        raise ValueError(f"unknown colormap {name!r}; choose one of {COLORMAPS}")
    return name


def colormap_lut(name: str) -> np.ndarray:
    """The 256-entry RGB lookup table of a colormap.

    Args:
        name: one of ``COLORMAPS``.

    Returns:
        (256, 3) uint8, read-only (cached), entry i = matplotlib's colour at i / 255.
    """
    return _lut(_check_cmap(name))


def _indices(map01: np.ndarray) -> np.ndarray:
    v = np.clip(map01, 0.0, 1.0).astype(np.float32, copy=False)
    return np.rint(v * np.float32(255.0)).astype(np.uint8)


def apply_colormap(map01: np.ndarray, cmap: str = "turbo") -> np.ndarray:
    """Colour a map of values in 0..1.

    Args:
        map01: (H, W) real values; clipped to 0..1, then index = rint(v * 255) into the LUT.
        cmap: one of ``COLORMAPS``.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    lut = colormap_lut(cmap)
    m = _array(map01, "map01", 2, "(H, W)")
    _finite(m, "map01")
    return _lookup(_indices(m), lut)


def _lookup(idx: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """(H, W) uint8 indices -> (H, W, 3) uint8 colours: OpenCV's LUT (about 5x numpy's take; bench/render_cv.py)."""
    import cv2

    return cv2.LUT(cv2.merge([idx, idx, idx]), lut.reshape(256, 1, 3))
