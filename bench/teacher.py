"""How good is the ImageNet teacher on the demo's classes? (issue 15: the teacher's measured contribution)

    python bench/teacher.py --data data/scenes [--scenes 500] [--pool-cache data/cache]

Prints top-1 of EfficientNet-Lite0 (attnviz.data.teacher) on the held-out test scenes (``attnviz eval``'s: seed 1234,
unseen objects) and on the real-photo scenes (``attnviz eval``'s: 8 placements, seed 0), rendered at the teacher's
224 px, with its ImageNet classes summed onto the 8 demo classes, and divided by the prior (the mean summed
probability over the training pool, as training uses it; or over the scenes themselves when no pool is cached),
next to the shipped plain demo network on the same scenes at 128 px. Per class too: where is each one weak?
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attnviz import build_model
from attnviz.data import PhotoDataset, SceneConfig, SceneDataset
from attnviz.data.teacher import class_matrix, class_probs, load_teacher, prior_correct, teacher_probs
from attnviz.sources.checkpoint import read_card
from attnviz.sources.demo import DEMO_ARCH, demo_file


def _stack(ds) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*((ds[i][0], ds[i][1]) for i in range(len(ds))), strict=True)
    return torch.stack(xs), torch.tensor(ys)


def _pool_prior(cache: Path | None, matrix: torch.Tensor) -> torch.Tensor | None:
    files = sorted(cache.glob("pool-train-*.pt"), key=lambda f: f.stat().st_size) if cache else []
    for f in reversed(files):
        state = torch.load(f, map_location="cpu", weights_only=True)
        if "p1000" in state:
            return class_probs(state["p1000"].float(), matrix).mean(0)
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--scenes", type=int, default=500)
    p.add_argument("--pool-cache", default="data/cache")
    args = p.parse_args()
    card = read_card(demo_file(None))
    classes = card["classes"]
    matrix = class_matrix(classes)
    teacher = load_teacher()
    student = build_model(DEMO_ARCH, None, weights=str(demo_file(None))).eval()
    mean = torch.tensor(card["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(card["std"]).view(1, 3, 1, 1)
    sets = {
        "held-out scenes": SceneDataset(args.data, "test", args.scenes, seed=1234, config=SceneConfig(size=224)),
        "real photos": PhotoDataset(classes, size=224, placements=8, seed=0),
    }
    prior = _pool_prior(Path(args.pool_cache), matrix)
    print(f"prior: {'training pool' if prior is not None else 'each set itself'}")
    for name, ds in sets.items():
        x, y = _stack(ds)  # (N, 3, 224, 224), (N,)
        pk = class_probs(teacher_probs(teacher, x), matrix)  # (N, 8)
        q = prior_correct(pk, prior if prior is not None else pk.mean(0))
        with torch.inference_mode():
            small = F.interpolate(x, size=(128, 128), mode="bilinear", antialias=True)
            s = student(((small - mean) / std).contiguous(memory_format=torch.channels_last)).argmax(1)
        rows = {"teacher, summed": pk.argmax(1), "teacher, prior-corrected": q.argmax(1), "plain demo network": s}
        print(f"\n{name} ({len(y)} images): top-1 %, then per class")
        print(f"{'':26}{'all':>6}" + "".join(f"{c[:7]:>8}" for c in classes))
        for label, pred in rows.items():
            hit = [(pred[y == k] == k).float() for k in range(len(classes))]
            per = [100 * float(h.mean()) if len(h) else float("nan") for h in hit]
            print(f"{label:26}{100 * float((pred == y).float().mean()):6.1f}" + "".join(f"{v:8.1f}" for v in per))


if __name__ == "__main__":
    main()
