"""The checks' findings on the demo checkpoints: for every attention type, over held-out test scenes, the mean
per-block ablation effect, the mean Grad-CAM agreement per stage and the mean randomisation similarity per stage.
The rates (top-1 changes with one block off and with all off, sanity warnings) carry a 95 % percentile bootstrap
interval over scenes: each scene's value is its rate over the type's blocks (0 or 1 for all off).

    python bench/checks_findings.py --data data/scenes --scenes 100 [--markdown out.md] [--json out.json]
    python bench/checks_findings.py --from-json a.json b.json --markdown out.md     # merge runs of other types
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import bootstrap

from attnviz import build_model, list_attentions
from attnviz.checks import run_checks
from attnviz.data import SceneConfig, SceneDataset
from attnviz.sources.checkpoint import read_card
from attnviz.sources.demo import DEMO_ARCH, demo_file
from attnviz.sources.select import demo_attentions


def measure(attention: str, data: str, scenes: int, seed: int) -> dict:
    path = demo_file(attention)
    card = read_card(path)
    model = build_model(DEMO_ARCH, attention, weights=str(path)).eval()
    recipe = card["data"]["train"]["config"]
    config = SceneConfig.from_dict(recipe).held_out()  # test scenes: no training-only augmentation
    test = SceneDataset(data, "test", scenes, seed=seed, config=config)
    mean = torch.tensor(card["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(card["std"]).view(1, 3, 1, 1)
    delta, changed, all_delta, all_changed = [], [], [], []
    stage_g: dict[int, list[float]] = {}
    stage_gi: dict[int, list[float]] = {}
    stage_r: dict[int, list[float]] = {}
    stage_ri: dict[int, list[float]] = {}
    scene_changed, scene_warned = [], []  # per scene: the rate over its blocks
    warned = total = 0
    t0 = time.perf_counter()
    for i in range(len(test)):
        image, _, _ = test[i]
        x = (image[None] - mean) / std
        c = run_checks(model, x, seed=seed)
        scene_changed.append(float(np.mean([b.ablation.top1_changed for b in c.blocks.values()])))
        sane = [bool(b.warning) for b in c.blocks.values() if b.randomised_scores is not None]
        if sane:
            scene_warned.append(float(np.mean(sane)))
        for b in c.blocks.values():
            delta.append(b.ablation.top1_prob_delta)
            changed.append(b.ablation.top1_changed)
            st = b.stage or 0
            if b.gradcam_scores is not None:
                stage_g.setdefault(st, []).append(b.gradcam_scores["spearman"])
                stage_gi.setdefault(st, []).append(b.gradcam_scores["top20_iou"])
            if b.randomised_scores is not None:
                stage_r.setdefault(st, []).append(b.randomised_scores["spearman"])
                stage_ri.setdefault(st, []).append(b.randomised_scores["top20_iou"])
                warned += bool(b.warning)
                total += 1
        all_delta.append(c.all_off.top1_prob_delta)
        all_changed.append(c.all_off.top1_changed)

    def means(d: dict[int, list[float]]) -> dict[int, float]:
        return {k: float(np.mean(v)) for k, v in sorted(d.items())}

    return {
        "attention": attention,
        "scenes": len(test),
        "block_delta": float(np.mean(delta)),
        "block_abs_delta": float(np.mean(np.abs(delta))),
        "block_changed": float(np.mean(changed)),
        "all_delta": float(np.mean(all_delta)),
        "all_changed": float(np.mean(all_changed)),
        "gradcam_spearman": means(stage_g),
        "gradcam_iou": means(stage_gi),
        "random_spearman": means(stage_r),
        "random_iou": means(stage_ri),
        "warned": warned / total if total else None,
        "block_changed_ci": bootstrap(scene_changed)[1:],
        "all_changed_ci": bootstrap([float(v) for v in all_changed])[1:],
        "warned_ci": bootstrap(scene_warned)[1:] if scene_warned else None,
        "seconds": time.perf_counter() - t0,
    }


def _stages(d: dict[int, float]) -> str:
    return "/".join(f"{d[s]:+.2f}" if s in d else "–" for s in (1, 2, 3, 4))


def _pm(value: float, ci: list[float] | None, digits: int = 1) -> str:
    """``value`` in % with the interval's half-width (the larger side), e.g. ``18.3 ±4.1``."""
    if ci is None:
        return f"{100 * value:.{digits}f}"
    half = 100 * max(value - ci[0], ci[1] - value)
    return f"{100 * value:.{digits}f} ±{half:.{digits}f}"


def table(rows: list[dict]) -> str:
    out = [
        "| attention | block off: mean Δp(top-1) | mean abs Δ | top-1 changes % | all off: Δp / changes % | "
        "Grad-CAM Spearman by stage (1/2/3/4) | randomised Spearman by stage (1/2/3/4) | sanity warnings % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        w = "–" if r["warned"] is None else _pm(r["warned"], r.get("warned_ci"), 0)
        out.append(
            f"| {r['attention']} | {r['block_delta']:+.3f} | {r['block_abs_delta']:.3f} "
            f"| {_pm(r['block_changed'], r.get('block_changed_ci'))} "
            f"| {r['all_delta']:+.3f} / {_pm(r['all_changed'], r.get('all_changed_ci'), 0)} "
            f"| {_stages(r['gradcam_spearman'])} "
            f"| {_stages(r['random_spearman'])} | {w} |"
        )
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="the scene folder (needed unless --from-json)")
    p.add_argument("--scenes", type=int, default=100)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--attention", nargs="*", default=None)
    p.add_argument("--markdown", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--from-json", nargs="*", default=None, help="merge the rows of earlier --json runs, measure none")
    args = p.parse_args()
    if args.from_json:
        rows = [r for f in args.from_json for r in json.loads(Path(f).read_text())]
        for r in rows:  # JSON made the stage keys strings
            for k in ("gradcam_spearman", "gradcam_iou", "random_spearman", "random_iou"):
                r[k] = {int(s): v for s, v in r[k].items()}
        order = list_attentions()
        rows.sort(key=lambda r: order.index(r["attention"]) if r["attention"] in order else len(order))
        print(table(rows))
        if args.markdown:
            Path(args.markdown).write_text(table(rows) + "\n")
        return 0
    if args.data is None:
        p.error("--data is needed to measure (or --from-json to merge)")
    torch.set_num_threads(1)
    rows = []
    names = args.attention or demo_attentions()
    for a in names:
        r = measure(a, args.data, args.scenes, args.seed)
        rows.append(r)
        print(json.dumps(r), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
    print(table(rows))
    if args.markdown:
        Path(args.markdown).write_text(table(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
