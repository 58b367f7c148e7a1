"""Overlays: a coloured map alpha-blended over the RGB image (OpenCV: resize, lookup, blend), and a difference map
(-1..1) in a diverging colormap over the image."""

from __future__ import annotations

import numpy as np

from ._checks import _alpha, _array, _finite, _image
from .colormaps import _indices, _lookup, _lut, colormap_lut
from .geometry import upsample

#: The diverging colormap of difference maps: red where the first map weights a place more, blue the second.
DIFF_CMAP = "RdBu_r"


def _blend(img: np.ndarray, colour: np.ndarray, a: float) -> np.ndarray:
    """rint((1 - a) * img + a * colour) as uint8 (OpenCV: rounded to nearest, ~10x the numpy blend)."""
    if a == 1.0:
        return colour
    import cv2

    return cv2.addWeighted(img, 1.0 - a, colour, a, 0.0)


def overlay(image: np.ndarray, map01: np.ndarray, cmap: str = "turbo", alpha: float = 0.5) -> np.ndarray:
    """Alpha-blend a coloured map over an RGB image.

    Args:
        image: (H, W, 3) uint8 RGB.
        map01: (h, w) values in 0..1 (clipped), upsampled bilinearly to (H, W) first.
        cmap: one of ``COLORMAPS``.
        alpha: weight of the map's colour, in [0, 1].

    Returns:
        (H, W, 3) uint8 = rint((1 - alpha) * image + alpha * colour), computed in float32; alpha 0 gives
        the image exactly, alpha 1 the coloured map exactly.
    """
    img = _image(image)
    lut = colormap_lut(cmap)
    a = _alpha(alpha)
    m = _array(map01, "map01", 2, "(h, w)")
    _finite(m, "map01")
    if a == 0.0:
        return img.copy()
    height, width = img.shape[:2]
    return _blend(img, _lookup(_indices(upsample(m, (width, height))), lut), a)


def diff_overlay(image: np.ndarray, diff: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Alpha-blend a difference map in the diverging colormap :data:`DIFF_CMAP` over an RGB image.

    Args:
        image: (H, W, 3) uint8 RGB.
        diff: (h, w) differences in -1..1 (clipped; e.g. ``a - b`` of two maps on one 0..1 scale), upsampled
            bilinearly to (H, W) first. -1 is blue, 0 white, +1 red.
        alpha: weight of the colour, in [0, 1].

    Returns:
        (H, W, 3) uint8 = rint((1 - alpha) * image + alpha * colour), colour = the colormap's entry
        rint((d + 1) / 2 * 255); alpha 0 gives the image exactly, alpha 1 the coloured difference exactly.

    Raises:
        TypeError, ValueError: as :func:`overlay`, for ``image``, ``diff`` (2-D, finite) and ``alpha``.
    """
    img = _image(image)
    a = _alpha(alpha)
    d = _array(diff, "diff", 2, "(h, w)")
    _finite(d, "diff")
    if a == 0.0:
        return img.copy()
    height, width = img.shape[:2]
    d01 = (upsample(d, (width, height)) + np.float32(1.0)) * np.float32(0.5)
    return _blend(img, _lookup(_indices(d01), _lut(DIFF_CMAP)), a)
