"""Render captured attention weights: normalisation, colormaps, upsampling, overlays, charts and PNG bytes.

Every function here is pure: it validates its inputs, never mutates them or any global state, performs no
I/O and returns new arrays, tables or PNG bytes. Images are RGB ``uint8`` (H, W, 3). Every transform is a
named setting (normalisation mode, colormap, alpha, bilinear upsampling); there is no hidden gamma and no
silent renormalisation. Charts use ``matplotlib.figure.Figure`` with the Agg canvas directly (never
``pyplot``), so they can be drawn from several threads at once.
"""

from ._checks import _topk  # noqa: F401  (kept importable)
from .colormaps import COLORMAPS, _lookup, apply_colormap, colormap_lut  # noqa: F401  (_lookup: bench/render_cv.py)
from .encode import encode_jpeg, encode_png, encode_png_fast
from .gates import FLAT_TOLERANCE, channel_stats, channel_table  # noqa: F401
from .geometry import display_size, pairwise_query, query_cell, tile_maps, upsample
from .normalize import NORM_MODES, normalize, value_range
from .overlay import DIFF_CMAP, diff_overlay, overlay
from .panel import figure_png

#: Drawn with matplotlib, imported on first use (a plain overlay never loads it).
_FIGURES = (
    "branch_chart",
    "branch_chart_png",
    "channel_chart",
    "channel_chart_png",
    "matrix_image",
    "matrix_png",
    "_branch_order",
)


def __getattr__(name: str) -> object:
    if name in _FIGURES:
        from . import figures

        return getattr(figures, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "COLORMAPS",
    "DIFF_CMAP",
    "NORM_MODES",
    "apply_colormap",
    "branch_chart",
    "branch_chart_png",
    "channel_chart",
    "channel_chart_png",
    "channel_stats",
    "channel_table",
    "colormap_lut",
    "diff_overlay",
    "display_size",
    "encode_jpeg",
    "encode_png",
    "encode_png_fast",
    "figure_png",
    "matrix_image",
    "matrix_png",
    "normalize",
    "overlay",
    "pairwise_query",
    "query_cell",
    "tile_maps",
    "upsample",
    "value_range",
]
