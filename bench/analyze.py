"""Time attnviz.analyze (decode, preprocess, forward + capture) and the app's rendering against a bare forward.

    python bench/analyze.py [--archs resnet18 resnet50] [--attention cbam] [--repeat 10]

Prints medians in ms and ratios to the bare forward, measured side by side in one run (these machines are noisy).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from attnviz.analyze import ModelCache, analyze
from attnviz.export import export_zip, spatial_views
from attnviz.image import decode_image, preprocess
from attnviz.render import overlay
from attnviz.views import build_views

IMAGE = Path(__file__).resolve().parent.parent / "assets" / "chelsea_cat.jpg"


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"])
    ap.add_argument("--attention", default="cbam")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, image {IMAGE.name}")
    print(
        f"{'arch':9} {'bare fwd':>9} {'analyze':>8} {'= decode':>9} {'prep':>6} {'fwd+hooks':>10} {'capture':>8} "
        f"{'render':>7} {'zip':>7} {'analyze/bare':>13} {'+render/bare':>13}"
    )
    for arch in args.archs:
        bench_arch(arch, args, device)


def bench_arch(arch: str, args: argparse.Namespace, device: str) -> None:
    """One line of the table: medians over ``args.repeat`` interleaved runs."""
    cache = ModelCache(1)
    kw = {"attention": args.attention, "arch": arch, "device": device, "size": args.size, "cache": cache}
    r = analyze(IMAGE, **kw)  # builds and warms the model
    model = cache.models()[0]
    meta = model.weights_meta
    x = preprocess(decode_image(IMAGE).image, args.size, meta["mean"], meta["std"]).to(device)

    def bare() -> None:
        with torch.inference_mode():
            model(x)
        if device == "cuda":
            torch.cuda.synchronize()

    parts: dict[str, list[float]] = {}

    def full() -> None:
        res = analyze(IMAGE, **kw)
        for k, v in res.timings.items():
            parts.setdefault(k, []).append(v)

    image = np.asarray(r.image)

    def render() -> None:  # what the page shows: every overlay of the gallery
        _, normed, _ = spatial_views(build_views(r), "map")
        for m01 in normed:
            overlay(image, m01, "turbo", 0.5)

    settings = {"cmap": "turbo", "alpha": 0.5, "norm": "map", "topk": 32, "query": None}
    out = Path("/tmp/attnviz-bench.zip")
    # interleave so both see the same machine state
    t_bare, t_full, t_render, t_zip = [], [], [], []
    for _ in range(args.repeat):
        t_bare.append(median_ms(bare, 1))
        t_full.append(median_ms(full, 1))
        t_render.append(median_ms(render, 1))
    for _ in range(max(2, args.repeat // 4)):
        t_zip.append(median_ms(lambda: export_zip(r, settings, out), 1))
    b, f, rd, z = (statistics.median(t) for t in (t_bare, t_full, t_render, t_zip))
    p = {k: statistics.median(v) for k, v in parts.items()}
    print(
        f"{arch:9} {b:9.1f} {f:8.1f} {p['decode']:9.1f} {p['preprocess']:6.1f} {p['forward']:10.1f} "
        f"{p['capture']:8.2f} {rd:7.1f} {z:7.0f} {f / b:13.2f} {(f + rd) / b:13.2f}"
    )


if __name__ == "__main__":
    main()
