"""Shared by the benchmarks: interleaved timing, the machine/versions header, markdown tables.

Every benchmark measures its variants side by side in one run, interleaved (A B, B A, A B, ...), and reports
medians; ratios are medians of the per-round ratios, so a machine that slows down during the run (another job,
thermal throttling) moves both sides of each ratio together.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata

import numpy as np
import torch

from attnviz.stats.intervals import bootstrap_mean

#: ``BENCH_CLOCK=cpu`` times CPU work with this process's CPU time (all its threads) instead of wall time: on a
#: machine another job is loading, CPU time stays close to what a quiet machine's wall time would be, while wall
#: time swings with the other job. CUDA runs are always timed by the wall clock.
CLOCK = os.environ.get("BENCH_CLOCK", "wall")

PACKAGES = ("torch", "torchvision", "numpy", "pillow", "opencv-python-headless", "gradio", "grad-cam", "torchcam")


def command(omit: tuple[str, ...] = ()) -> str:
    """The command line that reproduces this run, with the environment variables that change it.

    ``omit``: options that only say where output goes (``--json PATH``), left out with their value so that a file
    storing the command does not change when only the output path did."""
    env = [f"{k}={os.environ[k]}" for k in ("BENCH_CLOCK", "OMP_NUM_THREADS") if k in os.environ]
    args, rest = [], iter(sys.argv[1:])
    for a in rest:
        if a in omit:
            next(rest, None)  # its value
        elif not any(a.startswith(f"{o}=") for o in omit):
            args.append(a)
    return " ".join([*env, "python", *(shlex.quote(a) for a in [os.path.relpath(sys.argv[0]), *args])])


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return f"CPU, {torch.get_num_threads()} torch threads"


def versions() -> str:
    out = [f"python {platform.python_version()}"]
    for pkg in PACKAGES:
        try:
            out.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(out)


def header(title: str, device: str, note: str = "", clocked: bool = True) -> None:
    """Print the markdown heading of a result block: what, where, when, with what, and how to reproduce it.
    ``clocked``: the block's timings follow ``BENCH_CLOCK`` (else they are wall times whatever it says)."""
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n### {title}\n")
    print(f"- machine: {cpu_name()}, {os.cpu_count()} cores; load average at start {load}")
    print(f"- device: {device_name(device)}")
    print(f"- versions: {versions()}")
    print(f"- date: {date}")
    print(f"- command: `{command()}`")
    if clocked and CLOCK == "cpu" and device == "cpu":
        print("- clock: CPU time of the benchmark process (BENCH_CLOCK=cpu), not wall time")
    if note:
        print(f"- note: {note}")
    print()


def table(columns: list[str], rows: list[list[str]]) -> None:
    """Print a markdown table."""
    print("| " + " | ".join(columns) + " |")
    print("| " + " | ".join("---" if i == 0 else "---:" for i in range(len(columns))) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


def inference(device: str) -> contextlib.ExitStack:
    """What a benchmarked forward runs under, as the app runs it: inference mode, bfloat16 autocast on CUDA."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"))
    return stack


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def interleave(
    variants: dict[str, Callable[[], object]], repeat: int, warmup: int = 1, device: str = "cpu"
) -> dict[str, list[float]]:
    """Run every variant ``warmup`` times, then ``repeat`` rounds, alternating the order each round.

    Returns:
        name -> ``repeat`` wall times in ms (device work included: CUDA is synchronised after each call).
    """
    names = list(variants)
    clock = time.process_time if CLOCK == "cpu" and device == "cpu" else time.perf_counter
    for _ in range(warmup):
        for name in names:
            variants[name]()
            synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeat):
        for name in names if r % 2 == 0 else names[::-1]:
            synchronize(device)
            t0 = clock()
            variants[name]()
            synchronize(device)
            times[name].append((clock() - t0) * 1e3)
    return times


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def ratio(num: list[float], den: list[float]) -> float:
    """Median of the per-round ratios num[i] / den[i]."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]


def bootstrap(v: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5 %, 97.5 %) percentile bootstrap of the mean of ``v`` (one value per scene or image)."""
    lo, hi = bootstrap_mean(v, n, seed)
    return float(np.mean(v)), lo, hi
