"""Normalisation modes: one named setting decides how maps are scaled to 0..1 (no hidden renormalisation)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Sequence

import numpy as np

from ._checks import _array, _finite

NORM_MODES: dict[str, str] = {
    "map": "per map: (x - min) / max(max - min, eps), each map on its own",
    "stage": "min-max shared by the maps with the same group key (e.g. the same ResNet stage)",
    "network": "min-max shared by all the maps given",
    "absolute": "values as they are, clipped to 0..1 (for sigmoid gates)",
}

#: A gate is "flat" when every weight lies within this distance of 0.5.


def _maps(maps: object) -> list[np.ndarray]:
    if isinstance(maps, np.ndarray) or not isinstance(maps, Sequence) or isinstance(maps, (str, bytes)):
        raise TypeError(
            f"maps must be a sequence (e.g. a list) of numpy arrays, got {type(maps).__name__}; "
            "wrap a single map as [map]"
        )
    out = []
    for i, m in enumerate(maps):
        a = _array(m, f"maps[{i}]")
        _finite(a, f"maps[{i}]")
        out.append(a)
    return out


def _ranges(maps: list[np.ndarray], mode: object, groups: Sequence[Hashable] | None) -> list[tuple[float, float]]:
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, one of {tuple(NORM_MODES)}, got {type(mode).__name__}")
    if mode not in NORM_MODES:
        raise ValueError(f"unknown normalisation mode {mode!r}; choose one of {tuple(NORM_MODES)}")
    if groups is not None:
        if isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence):
            raise TypeError(f"groups must be a sequence of hashable keys, one per map, got {type(groups).__name__}")
        if len(groups) != len(maps):
            raise ValueError(f"groups must have one key per map: got {len(groups)} keys for {len(maps)} maps")
    if mode == "absolute":
        return [(0.0, 1.0)] * len(maps)
    own = [(float(m.min()), float(m.max())) for m in maps]
    if mode == "map":
        return own
    if mode == "network":
        if not own:
            return []
        lo, hi = min(r[0] for r in own), max(r[1] for r in own)
        return [(lo, hi)] * len(maps)
    # stage
    if groups is None:
        raise ValueError("mode 'stage' needs groups: one key per map (e.g. the ResNet stage of each map)")
    shared: dict[Hashable, tuple[float, float]] = {}
    for i, (key, (lo, hi)) in enumerate(zip(groups, own, strict=True)):
        try:
            prev = shared.get(key)
        except TypeError:
            raise TypeError(f"groups[{i}] must be hashable, got {type(key).__name__}") from None
        shared[key] = (lo, hi) if prev is None else (min(prev[0], lo), max(prev[1], hi))
    return [shared[key] for key in groups]


def value_range(
    maps: Sequence[np.ndarray], mode: str, groups: Sequence[Hashable] | None = None
) -> list[tuple[float, float]]:
    """The (vmin, vmax) each map is scaled from by :func:`normalize`, for colorbars.

    Args:
        maps: arrays of any shape, finite.
        mode: a key of ``NORM_MODES``.
        groups: one hashable key per map; required by ``"stage"``.

    Returns:
        One (vmin, vmax) per map; ``(0.0, 1.0)`` for ``"absolute"``; vmin == vmax for a constant map.
    """
    return _ranges(_maps(maps), mode, groups)


def normalize(
    maps: Sequence[np.ndarray],
    mode: str = "map",
    groups: Sequence[Hashable] | None = None,
    eps: float = 1e-8,
) -> list[np.ndarray]:
    """Scale maps to 0..1 by a named mode (see ``NORM_MODES``).

    Args:
        maps: arrays of any shape, finite (NaN/inf raise ValueError).
        mode: ``"map"``, ``"stage"``, ``"network"`` or ``"absolute"``.
        groups: one hashable key per map (e.g. the ResNet stage); required by ``"stage"``.
        eps: smallest range divided by, so a constant map becomes all zeros.

    Returns:
        float32 arrays in [0, 1], the shapes of the inputs: (x - vmin) / max(vmax - vmin, eps), or
        clip(x, 0, 1) for ``"absolute"``.
    """
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    arrays = _maps(maps)
    ranges = _ranges(arrays, mode, groups)
    out = []
    for m, (lo, hi) in zip(arrays, ranges, strict=True):
        x = m.astype(np.float64)
        if mode != "absolute":
            x = (x - lo) / max(hi - lo, float(eps))
        out.append(np.clip(x, 0.0, 1.0).astype(np.float32))
    return out
