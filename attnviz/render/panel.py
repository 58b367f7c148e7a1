"""An overlay with its colorbar and title, for the export (papers), drawn without matplotlib: the overlay (OpenCV),
one colorbar strip per colormap and height (cached), tick labels and the title set with PIL's bundled font."""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ._checks import _image, _title
from .colormaps import colormap_lut
from .encode import encode_png
from .overlay import overlay

__all__ = ["figure_png"]

_LONG_SIDE = (600, 2000)  # the overlay is drawn with its longer side in this range (aspect kept)
_BAR_WIDTH = 18
_FONT_SIZE = 16


@functools.lru_cache(maxsize=32)
def _strip(cmap: str, height: int) -> np.ndarray:
    """A vertical colorbar, high values on top: (height, _BAR_WIDTH, 3) uint8 (read-only, cached)."""
    lut = colormap_lut(cmap)
    idx = np.rint(np.linspace(255.0, 0.0, height)).astype(np.intp)
    strip = np.repeat(lut[idx][:, None, :], _BAR_WIDTH, axis=1)
    strip.flags.writeable = False
    return strip


@functools.lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _vrange(vrange: object) -> tuple[float, float]:
    if not isinstance(vrange, (tuple, list)) or len(vrange) != 2:
        raise TypeError(f"vrange must be a pair (vmin, vmax) of numbers, got {vrange!r}")
    if any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in vrange):
        raise TypeError(f"vrange must be a pair (vmin, vmax) of numbers, got {vrange!r}")
    vmin, vmax = float(vrange[0]), float(vrange[1])
    if not (math.isfinite(vmin) and math.isfinite(vmax)) or vmax < vmin:
        raise ValueError(f"vrange must be finite with vmin <= vmax, got {vrange!r}")
    return vmin, vmax


def figure_png(
    image: np.ndarray,
    map01: np.ndarray,
    cmap: str = "turbo",
    alpha: float = 0.5,
    title: str = "",
    vrange: tuple[float, float] = (0.0, 1.0),
    label: str = "",
) -> bytes:
    """The overlay with a colorbar in original units, for export (papers), as PNG bytes.

    Args:
        image: (H, W, 3) uint8 RGB.
        map01: (h, w) normalised map, as for :func:`overlay`.
        cmap: one of ``COLORMAPS``.
        alpha: weight of the map's colour, in [0, 1].
        title: drawn above the overlay.
        vrange: (vmin, vmax) the map was scaled from (see :func:`value_range`); the colorbar's ticks show it.
        label: colorbar label (drawn under the ticks).

    Returns:
        PNG bytes: the overlay (its longer side between 600 and 2000 px, aspect kept, the map drawn at that size),
        a colorbar on its right with 3 ticks in original units (one tick for a constant map), the title on top.
    """
    img = _image(image)
    title, label = _title(title), _title(label, "label")
    vmin, vmax = _vrange(vrange)
    h, w = img.shape[:2]
    scale = min(max(_LONG_SIDE[0] / max(h, w), 1.0), _LONG_SIDE[1] / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size != (w, h):
        img = np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BILINEAR))
    rgb = overlay(img, map01, cmap, alpha)  # validates map01, cmap, alpha
    oh, ow = rgb.shape[:2]
    font = _font(_FONT_SIZE)
    ticks = [(vmax, 0.0), ((vmin + vmax) / 2, 0.5), (vmin, 1.0)] if vmax > vmin else [(vmin, 1.0)]
    labels = [f"{v:.4g}" for v, _ in ticks]
    caption = (label if vmax > vmin else f"{label} (constant map)".strip()) if label or vmax == vmin else ""
    text_w = max(int(font.getlength(t)) for t in labels)
    pad, top = 8, (_FONT_SIZE + 14 if title else 8)
    bottom = _FONT_SIZE + 12 if caption else 8
    bar_x = pad + ow + pad
    width = max(bar_x + _BAR_WIDTH + 6 + text_w + pad, bar_x + int(font.getlength(caption)) + pad)
    canvas = Image.new("RGB", (width, top + oh + bottom), "white")
    canvas.paste(Image.fromarray(rgb), (pad, top))
    canvas.paste(Image.fromarray(_strip(cmap, oh)), (bar_x, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([bar_x - 1, top - 1, bar_x + _BAR_WIDTH, top + oh], outline="black")
    for (_, where), text in zip(ticks, labels, strict=True):
        y = top + round(where * (oh - 1))
        draw.line([bar_x + _BAR_WIDTH, y, bar_x + _BAR_WIDTH + 4, y], fill="black")
        draw.text((bar_x + _BAR_WIDTH + 6, y), text, fill="black", font=font, anchor="lm")
    if caption:
        draw.text((bar_x, top + oh + 6), caption, fill="black", font=font, anchor="la")
    if title:
        draw.text((pad + ow / 2, 6), title, fill="black", font=font, anchor="ma")
    return encode_png(np.asarray(canvas))
