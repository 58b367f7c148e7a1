"""Throughput: batched capture vs a bare forward at the same batch, and `attnviz render` on a folder.

    python bench/throughput.py [--quick] [--arch resnet50] [--attentions cbam se] [--batch 256] [--images 64]

1. Capture: images/s of a bare forward and of the same forward inside AttentionRecorder with every map (and, in
   `+act`, the activations the pipeline records) read back to the CPU, interleaved batch by batch. On CUDA as the
   pipeline runs it: channels_last, bfloat16 autocast, one transfer per batch. Target: capture >= 0.95x bare.
2. Render: images/s of `attnviz render` on a folder (decode threads, batches, files written by worker processes
   beside the model) vs writing the same results' files alone with the same workers (the CPU encoding limit).
   The ratio says how close the command comes to that limit.
Runs on CUDA when present, else on the CPU with a small batch (said in the output). Prints markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from _common import header, inference, interleave, med, ratio, table

from attnviz import AttentionRecorder
from attnviz.cli.main import main as cli_main
from attnviz.export import write_folder
from attnviz.pipeline.core import ModelCache, check_device
from attnviz.pipeline.run import analyze_many

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SETTINGS = {"cmap": "turbo", "alpha": 0.5, "norm": "map", "topk": 32, "query": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--attentions", nargs="+", default=["cbam", "se", "mhsa"])
    ap.add_argument("--batch", type=int, default=0, help="capture batch (default 256 on CUDA, 8 on CPU)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=0, help="rounds (default 10 on CUDA, 3 on CPU)")
    ap.add_argument("--images", type=int, default=0, help="images in the render folder (default 64 on CUDA, 8 on CPU)")
    ap.add_argument("--workers", type=int, default=None, help="render workers (default: the command's own default)")
    ap.add_argument("--render-arch", default="resnet18", help="arch of the render part (default resnet18)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None)
    ap.add_argument("--skip-render", action="store_true")
    ap.add_argument("--quick", action="store_true", help="cbam only, 2 rounds, 4 images")
    args = ap.parse_args()
    device = check_device(args.device)
    cuda = device == "cuda"
    args.batch = args.batch or (256 if cuda else 8)
    args.repeat = args.repeat or (10 if cuda else 3)
    args.images = args.images or (64 if cuda else 8)
    if args.quick:
        args.attentions, args.repeat, args.images = args.attentions[:1], 2, min(args.images, 4)
    note = "CUDA: channels_last, bfloat16 autocast" if cuda else "no GPU here: CPU, float32, small batch"
    header("Throughput (bench/throughput.py)", device, note)
    rows = []
    for attention in args.attentions:
        rows.append(capture_row(args.arch, attention, args, device))
        if cuda:
            torch.cuda.empty_cache()  # the batch's activations, before the next model
    print(f"Batched capture, {args.arch} at {args.size}x{args.size}, batch {args.batch}, medians of {args.repeat}:\n")
    table(["arch", "attention", "batch", "bare img/s", "capture img/s (x)", "+act img/s (x)"], rows)
    if not args.skip_render:
        render_rows(args, device)


def capture_row(arch: str, attention: str, args: argparse.Namespace, device: str) -> list[str]:
    cuda = device == "cuda"
    model = ModelCache(1).get(arch, attention, "random", device)  # as the pipeline: eval, channels_last on CUDA
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)

    def bare() -> None:
        with inference(device):
            model(x)

    def capture() -> None:
        with AttentionRecorder(model) as rec, inference(device):
            model(x)
        rec.maps  # noqa: B018  (one transfer, one sync)

    def capture_act() -> None:
        with AttentionRecorder(model, activations=True) as rec, inference(device):
            model(x)
        rec.maps  # noqa: B018

    t = interleave({"bare": bare, "capture": capture, "act": capture_act}, args.repeat, warmup=2, device=device)

    def ips(name: str) -> str:
        return f"{args.batch / med(t[name]) * 1e3:.1f}"

    return [
        arch,
        attention,
        str(args.batch),
        ips("bare"),
        f"{ips('capture')} ({1 / ratio(t['capture'], t['bare']):.3f})",
        f"{ips('act')} ({1 / ratio(t['act'], t['bare']):.3f})",
    ]


def render_rows(args: argparse.Namespace, device: str) -> None:
    """`attnviz render` on a folder vs the same files written alone by the same number of worker processes."""
    attention = args.attentions[0]
    tmp = Path(tempfile.mkdtemp(prefix="attnviz-bench-"))
    try:
        src = tmp / "in"
        src.mkdir()
        sources = sorted(ASSETS.glob("*.jpg"))
        per = -(-args.images // len(sources))
        for p in sources:  # copies of one photo are neighbours in sorted order: they share batches
            for k in range(per):
                if len(list(src.iterdir())) < args.images:
                    shutil.copy(p, src / f"{p.stem}_{k:03d}.jpg")
        images = sorted(src.iterdir())
        workers = args.workers if args.workers is not None else min(4, os.cpu_count() or 1)
        cache = ModelCache(1)
        kw = {"attention": attention, "arch": args.render_arch, "weights": "random", "device": device, "cache": cache}
        t0 = time.perf_counter()
        list(analyze_many(images[:1], **kw))  # build and warm the model outside the timings
        t_build = time.perf_counter() - t0  # the command builds its own: taken off its time below
        t0 = time.perf_counter()
        results = list(analyze_many(images, batch_size=16 if device == "cuda" else 1, **kw))
        t_analyze = time.perf_counter() - t0

        t0 = time.perf_counter()
        ctx = multiprocessing.get_context("spawn")
        if workers:
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                list(pool.map(write_folder, results, [SETTINGS] * len(results), [tmp / "a" / p.stem for p in images]))
        else:
            for r, p in zip(results, images, strict=True):
                write_folder(r, SETTINGS, tmp / "a" / p.stem)
        t_write = time.perf_counter() - t0
        del results

        argv = ["render", str(src), "--attention", attention, "--arch", args.render_arch, "--out", str(tmp / "b")]
        argv += ["--weights", "random", "--device", device, "--workers", str(workers)]
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli_main(argv)
        t_render = time.perf_counter() - t0 - t_build
        assert code == 0, f"attnviz render failed ({code})"
        n = len(images)
        print(
            f"\n`attnviz render` on {n} photos ({args.render_arch} + {attention}, {workers} writer processes; "
            "one run each, wall time; the command's model build taken off):\n"
        )
        table(
            ["arch", "attention", "images", "workers", "analyze only img/s", "files only img/s", "render img/s",
             "render / files only"],
            [[args.render_arch, attention, str(n), str(workers), f"{n / t_analyze:.2f}", f"{n / t_write:.2f}",
              f"{n / t_render:.2f}", f"{t_write / t_render:.2f}"]],
        )  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
