"""Measured, not claimed: accuracy and localisation of attention maps on held-out scenes with object masks.

For every map that yields a spatial view (the view the app overlays, :func:`attnviz.capture.views.spatial_view`; for
pairwise attention the attention each position *receives*, averaged over queries and heads, since no single
query is privileged), each map is upsampled bilinearly to the image and min-max normalised, then scored:

* pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016): the map's
  maximum lies inside the object mask dilated by ``tolerance`` pixels. A flat map points nowhere (a miss).
* energy in mask: the share of the map's mass inside the mask, next to the mask's share of the image (what a
  uniform map scores).

Scores are given per block, per stage (the mean of the stage's block maps) and for the stage-averaged map (the
mean of the stage maps), against two baselines: a centred Gaussian (the centre prior) and the plain network's
own activation map (channel mean of each stage's output, averaged the same way). The scoring itself is
:mod:`attnviz.stats.localisation`, which ``attnviz stats`` runs over any dataset with masks or boxes.

:func:`evaluate_photos` scores the same on real photos pasted onto textures (:class:`attnviz.data.PhotoDataset`,
mask = the pasted photo), with top-1 accuracy per photo.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..capture.recorder import AttentionRecorder
from ..data.photos import PhotoDataset
from ..stats.intervals import bootstrap_mean
from ..stats.localisation import (
    LocalisationScores,
    aggregate,
    block_maps,
    centre_prior,
    localise,
    score_maps,
    wilson,
)

__all__ = [
    "LocalisationScores",
    "centre_prior",
    "evaluate_model",
    "evaluate_photos",
    "findings",
    "markdown_table",
    "overall",
    "paired_delta_ci",
    "photo_summary",
    "score_maps",
    "summary_row",
]


#: the plain network's row label in :func:`summary_row` and the tables
PLAIN_LABEL = "none (plain)"


@torch.inference_mode()
def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    *,
    mean: list[float],
    std: list[float],
    batch_size: int = 32,
    tolerance: float = 0.05,
    device: str | torch.device = "cpu",
    baselines: bool = False,
    num_workers: int = 0,
    predictions: bool = False,
) -> dict:
    """Top-1 accuracy and localisation scores of ``model`` on ``dataset`` (items: image in [0, 1], label, mask).

    Args:
        tolerance: pointing-game tolerance as a fraction of the image's shorter side.
        baselines: also score the centre prior and this model's own stage activations (use on the plain model).
        predictions: also return ``"predictions"`` and ``"labels"``, the predicted and the true label of every item
            in dataset order (for paired comparisons of two models on the same items).

    Returns:
        ``{"accuracy", "images", "mask_share", "localisation": {name: {"pointing", "energy"}},
        "baselines": {...}}``; names are block paths, ``stageK`` and ``average``.
    """
    device = torch.device(device)
    model.eval().to(device)
    m_ = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s_ = torch.tensor(std, device=device).view(1, 3, 1, 1)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    scores, base = LocalisationScores(), LocalisationScores()
    correct = seen = 0
    mask_share = 0.0
    predicted: list[int] = []
    labels: list[int] = []
    stage_acts: dict[str, Tensor] = {}
    hooks = []
    if baselines:
        for k in range(1, 5):
            layer = getattr(model, f"layer{k}", None)
            if layer is not None:
                hooks.append(layer.register_forward_hook(_keep(stage_acts, f"stage{k}")))
    try:
        for x, y, mask in loader:
            size = (int(x.shape[2]), int(x.shape[3]))
            tol = round(tolerance * min(size))
            with AttentionRecorder(model, activations=True) as rec:
                logits = model(((x.to(device) - m_) / s_).contiguous(memory_format=torch.channels_last))
            top1 = logits.argmax(1).cpu()
            correct += int((top1 == y).sum())
            predicted += top1.tolist()
            labels += y.tolist()
            seen += int(y.numel())
            mask_share += float(mask.float().mean(dim=(1, 2)).sum())
            localise(block_maps(rec), mask, tol, scores, base if baselines else None)
            if baselines:
                acts = {k: (int(k[-1]), v.cpu()) for k, v in stage_acts.items()}
                for name, img in aggregate(acts, size).items():
                    base.add(f"activation {name}", *score_maps(img, mask, tol))
    finally:
        for h in hooks:
            h.remove()
    result = {
        "accuracy": round(correct / max(1, seen), 4),
        "images": seen,
        "mask_share": round(mask_share / max(1, seen), 4),
        "tolerance_px": round(tolerance * min(size)) if seen else None,
        "localisation": scores.table(),
        "baselines": base.table(),
    }
    if predictions:
        result["predictions"], result["labels"] = predicted, labels
    return result


def evaluate_photos(
    model: nn.Module,
    classes: list[str],
    mean: list[float],
    std: list[float],
    size: int,
    placements: int = 8,
    seed: int = 0,
    *,
    batch_size: int = 32,
    tolerance: float = 0.05,
    device: str | torch.device = "cpu",
    baselines: bool = False,
    folder: str | Path | None = None,
) -> dict:
    """:func:`evaluate_model` on the shipped real photos (:class:`attnviz.data.PhotoDataset`), plus per photo.

    Args:
        classes: the model's classes in label order (photos of other classes are skipped).
        size: the model's input side; placements, seed, folder: the :class:`~attnviz.data.PhotoDataset`.

    Returns:
        :func:`evaluate_model`'s result with ``"per_photo"`` (photo file -> top-1 accuracy over its placements),
        ``"accuracy_ci"`` (95 % bootstrap interval over the photos: the placements of one photo are nearly always
        all right or all wrong, so the photos, not the scenes, are the independent units) and ``"photos"`` (the
        dataset's fingerprint).

    Raises:
        ValueError: no photo is of one of ``classes``.
    """

    ds = PhotoDataset(classes, size=size, placements=placements, seed=seed, folder=folder)
    result = evaluate_model(
        model,
        ds,
        mean=mean,
        std=std,
        batch_size=batch_size,
        tolerance=tolerance,
        device=device,
        baselines=baselines,
        predictions=True,
    )
    hits: dict[str, list[int]] = {f: [] for f in ds.photos}
    result.pop("labels")
    labels = [y for y in ds.labels for _ in range(ds.placements)]  # item i shows photo i // placements
    for name, label, pred in zip(ds.photo_names, labels, result.pop("predictions"), strict=True):
        hits[name].append(int(pred == label))
    result["per_photo"] = {f: round(sum(h) / len(h), 4) for f, h in hits.items()}
    lo, hi = bootstrap_mean([sum(h) / len(h) for h in hits.values()])
    result["accuracy_ci"] = [round(lo, 4), round(hi, 4)]  # over photos: a photo's placements are not independent
    result["photos"] = ds.fingerprint()
    return result


_STAGE = re.compile(r"stage\d+")


def photo_summary(result: dict) -> dict:
    """The headline numbers of :func:`evaluate_photos`: top-1 accuracy, the best single block on the pointing game
    (``None`` when the model has no spatial map), the stage-averaged map's pointing, and accuracy per photo."""
    loc = result["localisation"]
    blocks = {k: v for k, v in loc.items() if k != "average" and not _STAGE.fullmatch(k)}
    best = max(blocks.items(), key=lambda kv: kv[1]["pointing"]) if blocks else None
    return {
        "accuracy": result["accuracy"],
        "accuracy_ci": result.get("accuracy_ci"),
        "best_block": None if best is None else best[0],
        "best_block_pointing": None if best is None else best[1]["pointing"],
        "average_pointing": loc.get("average", {}).get("pointing"),
        "per_photo": dict(result["per_photo"]),
    }


def _keep(store: dict[str, Tensor], name: str):
    def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
        store[name] = output.detach().float().mean(1)  # (B, h, w) channel mean

    return hook


def paired_delta_ci(result: dict, plain: dict) -> list[float] | None:
    """95 % paired bootstrap interval of ``result``'s top-1 accuracy minus ``plain``'s on the same items (both
    evaluated with ``predictions=True``): scenes are resampled together, so what both models get right or wrong
    cancels, and the interval is much narrower than two separate intervals would suggest. ``None`` without the
    predictions or when the items differ."""
    if "predictions" not in result or "predictions" not in plain or result.get("labels") != plain.get("labels"):
        return None
    y = np.asarray(result["labels"])  # (N,)
    d = (np.asarray(result["predictions"]) == y).astype(float) - (np.asarray(plain["predictions"]) == y)  # (N,)
    lo, hi = bootstrap_mean(d)
    return [round(lo, 4), round(hi, 4)]


def summary_row(attention: str | None, result: dict, plain: dict | None) -> dict:
    """The headline numbers of one evaluation: accuracy with its 95 % Wilson interval over the scenes, its
    difference to the plain backbone with a paired interval (:func:`paired_delta_ci`), the best stage and the
    stage-averaged map on the pointing game, energy in mask of the stage-averaged map."""
    loc = result["localisation"]
    stages = {k: v for k, v in loc.items() if k.startswith("stage")}
    best = max(stages.items(), key=lambda kv: kv[1]["pointing"]) if stages else None
    row = {
        "attention": attention or PLAIN_LABEL,
        "accuracy": result["accuracy"],
        "accuracy_ci": [round(v, 4) for v in wilson(result["accuracy"], result["images"])],
        "delta": None if plain is None else round(result["accuracy"] - plain["accuracy"], 4),
        "delta_ci": None if plain is None or attention is None else paired_delta_ci(result, plain),
        "best_stage": None if best is None else best[0],
        "best_stage_pointing": None if best is None else best[1]["pointing"],
        "stage_pointing": {k: v["pointing"] for k, v in stages.items()},
        "average_pointing": loc.get("average", {}).get("pointing"),
        "average_energy": loc.get("average", {}).get("energy"),
        "centre_prior": None if plain is None else plain["baselines"].get("centre prior", {}).get("pointing"),
    }
    return row


def overall(rows: list[dict], results: dict[str, dict], margin: float = 0.03) -> list[str]:
    """Two sentences over every attention type (rows other than plain): how many are within ``margin`` of the plain
    network on the test scenes (by the point estimate, and with the whole paired interval above ``-margin``), and
    the real-photo top-1 averaged over the types with its 95 % interval over the photos (the types' per-photo
    accuracies averaged, then the photos resampled)."""
    typed = [r for r in rows if r.get("delta") is not None and r["attention"] != PLAIN_LABEL]
    if not typed:
        return []
    near = [r["attention"] for r in typed if r["delta"] >= -margin]
    sure = [r["attention"] for r in typed if r.get("delta_ci") and r["delta_ci"][0] >= -margin]
    lines = [
        f"within {100 * margin:.0f} points of plain on the test scenes: {len(near)} of {len(typed)} types"
        f" ({', '.join(near) or 'none'}); with the whole paired interval: {len(sure)} ({', '.join(sure) or 'none'})"
    ]
    per_photo = [
        results[r["attention"]]["real_photos"]["per_photo"]
        for r in typed
        if r["attention"] in results and "real_photos" in results[r["attention"]]
    ]
    if per_photo and all(p.keys() == per_photo[0].keys() for p in per_photo):
        by_photo = np.array([[p[f] for f in per_photo[0]] for p in per_photo]).mean(0)  # (photos,) mean over types
        lo, hi = bootstrap_mean(by_photo)
        lines.append(
            f"real photos, top-1 averaged over the {len(per_photo)} types: {100 * by_photo.mean():.1f} %"
            f" [{100 * lo:.0f}–{100 * hi:.0f}] over {by_photo.size} photos"
        )
    return lines


def findings(row: dict) -> str:
    """One sentence for a model card: which stages' maps point at the object more often than the centre prior,
    and which fall below it (they weight the background or the centre less than a fixed Gaussian would)."""
    prior = row.get("centre_prior")
    stages = row.get("stage_pointing") or {}
    if not stages:
        return "no spatial view: this attention type has no map to score"
    parts = [f"{k.replace('stage', 'stage ')} {100 * v:.0f} %" for k, v in stages.items()]
    average = 100 * (row.get("average_pointing") or 0)
    text = f"pointing game by stage: {', '.join(parts)}; stage-averaged map {average:.0f} %"
    if prior is None:
        return text
    above = [k[-1] for k, v in stages.items() if v > prior]
    below = [k[-1] for k, v in stages.items() if v <= prior]
    text += f" (centre prior {100 * prior:.0f} %)."
    if above:
        text += f" Stage {', '.join(above)} maps find the object more often than the prior."
    if below:
        text += f" Stage {', '.join(below)} maps do not beat the prior: they weight background or spread out."
    return text


def markdown_table(
    rows: list[dict],
    baselines: dict,
    mask_share: float,
    photo_baselines: dict | None = None,
    photo_mask_share: float | None = None,
) -> str:
    """A README table of :func:`summary_row` rows, with the baselines underneath.

    The difference to plain carries its paired 95 % interval where the row has one (``delta_ci``). Rows with a
    ``"real_photos"`` entry (:func:`photo_summary`'s headline) add three columns: real-photo top-1 (with its
    interval over the photos), best single block and stage-averaged map on the pointing game. ``photo_baselines``
    (the plain model's :func:`evaluate_photos` baselines) adds a real-photo column to the baseline table."""

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}"

    photos = any(r.get("real_photos") for r in rows)
    head = (
        "| attention | test acc % | Δ vs plain [paired 95 %] | pointing % by stage (1/2/3/4) | best stage "
        "| stage-avg pointing % | stage-avg energy % |"
    )
    rule = "|---|---|---|---|---|---|---|"
    if photos:
        head += (
            " real-photo top-1 % [95 % over photos] | real-photo best-block pointing % "
            "| real-photo stage-avg pointing % |"
        )
        rule += "---|---|---|"
    lines = [head, rule]
    for r in rows:
        by_stage = "/".join(pct(r["stage_pointing"].get(f"stage{k}")) for k in range(1, 5))
        delta = "–" if r["delta"] is None else f"{100 * r['delta']:+.1f}"
        if r.get("delta_ci"):
            delta += " [{:+.1f}, {:+.1f}]".format(*(100 * v for v in r["delta_ci"]))
        line = (
            f"| {r['attention']} | {pct(r['accuracy'])} | {delta} | {by_stage if r['stage_pointing'] else '–'} "
            f"| {r['best_stage'] or '–'} | {pct(r['average_pointing'])} | {pct(r['average_energy'])} |"
        )
        if photos:
            p = r.get("real_photos") or {}
            top1 = pct(p.get("accuracy"))
            if p.get("accuracy_ci"):
                top1 += " [{:.0f}–{:.0f}]".format(*(100 * v for v in p["accuracy_ci"]))
            line += f" {top1} | {pct(p.get('best_block_pointing'))} | {pct(p.get('average_pointing'))} |"
        lines.append(line)
    lines.append("")
    cover = f"object mask covers {pct(mask_share)} % of the image on average"
    if photo_baselines is not None:
        cover += f"; the real-photo scenes' photo covers {pct(photo_mask_share)} %"
    lines.append(f"Baselines on the same test scenes ({cover}):")
    lines.append("")
    if photo_baselines is None:
        lines.append("| baseline | pointing % | energy % |")
        lines.append("|---|---|---|")
        for name, v in baselines.items():
            lines.append(f"| {name} | {pct(v['pointing'])} | {pct(v['energy'])} |")
    else:
        lines.append("| baseline | pointing % | energy % | real-photo pointing % | real-photo energy % |")
        lines.append("|---|---|---|---|---|")
        for name in dict.fromkeys([*baselines, *photo_baselines]):
            v, p = baselines.get(name, {}), photo_baselines.get(name, {})
            lines.append(
                f"| {name} | {pct(v.get('pointing'))} | {pct(v.get('energy'))} "
                f"| {pct(p.get('pointing'))} | {pct(p.get('energy'))} |"
            )
    return "\n".join(lines)
