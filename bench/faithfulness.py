"""The cost of one map's faithfulness curves (deletion + insertion, 24 steps each, and ROAD MoRF + LeRF at 5
fractions: :func:`attnviz.checks.faithfulness`, one batch of 60 images, chunked by 64) relative to one plain forward
of the image, measured side by side, interleaved, in one run; a ResNet-50 with attnviz's SE or CBAM (random
weights), 224 px, CPU. The curves' own parts are timed too: making the inputs (the ROAD imputation) and the forwards.

    python bench/faithfulness.py [--attention se cbam] [--rounds 3] [--size 224]
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--attention", nargs="*", default=["se", "cbam"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args()
    header("Faithfulness curves against one forward", "cpu", f"ResNet-50, {args.size} px, {args.rounds} rounds")
    print("| attention | forward ms | curve set ms | ratio | inputs (imputation) ms | 60-image forward ms |")
    print("|---|---|---|---|---|---|")
    x = torch.randn(1, 3, args.size, args.size)
    m = random_map((args.size // 16, args.size // 16), 0)
    for attention in args.attention:
        model = build_model("resnet50", attention).eval()
        with torch.inference_mode():
            target = int(model(x).argmax())
        fwd, full, ratios, inputs, batch_fwd = [], [], [], [], []
        for i in range(args.rounds):
            got = {}
            for which in (0, 1) if i % 2 == 0 else (1, 0):  # A B, B A, ...
                t = time.perf_counter()
                if which == 0:
                    with torch.inference_mode():
                        model(x)
                else:
                    faithfulness(model, x, {"m": m}, target)
                got[which] = time.perf_counter() - t
            fwd.append(got[0])
            full.append(got[1])
            ratios.append(got[1] / got[0])
            t = time.perf_counter()
            batch, _ = curve_inputs(x, m)
            inputs.append(time.perf_counter() - t)
            t = time.perf_counter()
            with torch.inference_mode():
                model(batch)
            batch_fwd.append(time.perf_counter() - t)
        med = statistics.median
        print(
            f"| {attention} | {1e3 * med(fwd):.0f} | {1e3 * med(full):.0f} | {med(ratios):.0f}x "
            f"| {1e3 * med(inputs):.0f} | {1e3 * med(batch_fwd):.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
