"""Compare two settings side by side: two attention types, two networks or checkpoints, or two images, with one
shared normalisation and their difference map.

    a = attnviz.analyze("cat.jpg", attention="cbam", weights="demo")
    b = attnviz.analyze("cat.jpg", attention="spatial", weights="demo")
    cmp = attnviz.compare(a, b)                     # pairs matched by residual block, else by stage
    cmp.pairs[0].a, cmp.pairs[0].b, cmp.pairs[0].diff, cmp.pairs[0].scores

attnviz compare IMAGE [IMAGE_B] [--attention A [B]] [--model M [M_B]] [--weights W [W_B]] --out DIR
    runs them from the command line (attnviz.cli.compare).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .capture.views import ROLLOUT_KEY, build_views
from .checks.attribution import agreement, resize
from .pipeline.core import Result

__all__ = ["Comparison", "Pair", "compare", "compare_files", "spatial_by_unit"]


@dataclass
class Pair:
    """One unit (a residual block both sides have, or a stage) compared.

    Attributes:
        key: ``"layer2.1"`` (a residual block) or ``"stage 3"`` (the mean of a stage's spatial views).
        a, b: the two spatial views on A's grid, scaled to 0..1 by one shared min-max (the range of both together).
        diff: ``a - b`` in -1..1 (positive: A weights the place more).
        vrange: the shared (vmin, vmax) in the maps' own units.
        scores: ``{"spearman", "top20_iou"}`` of the two.
    """

    key: str
    a: np.ndarray
    b: np.ndarray
    diff: np.ndarray
    vrange: tuple[float, float]
    scores: dict[str, float]


@dataclass
class Comparison:
    """What :func:`compare` returns: the two results, their labels and the compared pairs, in forward order."""

    a: Result
    b: Result
    label_a: str
    label_b: str
    pairs: list[Pair] = field(default_factory=list)
    unit: str = "block"

    def json(self) -> dict[str, Any]:
        return {
            "a": self.label_a,
            "b": self.label_b,
            "unit": self.unit,
            "pairs": [{"key": p.key, "range": list(p.vrange), **p.scores} for p in self.pairs],
        }


def spatial_by_unit(result: Result, unit: str, query: tuple[float, float] | None = None) -> dict[str, np.ndarray]:
    """A result's spatial views, one per residual block (``unit="block"``: the block's first view with a spatial
    map, as :mod:`attnviz.capture.views` draws it) or per stage (``"stage"``: the mean of its blocks' views, each
    resized to
    the stage's largest grid)."""
    by_block: dict[str, np.ndarray] = {}
    stage_of: dict[str, int | None] = {}
    for v in build_views(result, query):
        if v.spatial is not None and v.block not in by_block:
            by_block[v.block] = np.asarray(v.spatial, dtype=np.float32)
            stage_of[v.block] = v.stage
    if unit == "block":
        return by_block
    groups: dict[str, list[np.ndarray]] = {}
    for k, m in by_block.items():
        if k == ROLLOUT_KEY:  # the network's rollout is no stage's block
            continue
        groups.setdefault(f"stage {stage_of[k]}", []).append(m)
    out = {}
    for key, maps in groups.items():
        shape = max((m.shape for m in maps), key=lambda s: s[0] * s[1])
        out[key] = np.mean([resize(m, shape) for m in maps], axis=0).astype(np.float32)
    return out


def compare(
    a: Result, b: Result, *, label_a: str = "A", label_b: str = "B", query: tuple[float, float] | None = None
) -> Comparison:
    """Pair the spatial views of two results and put each pair on one scale.

    Pairs are the residual blocks both results have (two checkpoints of one network, two images); when they share
    none (two attention types at different places, two networks), the stages both have, each as the mean of its
    blocks' views. B's map is resized to A's grid where they differ (two image sizes, two networks).
    """
    unit = "block"
    va, vb = spatial_by_unit(a, unit, query), spatial_by_unit(b, unit, query)
    if not set(va) & set(vb):
        unit = "stage"
        va, vb = spatial_by_unit(a, unit, query), spatial_by_unit(b, unit, query)
    out = Comparison(a, b, label_a, label_b, unit=unit)
    for key, ma in va.items():
        if key not in vb:
            continue
        mb = resize(vb[key], ma.shape)
        lo, hi = float(min(ma.min(), mb.min())), float(max(ma.max(), mb.max()))
        span = max(hi - lo, 1e-8)
        a01 = np.clip((ma - lo) / span, 0, 1).astype(np.float32)
        b01 = np.clip((mb - lo) / span, 0, 1).astype(np.float32)
        out.pairs.append(Pair(key, a01, b01, a01 - b01, (lo, hi), agreement(ma, mb)))
    return out


def compare_files(cmp: Comparison, cmap: str = "turbo", alpha: float = 0.5) -> list[tuple[str, bytes]]:
    """The files of a comparison: per pair ``NN_<key>.png`` (A, B and the difference side by side) and
    ``NN_<key>.{a,b,diff}.npy``; ``compare.json`` (labels, ranges, scores)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    from .render import DIFF_CMAP, diff_overlay, overlay
    from .render.naming import safe_name

    files: list[tuple[str, bytes]] = []
    img_a, img_b = np.asarray(cmp.a.image), np.asarray(cmp.b.image)
    for i, p in enumerate(cmp.pairs):
        stem = f"{i:02d}_{safe_name(p.key)}"
        for what, m in (("a", p.a), ("b", p.b), ("diff", p.diff)):
            buf = io.BytesIO()
            np.save(buf, m)
            files.append((f"{stem}.{what}.npy", buf.getvalue()))
        fig = Figure(figsize=(10.5, 3.6), dpi=110)
        axes = fig.subplots(1, 3)
        axes[0].imshow(overlay(img_a, p.a, cmap, alpha))
        axes[0].set_title(f"{cmp.label_a}", fontsize=8)
        axes[1].imshow(overlay(img_b, p.b, cmap, alpha))
        axes[1].set_title(f"{cmp.label_b}", fontsize=8)
        axes[2].imshow(diff_overlay(img_a, p.diff, alpha=1.0))  # the difference alone, on A's image grid
        s = p.scores
        axes[2].set_title(f"A − B (Spearman {s['spearman']:.2f}, top-20% IoU {s['top20_iou']:.2f})", fontsize=8)
        fig.colorbar(ScalarMappable(Normalize(-1, 1), DIFF_CMAP), ax=axes[2], fraction=0.046)
        for ax in axes:
            ax.axis("off")
        fig.suptitle(f"{p.key}: shared scale {p.vrange[0]:.3g} .. {p.vrange[1]:.3g}", fontsize=9)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        files.append((f"{stem}.png", buf.getvalue()))
    files.append(("compare.json", json.dumps(cmp.json(), indent=2).encode()))
    return files
