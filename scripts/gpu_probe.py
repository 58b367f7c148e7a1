"""The GPU check's probe (run by scripts/gpu_check.sh): every CUDA path of the library once, one line each.

    python scripts/gpu_probe.py          # on a machine with CUDA
    python scripts/gpu_probe.py --dry    # without one: the same code paths on the CPU, fewer types, no figures

1. every attention type (and the plain network) through ``analyze`` on CUDA (bf16 autocast, channels_last)
   against the CPU in float32, same seeded random weights: same maps, float32, finite, in memory of their own
   (no pinned buffer); the largest difference per type is printed (bf16 moves steep softmaxes such as DA's);
2. a random model leaves the caller's CUDA generator as it was;
3. ``analyze_many``'s out-of-memory retry: an OOM injected after a batch's forward, each image retried alone,
   and the GPU memory the failed batch still held when the cache was emptied (should be ~0 MiB);
4. a request's latency: ``analyze`` on ResNet-50 + CBAM at 224 px (median and p90 of 30, after warm-up);
5. the checks with faithfulness (``check_result(..., faithful=True)``: ablation, Grad-CAM, randomisation, the
   deletion/insertion/ROAD curves of each view, Grad-CAM, centre prior and random map) on the demo's CBAM and SE
   checkpoints (random weights where they are missing), at 128 px, on the device against the CPU: every block's
   figures finite, the largest AUC difference and the time per image on each printed;
6. on a GPU capped at 1 GB: a 2000 px image fails with a clear message, the next 224 px one works.

Prints ``PROBE OK`` or ``PROBE FAILED: ...`` last; exits 1 on a failure.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import attnviz  # noqa: E402
from attnviz.checks import check_result  # noqa: E402
from attnviz.pipeline import AnalyzeError, ModelCache, analyze  # noqa: E402
from attnviz.pipeline.run import analyze_many  # noqa: E402
from attnviz.sources.demo import demo_file  # noqa: E402

ASSET = str(ROOT / "assets" / "chelsea_cat.jpg")
MIB = 2**20


def owns(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and not t.is_pinned() and t.untyped_storage().nbytes() == t.numel() * t.itemsize


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="no GPU: the same paths on the CPU, two types, no figures")
    args = ap.parse_args()
    dev = "cpu" if args.dry else "cuda"
    cuda = dev == "cuda"
    bad: list[str] = []

    # 1. every type on the device vs the CPU
    names = ["cbam", "da"] if args.dry else [*attnviz.list_attentions(), None]
    for n in names:
        g = analyze(ASSET, attention=n, device=dev, size=224, cache=ModelCache(1))
        c = analyze(ASSET, attention=n, device="cpu", size=224, cache=ModelCache(1))
        ok = [m.name for m in g.maps] == [m.name for m in c.maps] and all(
            m.data.dtype == torch.float32 and bool(m.data.isfinite().all()) and owns(m.data) for m in g.maps
        )
        bad += [f"maps of {n}"] * (not ok)
        diff = max(((a.data - b.data).abs().max().item() for a, b in zip(g.maps, c.maps, strict=False)), default=0.0)
        print(f"analyze {n}: {len(g.maps)} maps {'ok' if ok else 'WRONG'}, max|{dev}-cpu| {diff:.3g}", flush=True)

    # 2. the CUDA generator untouched by a random model
    if cuda:
        torch.cuda.manual_seed(1234)
        before = torch.cuda.get_rng_state()
        analyze(ASSET, attention="se", device=dev, size=64, cache=ModelCache(1))
        same = torch.equal(before, torch.cuda.get_rng_state())
        bad += ["CUDA generator changed by a random model"] * (not same)
        print(f"random model: CUDA generator {'untouched' if same else 'CHANGED'}", flush=True)

    # 3. the batch path's out-of-memory retry
    cache = ModelCache(1)
    model = cache.get("resnet18", "da", "random", dev)

    def oom_on_batches(_m, _i, out):
        if out.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by the GPU check)")

    hook = model.fc.register_forward_hook(oom_on_batches)
    empty_cache, held = torch.cuda.empty_cache, []
    base = torch.cuda.memory_allocated() if cuda else 0

    def spy() -> None:  # what the retry starts with: the failed batch should be gone
        held.append((torch.cuda.memory_allocated() - base) / MIB if cuda else 0.0)
        empty_cache()

    torch.cuda.empty_cache = spy
    try:
        size = 1000 if cuda else 96
        out = list(analyze_many([ASSET] * 4, attention="da", device=dev, size=size, batch_size=4, cache=cache))
    finally:
        torch.cuda.empty_cache = empty_cache
        hook.remove()
    kinds = [type(r).__name__ for r in out]
    retried = kinds == ["Result"] * 4 and len(held) >= 1 and held[0] < 16
    bad += [f"batch OOM retry {kinds} {held[:1]}"] * (not retried)
    figure = f", {held[0]:.1f} MiB of the failed batch still held when the cache was emptied" if cuda and held else ""
    print(f"batch OOM retry: {kinds.count('Result')}/4 results{figure}", flush=True)

    # 4. a request's latency on ResNet-50
    arch, n = ("resnet50", 30) if cuda else ("resnet18", 3)
    lat_cache = ModelCache(1)
    for _ in range(3):
        analyze(ASSET, attention="cbam", arch=arch, device=dev, size=224, cache=lat_cache)
    ms = []
    for _ in range(n):
        t0 = time.perf_counter()
        analyze(ASSET, attention="cbam", arch=arch, device=dev, size=224, cache=lat_cache)
        ms.append((time.perf_counter() - t0) * 1e3)
    p90 = sorted(ms)[int(0.9 * (len(ms) - 1))]
    print(f"latency: analyze {arch} + cbam, 224 px, {dev}: median {statistics.median(ms):.1f} ms, p90 {p90:.1f} ms")

    # 5. checks and faithfulness on the device vs the CPU (the demo checkpoints: trained gates, real curves)
    for n in ["cbam", "se"]:
        runs, w = {}, "demo" if demo_file(n).is_file() and demo_file(None).is_file() else "random"
        for d in (dev, "cpu"):
            ck_cache = ModelCache(1)
            r = analyze(ASSET, attention=n, weights=w, device=d, size=128, cache=ck_cache)
            t0 = time.perf_counter()
            runs[d] = check_result(r, cache=ck_cache, faithful=True).blocks
            runs[d + " s"] = time.perf_counter() - t0
        g, c = runs[dev], runs["cpu"]
        aucs = [
            (g[b].faithfulness[m].json()[k], c[b].faithfulness[m].json()[k])
            for b in c
            if c[b].faithfulness
            for m in c[b].faithfulness
            for k in ("deletion", "insertion", "road_morf", "road_lerf")
        ]
        ok = len(aucs) > 0 and set(g) == set(c) and all(math.isfinite(a) for a, _ in aucs)
        diff = max((abs(a - b) for a, b in aucs), default=float("nan"))
        bad += [f"checks of {n}: {len(aucs)} AUCs, diff {diff:.3g}"] * (not ok or diff > 0.1)
        print(
            f"checks {n} ({w} weights): {len(c)} blocks, {len(aucs)} AUCs {'ok' if ok else 'WRONG'}, "
            f"max|{dev}-cpu| {diff:.3g}; "
            f"{runs[dev + ' s']:.1f} s on {dev}, {runs['cpu s']:.1f} s on the cpu",
            flush=True,
        )

    # 6. a GPU capped at 1 GB: a clear error, then the next request works
    if cuda:
        del lat_cache, cache, model, out
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(1e9 / torch.cuda.get_device_properties(0).total_memory)

        def run(size: int) -> str:
            try:
                analyze(ASSET, attention="da", device=dev, size=size)
                return "ok"
            except AnalyzeError as e:
                return f"AnalyzeError({str(e)[:40]}...)"

        big, small = run(2000), run(224)
        bad += [f"1 GB: 2000 px {big}, 224 px {small}"] * (not big.startswith("AnalyzeError") or small != "ok")
        print(f"1 GB GPU: 2000 px -> {big}; then 224 px -> {small}", flush=True)

    print(f"PROBE {'FAILED: ' + '; '.join(bad) if bad else 'OK'}{' (dry run on the CPU)' if args.dry else ''}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
