"""Run every benchmark and write its output into bench/RESULTS.md.

    python bench/run_all.py            # CPU lines on a machine without a GPU, GPU lines on one with CUDA
    python bench/run_all.py --quick    # a smoke run: few rounds (its numbers are not for the record)
    python bench/run_all.py --print    # print only, leave RESULTS.md as it is

Each benchmark runs in its own process, one after another; their markdown blocks replace the section of
RESULTS.md between the markers for this device (cpu or cuda), with the total runtime.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
from _common import command

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "RESULTS.md"

CPU = [
    ["capture.py", "--attentions", "se", "cbam", "sk", "da", "mhsa", "simam"],
    ["analyze.py"],
    ["throughput.py"],
    ["serve.py"],
    ["page.py"],
    ["fused.py"],
]
CUDA = [
    ["capture.py", "--batches", "1", "32", "256"],
    ["analyze.py", "--attentions", "cbam", "sk", "mhsa"],
    ["throughput.py"],
    ["serve.py"],
    ["fused.py", "--device", "cuda", "--batches", "1", "64"],
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--print", action="store_true", help="do not write RESULTS.md")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    blocks = []
    for cmd in CPU if device == "cpu" else CUDA:
        argv = [sys.executable, str(BENCH / cmd[0]), *cmd[1:], *(["--quick"] if args.quick else [])]
        print(f"$ {' '.join(argv[1:])}", file=sys.stderr, flush=True)
        run = subprocess.run(argv, cwd=BENCH.parent, capture_output=True, text=True, env=os.environ)
        if run.returncode != 0:
            sys.stderr.write(run.stdout + run.stderr)
            print(f"{cmd[0]} failed ({run.returncode})", file=sys.stderr)
            return 1
        print(run.stdout, flush=True)
        blocks.append(run.stdout.strip())
    minutes = (time.perf_counter() - t0) / 60
    body = "\n\n".join(blocks) + f"\n\n`{command()}` took {minutes:.1f} min on this machine.\n"
    print(body.splitlines()[-1])
    if not args.print:
        write_section(device, body)
    return 0


def write_section(device: str, body: str) -> None:
    """Replace the text between this device's markers in RESULTS.md (added at the end when missing)."""
    start, end = f"<!-- results:{device}:start -->", f"<!-- results:{device}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    section = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text)
    print(f"wrote the {device} section of {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
