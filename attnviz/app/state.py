"""What the page keeps for a session (:class:`AppState`) and the display settings of a drawing (:class:`Display`).

Both are immutable: an event that changes the state returns a new one (``dataclasses.replace``). The state caches
the views of its result, so a display change does not build them again.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from ..capture.views import View, build_views, spatial_views
from ..comparison import Comparison
from ..pipeline.core import Result
from .choices import AXES
from .errors import user_error

__all__ = ["AppState", "Display", "kept"]

T = TypeVar("T")


@dataclass(frozen=True)
class Display:
    """How the maps are drawn: the page's display settings.

    Attributes:
        cmap, alpha, norm: colormap, overlay alpha, normalisation mode (:data:`attnviz.render.NORM_MODES`).
        topk: channels in charts, as the page sends it ("16", "32", "64", "all").
        block: the selected view's key (a tap's module path), or ``None`` for the default.
        axis: the gate chart's y axis (:data:`attnviz.app.choices.AXES`).
    """

    cmap: str = "turbo"
    alpha: float = 0.5
    norm: str = "map"
    topk: str | int | None = "32"
    block: str | None = None
    axis: str = AXES[0]

    @property
    def top(self) -> int | None:
        """``topk`` as a number of channels (``None``: all)."""
        return None if self.topk in (None, "all") else int(self.topk)


@dataclass(frozen=True, eq=False)
class AppState:
    """A session's kept analysis.

    Attributes:
        result: the shown :class:`attnviz.pipeline.core.Result` (its checks, once run, are kept on it).
        query: (x, y) fractions of the image: the query of pairwise and token maps (``None``: each kind's default,
            the centre; a token map's class token).
        head: the head a token view shows when it is selected (``None``: the head mean).
        categories: the network's class names, kept when the checks ran (they name the classes followed).
        compare: the last comparison made with this result as its A side.
    """

    result: Result
    query: tuple[float, float] | None = None
    head: int | None = None
    categories: tuple[str, ...] = ()
    compare: Comparison | None = None
    _cache: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def cached(self, key: Hashable, make: Callable[[], T]) -> T:
        """``make()``, made once per state and ``key`` (a state is never changed: its derived values stay valid)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def views(self) -> list[View]:
        """The result's views for this state's query (built once per state)."""
        return self.cached("views", lambda: build_views(self.result, self.query))

    def spatial(self, norm: str) -> tuple[list[View], list[np.ndarray], list[tuple[float, float]]]:
        """:func:`attnviz.capture.views.spatial_views` of :attr:`views` under ``norm`` (made once per mode)."""
        return self.cached(("spatial", norm), lambda: spatial_views(self.views, norm))


def kept(state: AppState | None, message: str) -> AppState:
    """The session's state, or a user error saying ``message`` when nothing has been analysed yet."""
    if state is None:
        raise user_error(message)
    return state
