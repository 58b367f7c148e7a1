"""Channel gates: the sorted table the page charts, and whether a gate is flat (undecided)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._checks import _gate, _topk

FLAT_TOLERANCE = 0.05
_FLAT_SLACK = 1e-6  # float32 rounding: 0.55 stored as float32 is 0.55000001


if TYPE_CHECKING:
    import pandas as pd


def channel_table(gate: np.ndarray, topk: int | None = 32) -> pd.DataFrame:
    """The channels of a gate sorted by weight.

    Args:
        gate: (C,) one weight per channel, finite.
        topk: rows to keep (the largest weights), or None for all C.

    Returns:
        DataFrame with columns ``channel`` (str label, zero padded: ``"c0042"``), ``index`` (int) and
        ``weight`` (float), by weight descending (ties by index), index reset to 0..k-1.
    """
    g = _gate(gate)
    k = _topk(topk)
    order = np.argsort(-g, kind="stable")
    if k is not None:
        order = order[:k]
    digits = max(4, len(str(g.size - 1)))
    import pandas as pd  # only the page's chart needs it

    return pd.DataFrame(
        {
            "channel": [f"c{i:0{digits}d}" for i in order],
            "index": order.astype(np.int64),
            "weight": g[order],
        }
    )


def channel_stats(gate: np.ndarray) -> dict:
    """Summary of a channel gate, and whether it is flat (undecided).

    Args:
        gate: (C,) one weight per channel, finite.

    Returns:
        dict with ``channels`` (C), ``mean``, ``min``, ``max``, ``std`` (floats), ``flat`` (True when every
        weight lies within 0.05 of 0.5) and ``note`` (a sentence saying so).
    """
    g = _gate(gate)
    stats = {
        "channels": int(g.size),
        "mean": float(g.mean()),
        "min": float(g.min()),
        "max": float(g.max()),
        "std": float(g.std()),
    }
    flat = bool(np.all(np.abs(g - 0.5) <= FLAT_TOLERANCE + _FLAT_SLACK))
    if flat:
        note = (
            f"flat gate: every weight is within {FLAT_TOLERANCE} of 0.5 — this block does not discriminate "
            "channels (untrained or undecided)"
        )
    else:
        note = (
            f"weights span {stats['min']:.3f} to {stats['max']:.3f} over {g.size} channels "
            f"(mean {stats['mean']:.3f}, std {stats['std']:.3f})"
        )
    stats["flat"] = flat
    stats["note"] = note
    return stats
