"""Capture overhead: a bare forward vs the same forward inside AttentionRecorder, maps read back to the CPU.

    python bench/capture.py [--quick] [--archs resnet18 resnet50] [--attentions se cbam ...] [--batches 1 32]

Three variants per (arch, attention, batch), interleaved: ``bare`` (inference_mode forward), ``capture``
(the same inside AttentionRecorder, then ``rec.maps``: every map on the CPU) and ``+act`` (also the activations
``attnviz.analyze`` records, as it does). On CUDA all three run as the app does: bfloat16 autocast,
channels_last. Target: capture / bare <= 1.03. Prints a markdown block for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse

import torch
from _common import header, inference, interleave, med, ratio, table

from attnviz import AttentionRecorder, build_model

ATTENTIONS = ["se", "cbam", "eca", "sk", "da", "mhsa", "ea", "simam"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"])
    ap.add_argument("--attentions", nargs="+", default=ATTENTIONS)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=0, help="rounds per line (default: 15 at batch 1, 5 above)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None)
    ap.add_argument("--quick", action="store_true", help="cbam and se, batches 1 and 8, 3 rounds")
    args = ap.parse_args()
    if args.quick:
        args.attentions, args.batches, args.repeat = ["se", "cbam"], [1, 8], args.repeat or 3
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    note = "CUDA: bfloat16 autocast, channels_last" if device == "cuda" else "CPU: float32"
    header("Capture overhead (bench/capture.py)", device, note + "; medians over interleaved rounds, maps read back")
    rows = []
    for arch in args.archs:
        for attention in args.attentions:
            model = build_model(arch, attention).to(device).eval()
            if device == "cuda":
                model = model.to(memory_format=torch.channels_last)
            for batch in args.batches:
                rows.append(bench_one(model, arch, attention, batch, args, device))
                torch.cuda.empty_cache() if device == "cuda" else None
    table(["arch", "attention", "batch", "maps", "bare ms", "capture ms", "capture/bare", "+act ms", "+act/bare"], rows)


def bench_one(model: torch.nn.Module, arch: str, attention: str, batch: int, args, device: str) -> list[str]:
    """One table row: medians of interleaved rounds."""
    x = torch.randn(batch, 3, args.size, args.size, device=device)
    if device == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)

    def bare() -> None:
        with inference(device):
            model(x)

    n_maps = [0]

    def capture() -> None:
        with AttentionRecorder(model) as rec, inference(device):
            model(x)
        n_maps[0] = len(rec.maps)

    def capture_act() -> None:
        with AttentionRecorder(model, activations=True) as rec, inference(device):
            model(x)
        rec.maps, rec.activations  # noqa: B018  (reading them moves them to the CPU)

    repeat = args.repeat or (15 if batch == 1 else 5)
    t = interleave({"bare": bare, "capture": capture, "act": capture_act}, repeat, warmup=1, device=device)
    return [
        arch,
        attention,
        str(batch),
        str(n_maps[0]),
        f"{med(t['bare']):.1f}",
        f"{med(t['capture']):.1f}",
        f"{ratio(t['capture'], t['bare']):.3f}",
        f"{med(t['act']):.1f}",
        f"{ratio(t['act'], t['bare']):.3f}",
    ]


if __name__ == "__main__":
    main()
