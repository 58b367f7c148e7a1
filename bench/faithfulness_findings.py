"""Faithfulness on the demo checkpoints: for each attention type, over held-out test scenes, the deletion and
insertion AUC and the ROAD MoRF/LeRF means of the blocks' attention views, Grad-CAM at the same blocks, a centre prior
and a random map (:func:`attnviz.checks.faithfulness`), with 95 % bootstrap intervals over scenes (each scene: the
mean over the blocks scored).

    python bench/faithfulness_findings.py --data data/scenes --scenes 3 --blocks last [--attention se cbam ...]
        [--json rows.json] [--markdown bench/FAITHFULNESS.md]
    python bench/faithfulness_findings.py --from-json a.json b.json --markdown bench/FAITHFULNESS.md   # merge runs
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import bootstrap

from attnviz import build_model
from attnviz.checks import centre_prior, faithfulness, random_map, run_checks
from attnviz.data import SceneConfig, SceneDataset
from attnviz.sources.checkpoint import read_card
from attnviz.sources.demo import DEMO_ARCH, demo_file
from attnviz.sources.select import demo_attentions

METHODS = ("attention", "gradcam", "centre", "random")
METRICS = ("deletion", "insertion", "road_morf", "road_lerf")


def measure(attention: str, data: str, scenes: int, seed: int, blocks: str) -> dict:
    path = demo_file(attention)
    card = read_card(path)
    model = build_model(DEMO_ARCH, attention, weights=str(path)).eval()
    config = SceneConfig.from_dict(card["data"]["train"]["config"]).held_out()
    test = SceneDataset(data, "test", scenes, seed=seed, config=config)
    mean = torch.tensor(card["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(card["std"]).view(1, 3, 1, 1)
    per_scene: dict[str, dict[str, list[float]]] = {m: {k: [] for k in METRICS} for m in METHODS}
    t0 = time.perf_counter()
    scored = 0
    for i in range(len(test)):
        image, _, _ = test[i]
        x = (image[None] - mean) / std
        c = run_checks(model, x, randomise=False, faithful=False, seed=seed)
        checks = [b for b in c.blocks.values() if b.view is not None]
        if blocks == "last":  # the last block of each stage
            last = {b.stage: b for b in checks}
            checks = list(last.values())
        made: dict = {}
        got: dict[str, dict[str, list[float]]] = {m: {k: [] for k in METRICS} for m in METHODS}
        for b in checks:
            maps = {"attention": b.view, "centre": centre_prior(b.view.shape), "random": random_map(b.view.shape, seed)}
            if b.gradcam is not None:
                maps["gradcam"] = b.gradcam
            for name, curves in faithfulness(model, x, maps, c.target, seed=seed, cache=made).items():
                for k, v in curves.json().items():
                    if k in METRICS:
                        got[name][k].append(v)
        for m in METHODS:
            for k in METRICS:
                if got[m][k]:
                    per_scene[m][k].append(float(np.mean(got[m][k])))
        scored += 1
    out = {"type": attention, "scenes": scored, "blocks": blocks, "seconds": time.perf_counter() - t0}
    for m in METHODS:
        out[m] = {k: bootstrap(v) for k, v in per_scene[m].items() if v}
    return out


def table(rows: list[dict]) -> str:
    lines = [
        "| type | n | method | deletion AUC ↓ | insertion AUC ↑ | ROAD MoRF ↓ | ROAD LeRF ↑ |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for m in METHODS:
            cells = [f"{r[m][k][0]:.3f} [{r[m][k][1]:.3f}, {r[m][k][2]:.3f}]" if k in r[m] else "–" for k in METRICS]
            lines.append(f"| {r['type']} | {r['scenes']} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(rows: list[dict], command: str) -> str:
    """bench/FAITHFULNESS.md: the table with how it was made."""
    n = sorted({r["scenes"] for r in rows})
    secs = sum(r["seconds"] for r in rows)
    return "\n".join(
        [
            "# Faithfulness of the attention views on the demo checkpoints",
            "",
            f"Measured {datetime.date.today().isoformat()} on a CPU ({secs / 60:.0f} min of scoring summed over the "
            "types, one torch thread each), "
            f"n = {', '.join(map(str, n))} held-out test scenes per type (seed {rows[0].get('seed', 1234)}), "
            f"blocks: {rows[0]['blocks']} (the last block of each stage); each scene's score is the mean over its "
            "blocks, the interval a 95 % percentile bootstrap of the mean over scenes.",
            "",
            "Methods: the block's attention view (the page's default view), Grad-CAM at the same block, a centred "
            "Gaussian (centre prior) and a seeded uniform random map, all on the block's grid, upsampled to the image. "
            "Deletion and insertion: AUC of the target's probability over 24 steps (Petsiuk et al. 2018; deletion to "
            "the dataset mean, insertion from a blurred copy). ROAD: mean probability over 10-90 % of the pixels "
            "removed, most (MoRF) or least (LeRF) relevant first, noisy-linear imputation (Rong et al. 2022). Arrows: "
            "the direction of a more faithful map.",
            "",
            "```",
            command,
            "```",
            "",
            table(rows),
            "",
        ]
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None)
    p.add_argument("--scenes", type=int, default=3)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--blocks", choices=("all", "last"), default="last")
    p.add_argument("--attention", nargs="*", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--from-json", nargs="*", default=None, help="merge the rows of earlier --json runs, measure none")
    p.add_argument("--markdown", default=None, help="write the table with its command and date here")
    p.add_argument("--command", default=None, help="the command to quote in --markdown (default: this one)")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    if args.from_json:
        for f in args.from_json:
            rows += json.loads(Path(f).read_text())
    else:
        if args.data is None:
            p.error("--data is needed unless --from-json")
        for a in args.attention or demo_attentions():
            r = measure(a, args.data, args.scenes, args.seed, args.blocks)
            r["seed"] = args.seed
            rows.append(r)
            print(json.dumps(r), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=1))
    print(table(rows))
    if args.markdown:
        Path(args.markdown).write_text(markdown(rows, args.command or "python " + " ".join(sys.argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
