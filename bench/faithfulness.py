"""The cost of one map's faithfulness curves (deletion + insertion, 24 steps each, and ROAD MoRF + LeRF at 5
fractions: :func:`attnviz.checks.faithfulness`, one batch of 60 images, chunked by 64) relative to one plain forward
of the image, with ROAD's imputation solved by conjugate gradients in torch (``cg``, the solver before the direct
one) and by a sparse direct factorisation (``direct``, scipy's SuperLU, the default when scipy imports), measured
side by side, interleaved, in one run; a ResNet-50 with attnviz's SE or CBAM (random weights), 224 px, CPU. The
curves' parts are timed too: making the inputs (mostly the ROAD imputation) per solver, and the 60-image forward.

    python bench/faithfulness.py [--attention se cbam] [--rounds 3] [--size 224] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from _common import header

from attnviz import build_model
from attnviz.checks import faithfulness, random_map
from attnviz.checks.faithfulness import curve_inputs

SOLVERS = ("cg", "direct")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--attention", nargs="*", default=["se", "cbam"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    header(
        "Faithfulness curves against one forward: ROAD by conjugate gradients (before) and by a direct solve (after)",
        "cpu",
        f"ResNet-50, {args.size} px, {args.rounds} rounds, {torch.get_num_threads()} threads",
    )
    print(
        "| attention | forward ms | curve set ms cg | ratio cg | curve set ms direct | ratio direct "
        "| inputs ms cg | inputs ms direct | 60-image forward ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    x = torch.randn(1, 3, args.size, args.size)
    m = random_map((args.size // 16, args.size // 16), 0)
    med = statistics.median
    for attention in args.attention:
        model = build_model("resnet50", attention).eval()
        with torch.inference_mode():
            target = int(model(x).argmax())
        fwd: list[float] = []
        full: dict[str, list[float]] = {s: [] for s in SOLVERS}
        ratio: dict[str, list[float]] = {s: [] for s in SOLVERS}
        inputs: dict[str, list[float]] = {s: [] for s in SOLVERS}
        batch_fwd: list[float] = []
        for i in range(args.rounds):
            jobs = ["forward", *SOLVERS]
            jobs = jobs[i % 3 :] + jobs[: i % 3]  # rotate the order: A B C, B C A, C A B
            got = {}
            for job in jobs:
                t = time.perf_counter()
                if job == "forward":
                    with torch.inference_mode():
                        model(x)
                else:
                    faithfulness(model, x, {"m": m}, target, solver=job)
                got[job] = time.perf_counter() - t
            fwd.append(got["forward"])
            for s in SOLVERS:
                full[s].append(got[s])
                ratio[s].append(got[s] / got["forward"])
                t = time.perf_counter()
                batch, _ = curve_inputs(x, m, solver=s)
                inputs[s].append(time.perf_counter() - t)
            t = time.perf_counter()
            with torch.inference_mode():
                model(batch)
            batch_fwd.append(time.perf_counter() - t)
        print(
            f"| {attention} | {1e3 * med(fwd):.0f} | {1e3 * med(full['cg']):.0f} | {med(ratio['cg']):.0f}x "
            f"| {1e3 * med(full['direct']):.0f} | {med(ratio['direct']):.0f}x "
            f"| {1e3 * med(inputs['cg']):.0f} | {1e3 * med(inputs['direct']):.0f} | {1e3 * med(batch_fwd):.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
