"""Partial statistics of attention maps over a dataset: sums and counts only, so shards merge exactly.

A *partial* is a plain dict (it travels through ``torch.save(weights_only)`` files and
``torch.distributed.gather_object``): for every attention site (one :class:`~attnviz.AttentionMap` name) the gate
values' sum, sum of squares, histogram, extremes, counts of near-0.5 / near-1 values and flat maps, the entropy of
normalised (branch, softmax) kinds, and per class the sum and sum of squares of the site's channel profile (the
class-wise excitation of Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018, section 7.2); for every block's
spatial view the sum of its min-max normalised map on a fixed grid, of its peak's position and of its peaks on the
feature map's outer ring (:func:`~attnviz.stats.localisation.border_peaks`, against the ring's share); and the
localisation scores (:mod:`attnviz.stats.localisation`) when masks are given. :func:`merge` adds two partials;
:func:`finalize` turns one into tables.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..capture.kinds import KIND_SPECS
from ..capture.maps import AttentionMap
from .faithful import faithfulness_table
from .localisation import LocalisationScores, border_peaks, localise, ring_share, to_image, views_of

__all__ = ["BINS", "FLAT_TOL", "accumulate", "finalize", "merge", "new_partial"]

BINS = 50  #: histogram bins over [0, 1] (values outside fall in the end bins; min and max are kept)
FLAT_TOL = 0.05  #: a gate value "near 0.5" or "near 1", and a map whose range is below this is flat


def new_partial() -> dict[str, Any]:
    """An empty partial."""
    return {
        "images": 0,  # images that ran through the model
        "problems": [],  # (index, problem): unreadable images, missing or misshapen masks
        "class_images": {},  # class -> images
        "correct": {},  # class -> top-1 hits (when the model's labels name the dataset's classes)
        "scored": 0,  # images with a mask
        "mask_share": 0.0,  # sum of the masks' area shares
        "sites": {},
        "views": {},
        "loc": {"hits": {}, "energy": {}, "count": {}},
        "base": {"hits": {}, "energy": {}, "count": {}},
    }


def merge(a: Any, b: Any, key: str = "") -> Any:
    """``a`` and ``b`` added (sums, counts, histograms; lists joined; ``min``/``max`` kept; ``meta`` from ``a``).

    ``a`` may be changed in place; the result is returned."""
    if key == "meta":
        return a
    if isinstance(a, dict):
        for k, v in b.items():
            a[k] = merge(a[k], v, k) if k in a else _copy(v)
        return a
    if key == "min":
        return min(a, b)
    if key == "max":
        return max(a, b)
    if isinstance(a, list):
        return a + list(b)
    return a + b


def _copy(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, Tensor):
        return v.clone()
    return list(v) if isinstance(v, list) else v


def _profile(m: AttentionMap) -> Tensor | None:
    """(B, P) the site's channel profile: a channel gate, or a branch weight per (path, channel) (the kinds whose
    values weigh channels, :attr:`attnviz.capture.kinds.KindSpec.channels`)."""
    if KIND_SPECS[m.kind].channels:
        return m.data.reshape(m.data.shape[0], -1)
    return None


def _entropy(m: AttentionMap) -> Tensor | None:
    """(B,) mean entropy of the site's normalised distributions, divided by its maximum (log of their length)."""
    axis = KIND_SPECS[m.kind].normalised  # the axis summing to 1 (None: a gate)
    if axis is None:
        return None
    d = m.data.double().clamp(min=0)
    k = d.shape[axis]
    if k < 2:
        return None
    p = d / d.sum(axis, keepdim=True).clamp(min=1e-30)
    h = -(p * p.clamp(min=1e-30).log()).sum(axis) / math.log(k)
    return h.reshape(h.shape[0], -1).mean(1)


def _add_site(partial: dict, m: AttentionMap, labels: Tensor) -> None:
    b = m.data.shape[0]
    v = m.data.reshape(b, -1).double()
    s = partial["sites"].get(m.name)
    if s is None:
        s = partial["sites"][m.name] = {
            "meta": {"kind": m.kind, "stage": m.stage, "block": m.block, "shape": list(m.data.shape[1:])},
            "n": 0,
            "count": 0,
            "sum": 0.0,
            "sumsq": 0.0,
            "hist": torch.zeros(BINS, dtype=torch.float64),
            "min": math.inf,
            "max": -math.inf,
            "near_half": 0,
            "near_one": 0,
            "flat_maps": 0,
            "entropy": 0.0,
            "entropy_n": 0,
            "profiles": {},
        }
    s["n"] += b
    s["count"] += v.numel()
    s["sum"] += float(v.sum())
    s["sumsq"] += float((v * v).sum())
    s["hist"] += torch.histc(v.clamp(0, 1), bins=BINS, min=0, max=1)
    s["min"] = min(s["min"], float(v.min()))
    s["max"] = max(s["max"], float(v.max()))
    s["near_half"] += int(((v - 0.5).abs() <= FLAT_TOL).sum())
    s["near_one"] += int((v >= 1 - FLAT_TOL).sum())
    s["flat_maps"] += int(((v.amax(1) - v.amin(1)) < FLAT_TOL).sum())
    ent = _entropy(m)
    if ent is not None:
        s["entropy"] += float(ent.sum())
        s["entropy_n"] += b
    prof = _profile(m)
    if prof is None:
        return
    prof = prof.double()
    for c in labels.unique().tolist():
        if c < 0:
            continue  # an image without a label has no class profile
        rows = prof[labels == c]
        add = {"sum": rows.sum(0), "sumsq": (rows * rows).sum(0), "n": int(rows.shape[0])}
        s["profiles"][c] = merge(s["profiles"][c], add) if c in s["profiles"] else add


def _add_views(partial: dict, views: dict[str, tuple[int | None, Tensor]], grid: int) -> None:
    for block, (stage, m) in views.items():
        b, h, w = m.shape
        flat = m.reshape(b, -1).double()
        peaked = (flat.amax(1) - flat.amin(1)) > 1e-6  # a flat view has no peak
        peak = flat.argmax(1)
        pos = torch.stack([(peak // w + 0.5) / h, (peak % w + 0.5) / w], 1)[peaked]  # (b', 2) y, x in [0, 1]
        add = {
            "meta": {"stage": stage},
            "n": b,
            "grid": to_image(m, (grid, grid)).double().sum(0),
            "peaks": int(peaked.sum()),
            "peak_sum": pos.sum(0),
            "peak_sumsq": (pos * pos).sum(0),
            "border": float(border_peaks(m).sum()),  # peaks on the outer ring
            "ring": ring_share((h, w)) * b,  # where a spatially shuffled map peaks
        }
        v = partial["views"]
        v[block] = merge(v[block], add) if block in v else add


def accumulate(
    partial: dict,
    maps: list[AttentionMap],
    activations: dict[str, Tensor],
    labels: Tensor,
    *,
    predictions: Tensor | None = None,
    masks: Tensor | None = None,
    has_mask: Tensor | None = None,
    tolerance: int = 0,
    grid: int = 32,
) -> None:
    """Add one batch to ``partial``.

    Args:
        maps, activations: a recorder's maps (batch B) and activations (block path -> (B, h, w)).
        labels: (B,) class index per image, -1 for none.
        predictions: (B,) top-1 class index in the dataset's classes (-1 where the model's label is none of
            them), or ``None`` when the model's labels do not name the dataset's classes.
        masks: (B, H, W) bool object masks at the input's size; rows where ``has_mask`` (B,) is False are ignored.
        tolerance: pointing-game tolerance in input pixels.
        grid: side of the grid the mean spatial maps are kept on.
    """
    b = int(labels.shape[0])
    partial["images"] += b
    for c in labels.tolist():
        partial["class_images"][c] = partial["class_images"].get(c, 0) + 1
    if predictions is not None:
        for c, hit in zip(labels.tolist(), (predictions == labels).tolist(), strict=True):
            partial["correct"][c] = partial["correct"].get(c, 0) + int(hit)
    for m in maps:
        _add_site(partial, m, labels)
    views = views_of(maps, activations)
    _add_views(partial, views, grid)
    if masks is None or has_mask is None or not bool(has_mask.any()):
        return
    rows = has_mask.nonzero()[:, 0]
    scores, base = LocalisationScores(), LocalisationScores()
    localise({k: (s, m[rows]) for k, (s, m) in views.items()}, masks[rows], tolerance, scores, base)
    partial["loc"] = merge(partial["loc"], scores.to_dict())
    partial["base"] = merge(partial["base"], base.to_dict())
    partial["scored"] += int(rows.numel())
    partial["mask_share"] += float(masks[rows].double().mean(dim=(1, 2)).sum())


def _correlation(means: np.ndarray) -> float | None:
    """Mean Pearson correlation over all pairs of rows (class profiles); ``None`` for fewer than two."""
    if means.shape[0] < 2:
        return None
    c = means - means.mean(1, keepdims=True)
    norm = np.sqrt((c * c).sum(1))
    ok = norm > 0
    if ok.sum() < 2:
        return None
    c = c[ok] / norm[ok, None]
    r = c @ c.T
    iu = np.triu_indices(r.shape[0], 1)
    return float(r[iu].mean())


def _between_share(profiles: dict[int, dict]) -> float | None:
    """Share of the profile's variance (summed over channels) between classes: sum of squares between class
    means over the total sum of squares (eta squared); 0 = class-agnostic, 1 = set by the class alone."""
    if len(profiles) < 2:
        return None
    n = np.array([p["n"] for p in profiles.values()], dtype=np.float64)  # (K,)
    s = np.stack([p["sum"].numpy() for p in profiles.values()])  # (K, P)
    ss = np.stack([p["sumsq"].numpy() for p in profiles.values()]).sum(0)  # (P,)
    total_n = n.sum()
    mu = s.sum(0) / total_n
    between = (n[:, None] * (s / n[:, None] - mu) ** 2).sum()
    total = (ss - total_n * mu * mu).sum()
    return float(between / total) if total > 0 else None


def finalize(partial: dict, classes: list[str]) -> dict[str, Any]:
    """Tables (lists of row dicts) and headline numbers from a merged partial.

    Returns:
        ``{"blocks", "profiles", "histograms", "views", "localisation", "classes", "stages", "problems"}`` row
        lists, plus ``"mean_maps"`` (block -> (grid, grid) array) and ``"summary"`` (headline numbers).
    """
    blocks, profiles, hists, stage_rows = [], [], [], {}
    edges = np.linspace(0, 1, BINS + 1)
    for name, s in partial["sites"].items():
        meta, count = s["meta"], s["count"]
        mean = s["sum"] / count
        var = max(0.0, s["sumsq"] / count - mean * mean)
        class_means = {c: (p["sum"] / p["n"]).numpy() for c, p in sorted(s["profiles"].items())}
        corr = _correlation(np.stack(list(class_means.values()))) if class_means else None
        between = _between_share(s["profiles"]) if s["profiles"] else None
        blocks.append(
            {
                "site": name,
                "block": meta["block"],
                "stage": meta["stage"],
                "kind": meta["kind"],
                "images": s["n"],
                "mean": mean,
                "std": math.sqrt(var),
                "min": s["min"],
                "max": s["max"],
                "near_half": s["near_half"] / count,
                "near_one": s["near_one"] / count,
                "flat_maps": s["flat_maps"] / s["n"],
                "entropy": s["entropy"] / s["entropy_n"] if s["entropy_n"] else None,
                "profile_correlation": corr,
                "between_class_share": between,
                "profiled_classes": len(class_means),
            }
        )
        for c, v in class_means.items():
            profiles += [
                {"site": name, "stage": meta["stage"], "class": classes[c], "channel": j, "mean": float(x)}
                for j, x in enumerate(v)
            ]
        if class_means:
            across = np.stack(list(class_means.values())).mean(0)  # each class counts once, as in the paper
            profiles += [
                {"site": name, "stage": meta["stage"], "class": "(mean across classes)", "channel": j, "mean": float(x)}
                for j, x in enumerate(across)
            ]
        hists += [
            {"site": name, "lo": float(edges[j]), "hi": float(edges[j + 1]), "count": int(c)}
            for j, c in enumerate(s["hist"].tolist())
        ]
        if corr is not None and meta["stage"] is not None:
            stage_rows.setdefault(meta["stage"], []).append((corr, between))
    stages = [
        {
            "stage": k,
            "sites": len(v),
            "profile_correlation": float(np.mean([c for c, _ in v])),
            "between_class_share": float(np.mean([b for _, b in v if b is not None])) if v else None,
        }
        for k, v in sorted(stage_rows.items())
    ]
    views, mean_maps = [], {}
    for block, v in partial["views"].items():
        grid = (v["grid"] / v["n"]).numpy()
        g = grid.shape[0]
        q = slice(g // 4, g - g // 4)
        peaks = v["peaks"]
        pm = (v["peak_sum"] / peaks).numpy() if peaks else np.full(2, np.nan)
        ps = np.sqrt(np.maximum(0, (v["peak_sumsq"] / peaks).numpy() - pm * pm)) if peaks else np.full(2, np.nan)
        mean_maps[block] = grid
        views.append(
            {
                "block": block,
                "stage": v["meta"]["stage"],
                "images": v["n"],
                "centre_mass": float(grid[q, q].sum() / grid.sum()) if grid.sum() > 0 else None,
                "centre_area": ((g - 2 * (g // 4)) / g) ** 2,
                "peak_y": float(pm[0]),
                "peak_x": float(pm[1]),
                "peak_spread": float(np.sqrt((ps * ps).mean())),
                "flat_views": 1 - peaks / v["n"],
                "border_peaks": v["border"] / v["n"] if "border" in v else None,
                "border_ring": v["ring"] / v["n"] if "ring" in v else None,
            }
        )
    border: dict[str, dict[str, float]] = {}
    scored = [r for r in views if r["stage"] is not None and r["border_peaks"] is not None]
    for key in sorted({f"stage{r['stage']}" for r in scored}):
        rows = [r for r in scored if f"stage{r['stage']}" == key]
        border[key] = {
            "rate": float(np.mean([r["border_peaks"] for r in rows])),
            "ring": float(np.mean([r["border_ring"] for r in rows])),
        }
    loc = []
    for level, part in (("map", partial["loc"]), ("baseline", partial["base"])):
        for name, n in part["count"].items():
            kind = (
                "baseline"
                if level == "baseline"
                else ("average" if name == "average" else "stage" if name.startswith("stage") else "block")
            )
            loc.append(
                {
                    "name": name,
                    "level": kind,
                    "images": n,
                    "pointing": part["hits"][name] / n,
                    "energy": part["energy"][name] / n,
                }
            )
    faith = faithfulness_table(partial.get("faithfulness", []))
    class_rows = []
    for c, name in enumerate(classes):
        n = partial["class_images"].get(c, 0)
        hit = partial["correct"].get(c)
        class_rows.append({"class": name, "images": n, "accuracy": (hit / n) if hit is not None and n else None})
    seen = sum(partial["class_images"].values())
    correct = sum(partial["correct"].values())
    summary = {
        "images": partial["images"],
        "problems": len(partial["problems"]),
        "classes": len(classes),
        "accuracy": correct / seen if partial["correct"] and seen else None,
        "scored_images": partial["scored"],
        "mask_share": partial["mask_share"] / partial["scored"] if partial["scored"] else None,
        "stage_profile_correlation": {f"stage{r['stage']}": r["profile_correlation"] for r in stages},
        "stage_between_class_share": {f"stage{r['stage']}": r["between_class_share"] for r in stages},
        "border_peaks": border,
        "faithfulness": {
            f"{r['method']} {r['metric']}": {k: r[k] for k in ("images", "mean", "ci_low", "ci_high")}
            for r in faith
            if r["stage"] == "all"
        },
        "localisation": {
            r["name"]: {"pointing": r["pointing"], "energy": r["energy"]}
            for r in loc
            if r["level"] in ("stage", "average", "baseline")
        },
    }
    return {
        "blocks": blocks,
        "profiles": profiles,
        "histograms": hists,
        "views": views,
        "localisation": loc,
        "faithfulness": faith,
        "classes": class_rows,
        "stages": stages,
        "mean_maps": mean_maps,
        "summary": summary,
    }
