"""The page's downloads, made when their button is clicked: the selected view as a PNG with its colorbar, and
everything (overlays, charts, raw maps, result.json) as a zip, into the export store. Both show what the page shows:
the chosen head of a token or window view (:func:`attnviz.capture.views.head_view`) and the chosen rollout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..capture.views import head_view
from ..export import export_zip
from ..render import figure_png, normalize, value_range
from ..render.naming import safe_name
from .errors import user_error
from .files import ExportStore
from .state import AppState, Display

__all__ = ["png_file", "zip_file"]


def png_file(store: ExportStore, state: AppState, display: Display) -> Path:
    """The selected view (``display.block``, default the last spatial one) drawn with its colorbar, as a PNG: the
    state's head where the view has it (the large view's drawing), else the view as the gallery shows it."""
    result = state.result
    shown, normed, ranges = state.spatial(display.norm)
    match = [i for i, v in enumerate(shown) if v.key == display.block] or ([len(shown) - 1] if shown else [])
    if not match:
        raise user_error("This network's maps have no spatial view to save as PNG; download the zip instead.")
    i = match[0]
    v, m01, vr = shown[i], normed[i], ranges[i]
    one = head_view(v, state.head)
    suffix = ""
    if one is not v and one.spatial is not None:  # one head: normalised on its own, as the large view draws it
        m01 = normalize([one.spatial], display.norm, [one.stage])[0]
        vr = value_range([one.spatial], display.norm, [one.stage])[0]
        v, suffix = one, f"_head{state.head}"
    path = store.new_dir() / f"{safe_name(v.block)}_{v.kind}{suffix}.png"
    image = np.asarray(result.image)
    path.write_bytes(figure_png(image, m01, display.cmap, display.alpha, v.title, vr, v.spatial_label))
    return path


def zip_file(
    store: ExportStore, state: AppState, display: Display, progress: Callable[..., object] | None = None
) -> Path:
    """The zip of everything under ``display``'s settings, the state's query, head and rollout
    (:func:`attnviz.export.export_zip`); asking again with the same result and settings returns the zip already
    made."""
    result = state.result
    rollout = state.rollout.settings()
    settings = {
        "cmap": display.cmap,
        "alpha": display.alpha,
        "norm": display.norm,
        "topk": display.top,
        "query": state.query,
        "head": state.head,
        "rollout": rollout,
        "view": state.view,
    }
    if progress is not None:
        progress(0.05, desc="building the zip")
    name = f"attnviz_{safe_name(result.model['attention'] or 'plain')}.zip"
    key = (display.cmap, display.alpha, display.norm, display.top, state.query, state.head, repr(rollout), state.view)
    path = store.zip_for(result, key, lambda folder: export_zip(result, settings, folder / name))
    if progress is not None:
        progress(1.0, desc="zip ready")
    return path
