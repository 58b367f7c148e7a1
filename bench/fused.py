"""Fused attention capture: a bare ViT forward vs the same forward recorded, its attention weights computed explicitly.

    python bench/fused.py [--model vit_small_patch16_224] [--batches 1] [--keeps auto full] [--repeat 15]

timm's ViTs run their attention through ``F.scaled_dot_product_attention``; while recording, attnviz computes the
weights beside each call (attnviz/capture/fused.py) and keeps what ``keep`` says. Variants, interleaved in one run:
``bare`` (inference_mode forward) and one ``recorded`` per keep policy (the same inside AttentionRecorder, then
``rec.maps``: every map on the CPU). Random weights (pretrained=False). On CUDA: bfloat16 autocast. Targets: CPU batch
1 at 224 px <= 1.15x; CUDA batch 64 in bf16 <= 1.3x. Prints a markdown block for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse

import timm
import torch
from _common import header, inference, interleave, med, ratio, table

from attnviz import AttentionRecorder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_small_patch16_224")
    ap.add_argument("--batches", nargs="+", type=int, default=[1])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--keeps", nargs="+", default=["auto", "full"], help="keep policies to record with")
    ap.add_argument("--repeat", type=int, default=15, help="rounds (each runs every variant once)")
    ap.add_argument("--quick", action="store_true", help="3 rounds: a smoke run (not for the record)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None)
    args = ap.parse_args()
    if args.quick:
        args.repeat = 3
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    note = "CUDA: bfloat16 autocast" if device == "cuda" else "CPU: float32"
    header(
        "Fused attention capture (bench/fused.py)",
        device,
        f"{note}; timm {args.model}, random weights, {args.size} px; medians of interleaved rounds, maps read back",
    )
    model = timm.create_model(args.model, pretrained=False, img_size=args.size).to(device).eval()
    rows = [bench_one(model, batch, args, device) for batch in args.batches]
    cols = ["model", "batch", "maps"]
    for keep in args.keeps:
        cols += [f"{keep} ms", f"{keep}/bare"]
    table([*cols[:3], "bare ms", *cols[3:]], rows)


def bench_one(model: torch.nn.Module, batch: int, args: argparse.Namespace, device: str) -> list[str]:
    """One table row: the bare forward and each keep policy's recorded forward, interleaved."""
    x = torch.randn(batch, 3, args.size, args.size, device=device)

    def bare() -> None:
        with inference(device):
            model(x)

    n_maps: dict[str, int] = {}

    def recorded(keep: str):
        def run() -> None:
            with AttentionRecorder(model, keep=keep) as rec, inference(device):
                model(x)
            n_maps[keep] = len(rec.maps)

        return run

    with AttentionRecorder(model), inference(device):  # discovery: once per model, not timed
        model(x)
    variants = {"bare": bare} | {keep: recorded(keep) for keep in args.keeps}
    t = interleave(variants, args.repeat, warmup=1, device=device)
    row = [args.model, str(batch), str(n_maps[args.keeps[0]]), f"{med(t['bare']):.1f}"]
    for keep in args.keeps:
        row += [f"{med(t[keep]):.1f}", f"{ratio(t[keep], t['bare']):.3f}"]
    return row


if __name__ == "__main__":
    main()
