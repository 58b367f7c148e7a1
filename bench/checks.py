"""The cost of ``attnviz render --checks`` relative to a plain render: one image, the demo checkpoints (ResNet-18),
the plain request (analyze + export files) and the same with the checks (ablation, Grad-CAM, randomisation),
measured side by side, interleaved, in one run; the checks' own parts are timed too.

    python bench/checks.py [--attention cbam se ...] [--rounds 5] [--size 224]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from attnviz import analyze, list_attentions
from attnviz.checks import check_result
from attnviz.export import export_files
from attnviz.pipeline.core import ModelCache
from attnviz.sources.demo import examples_dir

SETTINGS = {"cmap": "turbo", "alpha": 0.5, "norm": "map", "topk": 32, "query": None}


def _plain(image: str, attention: str, size: int, cache: ModelCache) -> float:
    t = time.perf_counter()
    r = analyze(image, attention=attention, weights="demo", device="cpu", size=size, cache=cache)
    for _ in export_files(r, SETTINGS):
        pass
    return time.perf_counter() - t


def _checked(image: str, attention: str, size: int, cache: ModelCache) -> tuple[float, dict[str, float]]:
    t = time.perf_counter()
    r = analyze(image, attention=attention, weights="demo", device="cpu", size=size, cache=cache)
    checks = check_result(r, cache=cache)
    for _ in export_files(r, SETTINGS):
        pass
    return time.perf_counter() - t, checks.timings


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--attention", nargs="*", default=None)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args()
    image = str(next(iter(sorted(examples_dir().glob("*.jpg")))))
    print(f"image {image}, short side {args.size}, CPU, {args.rounds} interleaved rounds, medians")
    head = f"{'attention':10} {'plain ms':>9} {'checks ms':>10} {'ratio':>6}"
    print(head + "  checks' parts (ms): find/ablation/gradcam/random")
    for attention in args.attention or list_attentions():
        cache = ModelCache()
        _plain(image, attention, args.size, cache)  # warm-up: model built, discovery done
        _checked(image, attention, args.size, cache)
        plain, checked, ratios, parts = [], [], [], []
        for i in range(args.rounds):
            order = (0, 1) if i % 2 == 0 else (1, 0)  # A B, B A, ...
            got: dict[int, float] = {}
            for which in order:
                if which == 0:
                    got[0] = _plain(image, attention, args.size, cache)
                else:
                    got[1], timings = _checked(image, attention, args.size, cache)
                    parts.append(timings)
            plain.append(got[0])
            checked.append(got[1])
            ratios.append(got[1] / got[0])
        keys = ("find", "ablation", "gradcam", "randomisation")
        part = "/".join(f"{statistics.median(t.get(k, 0.0) for t in parts):.0f}" for k in keys)
        print(
            f"{attention:10} {1e3 * statistics.median(plain):9.0f} {1e3 * statistics.median(checked):10.0f} "
            f"{statistics.median(ratios):6.2f}  {part}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
