"""A real-photo pointing test that separates maps (issue 21): small photos, off-centre, against three baselines.

The real-photo scenes of ``attnviz eval`` paste each photo at 45-85 % of the scene's side; the photo covers about
37 % of the scene and a centred Gaussian already points into it in 97.5 % of scenes, so no map can do visibly
better. Here each photo is pasted at 20-40 % of the side (:data:`attnviz.data.photos.SMALL_PHOTO_SCALE`) at a seeded
position uniform over the places that keep it fully inside (so mostly off the centre), and the pointing game
(Zhang et al., ECCV 2016; :func:`attnviz.stats.localisation.score_maps`, the code ``attnviz eval`` and ``attnviz
stats`` use) is scored per attention type and per stage (the mean of the stage's block views, as in ``eval``) for:

* the attention **view** each block shows by default (:func:`attnviz.stats.localisation.block_maps`);
* the **centre prior**: a centred Gaussian, sigma 0.25 of the side (one map for every stage);
* the **plain** network's activation map: the channel mean of the same stage's output of the plain backbone
  (``evaluate_model(..., baselines=True)``'s ``activation stageK``);
* a **random** map: i.i.d. uniform values on the stage's feature grid, seeded per scene
  (:func:`attnviz.checks.faithfulness.random_map`, the faithfulness checks' chance baseline), upsampled the same way.

Every rate comes with a 95 % interval. The placements of one photo share the photo, so they are not independent
scenes: :func:`photo_pointing` scores each photo's placements as one cluster and bootstraps over the photos
(:func:`attnviz.stats.intervals.bootstrap_mean`); :func:`pointing_test` on independent scenes gives Wilson's
interval (:func:`attnviz.stats.localisation.wilson`). All maps are scored on the same scenes, so the rows compare
scene for scene.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..checks.faithfulness import random_map
from ..data.photos import SMALL_PHOTO_SCALE, PhotoDataset
from ..stats.intervals import bootstrap_mean
from ..stats.localisation import LocalisationScores, aggregate, score_maps, wilson
from .evaluate import evaluate_model

__all__ = ["BASELINES", "photo_pointing", "pointing_markdown", "pointing_test"]

#: baseline rows of :func:`pointing_test`, in table order
BASELINES = ("centre prior", "plain activation", "random")


def _cell(rates: list[float], sizes: list[int], clustered: bool) -> dict[str, float | list[float]]:
    """One table cell from the rates of each part (``sizes`` items each): the pooled rate and its 95 % interval,
    a bootstrap over the parts when they are clusters, else Wilson's over the items (one part)."""
    n = sum(sizes)
    rate = sum(r * k for r, k in zip(rates, sizes, strict=True)) / n
    lo, hi = bootstrap_mean(rates, weights=sizes) if clustered else wilson(rate, n)
    return {"pointing": round(float(rate), 4), "ci": [round(lo, 4), round(hi, 4)]}


@torch.inference_mode()
def _stage_grids(plain: nn.Module, dataset: Dataset, mean: list[float], std: list[float]) -> dict[int, tuple[int, int]]:
    """stage k -> (h, w) of ``plain.layerK``'s output on the dataset's first scene."""
    grids: dict[int, tuple[int, int]] = {}
    hooks = []
    for k in range(1, 5):
        layer = getattr(plain, f"layer{k}", None)
        if layer is not None:
            hooks.append(
                layer.register_forward_hook(lambda m, a, out, k=k: grids.__setitem__(k, tuple(out.shape[-2:])))
            )
    try:
        x = dataset[0][0][None]  # (1, 3, H, W) in [0, 1]
        m_, s_ = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        plain.eval()(((x - m_) / s_).to(next(plain.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return grids


def _random_scores(
    dataset: Dataset,
    grids: dict[int, tuple[int, int]],
    tolerance: float,
    seed: int,
    batch_size: int,
    indices: Sequence[int] | None = None,
) -> dict[str, dict[str, float]]:
    """Pointing of seeded random maps on each stage's grid (and their stage average), scene ``i`` seeded by
    ``seed + indices[i]`` (default ``seed + i``): the same maps whatever the batch size, and the same for an item
    whether it is scored alone, in a subset or in the whole dataset."""
    scores = LocalisationScores()
    start = 0
    for _, _, mask in DataLoader(dataset, batch_size=batch_size):
        size = (int(mask.shape[1]), int(mask.shape[2]))
        tol = round(tolerance * min(size))
        blocks = {}
        ids = [start + i if indices is None else indices[start + i] for i in range(mask.shape[0])]
        for k, grid in grids.items():
            maps = np.stack([random_map(grid, seed + j) for j in ids])  # (B, h, w)
            blocks[f"random{k}"] = (k, torch.from_numpy(maps))
        for name, img in aggregate(blocks, size).items():
            if name.startswith("stage") or name == "average":
                scores.add(name, *score_maps(img, mask, tol))
        start += int(mask.shape[0])
    return scores.table()


def _part(
    models: dict[str, nn.Module],
    plain: nn.Module,
    dataset: Dataset,
    indices: list[int],
    grids: dict[int, tuple[int, int]],
    seed: int,
    **kw: Any,
) -> dict:
    """Every row's pointing rate per column, and every model's top-1, on the items ``indices`` of ``dataset``
    (``kw``: :func:`evaluate_model`'s settings)."""
    part = Subset(dataset, indices)
    base = evaluate_model(plain, part, baselines=True, **kw)
    act = {k[len("activation ") :]: v for k, v in base["baselines"].items() if k.startswith("activation ")}
    columns = list(act)  # stage1..stageK, average: the plain network's stages
    rows: dict[str, dict[str, float]] = {}
    accuracy = {"plain": base["accuracy"]}
    for name, model in models.items():
        torch.manual_seed(0)
        r = evaluate_model(model, part, **kw)
        accuracy[name] = r["accuracy"]
        loc = r["localisation"]
        if any(c in loc for c in columns):
            rows[name] = {c: loc[c]["pointing"] for c in columns if c in loc}
    rows["centre prior"] = {c: base["baselines"]["centre prior"]["pointing"] for c in columns}
    rows["plain activation"] = {c: act[c]["pointing"] for c in columns}
    rnd = _random_scores(part, grids, kw["tolerance"], seed, kw["batch_size"], indices)
    rows["random"] = {c: rnd[c]["pointing"] for c in columns if c in rnd}
    return {
        "images": base["images"],
        "mask_share": base["mask_share"],
        "tolerance_px": base["tolerance_px"],
        "columns": columns,
        "rows": rows,
        "accuracy": accuracy,
    }


def pointing_test(
    models: dict[str, nn.Module],
    plain: nn.Module,
    dataset: Dataset,
    *,
    mean: list[float],
    std: list[float],
    batch_size: int = 50,
    tolerance: float = 0.05,
    seed: int = 0,
    clusters: Sequence[Sequence[int]] | None = None,
) -> dict:
    """Pointing of each model's views against the centre prior, the plain network's activation map and a random
    map, per stage and for the stage average, with 95 % intervals: Wilson's over the scenes, or with ``clusters``
    a bootstrap over the clusters.

    Args:
        models: name -> network with attention (its views are scored; networks without a spatial view get no row).
        plain: the network without attention whose stage outputs (``layer1``..``layer4``) give the activation maps.
        dataset: items ``(image (3, H, W) in [0, 1], label, mask (H, W) bool)``.
        tolerance: pointing-game tolerance as a fraction of the image's shorter side.
        seed: seed of the random maps (scene ``i`` uses ``seed + i``).
        clusters: item indices of each group of scenes that are not independent of each other (the placements of
            one photo); each is scored on its own and the intervals resample the groups, so they reflect how many
            groups there are. ``None``: every scene is independent.

    Returns:
        ``{"scenes", "clusters", "mask_share", "tolerance_px", "columns": ["stage1", ..., "average"], "rows":
        {name: {column: {"pointing", "ci": [low, high]}}}, "accuracy": {name: top-1}}``; rows are the models'
        names, then :data:`BASELINES`.
    """
    parts = [list(range(len(dataset)))] if clusters is None else [list(c) for c in clusters]
    grids = _stage_grids(plain, dataset, mean, std)
    kw = {"mean": mean, "std": std, "batch_size": batch_size, "tolerance": tolerance}
    scored = [_part(models, plain, dataset, idx, grids, seed, **kw) for idx in parts]
    sizes = [p["images"] for p in scored]
    n, clustered = sum(sizes), clusters is not None
    columns = scored[0]["columns"]
    rows = {
        name: {c: _cell([p["rows"][name][c] for p in scored], sizes, clustered) for c in row}
        for name, row in scored[0]["rows"].items()
    }
    accuracy = {
        name: round(sum(p["accuracy"][name] * k for p, k in zip(scored, sizes, strict=True)) / n, 4)
        for name in scored[0]["accuracy"]
    }
    mask_share = sum(p["mask_share"] * k for p, k in zip(scored, sizes, strict=True)) / n
    return {
        "scenes": n,
        "clusters": len(parts) if clustered else None,
        "mask_share": round(mask_share, 4),
        "tolerance_px": scored[0]["tolerance_px"],
        "columns": columns,
        "rows": rows,
        "accuracy": accuracy,
    }


def photo_pointing(
    models: dict[str, nn.Module],
    plain: nn.Module,
    classes: list[str],
    mean: list[float],
    std: list[float],
    size: int,
    placements: int = 40,
    seed: int = 0,
    *,
    scale: tuple[float, float] = SMALL_PHOTO_SCALE,
    batch_size: int = 50,
    tolerance: float = 0.05,
    folder: str | Path | None = None,
) -> dict:
    """:func:`pointing_test` on the shipped real photos pasted at ``scale`` of the scene's side
    (:class:`attnviz.data.PhotoDataset`, ``placements`` seeded scenes per photo), each photo's placements one
    cluster (its intervals resample photos); adds ``"photos"``, the scenes' fingerprint (scale, seed, placements,
    manifest hash)."""
    ds = PhotoDataset(classes, size=size, placements=placements, seed=seed, folder=folder, scale=scale)
    photos = [range(k * placements, (k + 1) * placements) for k in range(len(ds.photos))]  # item i: photo i // P
    result = pointing_test(
        models, plain, ds, mean=mean, std=std, batch_size=batch_size, tolerance=tolerance, seed=seed, clusters=photos
    )
    result["photos"] = ds.fingerprint()
    return result


def pointing_markdown(result: dict) -> str:
    """A README table of :func:`pointing_test`: one row per attention type and baseline, one column per stage,
    each cell ``rate [low–high]`` in percent."""
    columns = result["columns"]

    def cell(v: dict | None) -> str:
        if v is None:
            return "–"
        lo, hi = v["ci"]
        return f"{100 * v['pointing']:.1f} [{100 * lo:.0f}–{100 * hi:.0f}]"

    head = "| map | " + " | ".join(c.replace("stage", "stage ") for c in columns) + " |"
    lines = [head, "|---" * (len(columns) + 1) + "|"]
    for name, row in result["rows"].items():
        label = f"*{name}*" if name in BASELINES else name
        lines.append(f"| {label} | " + " | ".join(cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)
