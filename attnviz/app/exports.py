"""The page's downloads, made when their button is clicked: the selected view as a PNG with its colorbar, and
everything (overlays, charts, raw maps, result.json) as a zip, into the export store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..export import export_zip
from ..render import figure_png
from ..render.naming import safe_name
from .errors import user_error
from .files import ExportStore
from .state import AppState, Display

__all__ = ["png_file", "zip_file"]


def png_file(store: ExportStore, state: AppState, display: Display) -> Path:
    """The selected view (``display.block``, default the last spatial one) drawn with its colorbar, as a PNG."""
    result = state.result
    shown, normed, ranges = state.spatial(display.norm)
    match = [i for i, v in enumerate(shown) if v.key == display.block] or ([len(shown) - 1] if shown else [])
    if not match:
        raise user_error("This network's maps have no spatial view to save as PNG; download the zip instead.")
    i = match[0]
    v = shown[i]
    path = store.new_dir() / f"{safe_name(v.block)}_{v.kind}.png"
    image = np.asarray(result.image)
    path.write_bytes(figure_png(image, normed[i], display.cmap, display.alpha, v.title, ranges[i], v.spatial_label))
    return path


def zip_file(
    store: ExportStore, state: AppState, display: Display, progress: Callable[..., object] | None = None
) -> Path:
    """The zip of everything under ``display``'s settings (:func:`attnviz.export.export_zip`); asking again with the
    same result and settings returns the zip already made."""
    result = state.result
    settings = {
        "cmap": display.cmap,
        "alpha": display.alpha,
        "norm": display.norm,
        "topk": display.top,
        "query": state.query,
    }
    if progress is not None:
        progress(0.05, desc="building the zip")
    name = f"attnviz_{safe_name(result.model['attention'] or 'plain')}.zip"
    key = (display.cmap, display.alpha, display.norm, display.top, state.query)
    path = store.zip_for(result, key, lambda folder: export_zip(result, settings, folder / name))
    if progress is not None:
        progress(1.0, desc="zip ready")
    return path
