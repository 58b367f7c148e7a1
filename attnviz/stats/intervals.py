"""Percentile bootstrap intervals (Efron & Tibshirani 1993, ch. 13): of a mean over independent units, and of a
mean over clusters (the unit resampled is what was drawn independently: a scene, an image, a photo)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["BOOTSTRAP", "bootstrap_mean"]

#: bootstrap resamples per interval
BOOTSTRAP = 2000


def bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    n: int = BOOTSTRAP,
    seed: int = 0,
    weights: Sequence[float] | np.ndarray | None = None,
) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the (``weights``-weighted) mean of ``values``, one value per
    independent unit.

    For a rate measured on clustered items (a photo pasted at 40 places: the placements share the photo, so they
    are not independent), pass one value per cluster (the photo's rate) and its item count as the weight; the
    interval then reflects how many clusters there are, not how many items. Fewer than two values: ``(nan, nan)``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()  # (units,)
    if v.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, v.size, (n, v.size))  # (n, units) resampled unit indices
    if weights is None:
        means = v[pick].mean(1)  # (n,)
    else:
        w = np.asarray(weights, dtype=np.float64).ravel()  # (units,)
        means = (v[pick] * w[pick]).sum(1) / w[pick].sum(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
