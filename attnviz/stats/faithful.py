"""Faithfulness over a dataset (``attnviz stats --faithfulness N``): per image, each block's deletion/insertion AUC
and ROAD MoRF/LeRF means for its attention view, Grad-CAM at the block, a centre prior and a random map (computed by
:func:`attnviz.checks.block_faithfulness`, handed in by the command line: stats does not import the checks), kept as
rows so that shards merge by joining lists; finalised per stage with a percentile bootstrap interval over images
(each image counts once: the mean over the stage's blocks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch import Tensor, nn

from .intervals import bootstrap_mean

__all__ = ["Scorer", "add_rows", "faithfulness_table"]

#: (model, x (1, 3, H, W)) -> {block: {"stage": int | None, "scores": {method: {metric: value}}}}
Scorer = Callable[[nn.Module, Tensor], dict[str, dict[str, Any]]]
METRICS = ("deletion", "insertion", "road_morf", "road_lerf")


def add_rows(partial: dict, index: int, scores: dict[str, dict[str, Any]]) -> None:
    """Add one image's scores to ``partial["faithfulness"]``: rows (image, block, stage, method, metric, value)."""
    rows = partial.setdefault("faithfulness", [])
    for block, entry in scores.items():
        for method, values in entry["scores"].items():
            for metric in METRICS:
                if metric in values:
                    rows.append((int(index), block, entry["stage"], method, metric, float(values[metric])))


def faithfulness_table(rows: list[tuple]) -> list[dict[str, Any]]:
    """One row per (stage, method, metric), stage ``"all"`` for every block: images, mean, ci_low, ci_high."""
    if not rows:
        return []
    per: dict[tuple, dict[int, list[float]]] = {}
    for image, _, stage, method, metric, value in rows:
        for s in ("all", stage):
            if s is not None:
                per.setdefault((str(s), method, metric), {}).setdefault(image, []).append(value)
    out = []
    for (stage, method, metric), by_image in sorted(per.items()):
        v = np.array([np.mean(x) for x in by_image.values()])
        lo, hi = bootstrap_mean(v)
        out.append(
            {
                "stage": stage,
                "method": method,
                "metric": metric,
                "images": int(v.size),
                "mean": float(v.mean()),
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    return out
