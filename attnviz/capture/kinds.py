"""One table per map kind: what each kind's detail drawing is, for the page and the export alike.

The spatial view of each kind is :func:`attnviz.capture.views.spatial_view`; its detail is drawn here:

================  ==========================================================================================
kind              detail (an RGB array; the page shows it, the zip saves it as ``details/NN_block_kind.png``)
================  ==========================================================================================
channel           bar chart of the gate's largest weights (charts/ in the zip; the page draws it in the browser)
spatial           none (the overlay is the map)
branch            branch weights per channel (K bars per channel)
pairwise          where the query attends, per head and averaged (gray tiles, enlarged)
channel_pairwise  the C x C matrix
memory            every memory unit's map (gray tiles, enlarged)
================  ==========================================================================================
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..render import apply_colormap, branch_chart, channel_chart, matrix_image, pairwise_query, tile_maps
from .views import View

__all__ = ["DETAILS", "detail_image"]


def gray_tiles(tile01: np.ndarray, min_side: int = 384) -> np.ndarray:
    """A 0..1 tiling as uint8 RGB, enlarged by whole pixels (nearest) so small feature grids stay visible."""
    k = max(1, min_side // max(tile01.shape))
    return apply_colormap(tile01, "gray").repeat(k, 0).repeat(k, 1)


def _pairwise(view: View, topk: int | None) -> np.ndarray | None:
    if view.grid is None or view.cell is None:
        return None
    heads = pairwise_query(view.data, view.grid, view.cell)
    return gray_tiles(tile_maps(heads, cols=len(heads)))


#: kind -> its detail drawing (view, top-k channels) -> RGB array, or None where the kind has none.
DETAILS: dict[str, Callable[[View, int | None], np.ndarray | None]] = {
    "channel": lambda v, k: channel_chart(v.data, k, v.title),
    "spatial": lambda v, k: None,
    "branch": lambda v, k: branch_chart(v.data, v.title, topk=k),
    "pairwise": _pairwise,
    "channel_pairwise": lambda v, k: matrix_image(v.data, v.title),
    "memory": lambda v, k: gray_tiles(tile_maps(v.data)),
}


def detail_image(view: View, topk: int | None = 32) -> np.ndarray | None:
    """The detail drawing of ``view`` (see the table above), as (H, W, 3) uint8, or None."""
    return DETAILS[view.kind](view, topk)
