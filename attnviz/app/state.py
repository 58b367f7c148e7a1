"""What the page keeps for a session (:class:`AppState`) and the display settings of a drawing (:class:`Display`).

Both are immutable: an event that changes the state returns a new one (``dataclasses.replace``). The states made
from one result share a cache of what is derived from it, keyed by everything it depends on, so a display or head
change does not build the views again (a rollout over a DINOv2's 1374 tokens takes seconds).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from ..capture.views import View, build_views, rollout_data, spatial_views
from ..comparison import Comparison
from ..pipeline.core import Result
from .choices import AXES
from .errors import user_error

__all__ = ["AppState", "Display", "Rollout", "kept"]

T = TypeVar("T")
#: the latest views kept per result (each query or rollout setting gives its own; older ones are let go)
_VIEW_SETS = 2
#: the latest rollout matrices kept per result (one per head fusion and discard ratio; (1, N, N) float32 each)
_ROLLED = 2
_CACHE_LOCK = threading.Lock()


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


@dataclass(frozen=True)
class Rollout:
    """The page's attention rollout (Abnar & Zuidema, ACL 2020; :func:`attnviz.capture.views.rollout_view`).

    Attributes:
        on: show the network's rollout as one more view.
        fusion: how each layer's heads are fused (:data:`attnviz.capture.rollout.FUSIONS`).
        discard_ratio: the fraction (0 <= r < 1) of each fused matrix's lowest weights dropped.
    """

    on: bool = True
    fusion: str = "mean"
    discard_ratio: float = 0.0

    def settings(self) -> dict[str, Any] | None:
        """As the export records it (``None``: off)."""
        return {"fusion": self.fusion, "discard_ratio": self.discard_ratio} if self.on else None


@dataclass(frozen=True, eq=False)
class AppState:
    """A session's kept analysis.

    Attributes:
        result: the shown :class:`attnviz.pipeline.core.Result` (its checks, once run, are kept on it).
        query: (x, y) fractions of the image: the query of pairwise and token maps (``None``: each kind's default,
            the centre; a token map's class token).
        head: the head a token or window view shows when it is selected, and that its exports show (``None``: the
            head mean).
        rollout: the rollout view's settings.
        view: a channel gate's named spatial view (``"gate-weighted"``; ``None``: the gate effect, each kind's
            default; :data:`attnviz.capture.kinds.VIEW_NAMES`).
        categories: the network's class names, kept when the checks ran (they name the classes followed).
        compare: the last comparison made with this result as its A side.

    A state made with ``dataclasses.replace`` shares its cache (``_cache``); one with a new result is a new
    ``AppState`` (its own cache).
    """

    result: Result
    query: tuple[float, float] | None = None
    head: int | None = None
    rollout: Rollout = Rollout()
    view: str | None = None
    categories: tuple[str, ...] = ()
    compare: Comparison | None = None
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def cached(self, key: Hashable, make: Callable[[], T]) -> T:
        """``make()``, made once per result and ``key`` (``key`` names everything but the result it depends on)."""
        with _CACHE_LOCK:
            if key in self._cache:
                return self._cache[key]
        value = make()
        with _CACHE_LOCK:
            return self._cache.setdefault(key, value)

    @property
    def views(self) -> list[View]:
        """The result's views for this state's query and rollout (built once per result, query and rollout; the
        latest few sets are kept)."""
        r = self.rollout
        key = ("views", self.query, r, self.view)
        with _CACHE_LOCK:
            if key not in self._cache:
                sets = [k for k in self._cache if isinstance(k, tuple) and k[0] == "views"]
                for old in sets[: max(0, len(sets) - _VIEW_SETS + 1)]:  # the oldest, and what was drawn from them
                    for k in [k for k in self._cache if isinstance(k, tuple) and k[1:3] == old[1:3]]:
                        del self._cache[k]
        rolled = self.rolled if r.on else None
        return self.cached(
            key,
            lambda: build_views(
                self.result,
                self.query,
                rollout=r.on,
                fusion=r.fusion,
                discard_ratio=r.discard_ratio,
                view=self.view,
                rolled=rolled,
            ),
        )

    @property
    def rolled(self) -> np.ndarray | None:
        """The rollout matrix (1, N, N) of this result's maps under this state's head fusion and discard ratio
        (:func:`attnviz.capture.views.rollout_data`): made once per result and settings, so a click (another query)
        or a head change draws from it without multiplying every block again. A state with other maps (the forward
        that keeps every head for max/min fusion) is a new result with its own cache."""
        r = self.rollout
        key = ("rolled", r.fusion, r.discard_ratio)
        with _CACHE_LOCK:
            if key not in self._cache:
                sets = [k for k in self._cache if isinstance(k, tuple) and k[0] == "rolled"]
                for old in sets[: max(0, len(sets) - _ROLLED + 1)]:  # the oldest
                    del self._cache[old]
        return self.cached(key, lambda: rollout_data(self.result.maps, fusion=r.fusion, discard_ratio=r.discard_ratio))

    def spatial(self, norm: str) -> tuple[list[View], list[np.ndarray], list[tuple[float, float]]]:
        """:func:`attnviz.capture.views.spatial_views` of :attr:`views` under ``norm`` (made once per mode)."""
        key = ("spatial", self.query, self.rollout, norm, self.view)
        return self.cached(key, lambda: spatial_views(self.views, norm))


def kept(state: AppState | None, message: str) -> AppState:
    """The session's state, or a user error saying ``message`` when nothing has been analysed yet."""
    if state is None:
        raise user_error(message)
    return state
