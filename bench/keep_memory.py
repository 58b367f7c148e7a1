"""What each keep policy holds of a big ViT's token attention, and the memory limit's refusal.

    python bench/keep_memory.py [--model vit_base_patch14_reg4_dinov2] [--size 518] [--limit-mib 512]

Random weights (pretrained=False), one image, CPU. For ``keep`` = rows, mean and full: the maps' bytes
(``data`` plus the per-head prefix ``rows``) and the recorded forward's time (after the discovery forward); then
``keep="full"`` under ``memory_limit`` and the :class:`~attnviz.capture.fused.MemoryLimitError` it raises.
"""

from __future__ import annotations

import argparse
import time

import timm
import torch

from attnviz import AttentionRecorder
from attnviz.capture.fused import MemoryLimitError


def _bytes(maps: list) -> int:
    """Bytes the maps hold: ``data`` and the per-head prefix ``rows`` where kept."""
    held = 0
    for m in maps:
        held += m.data.numel() * m.data.element_size()
        if m.rows is not None:
            held += m.rows.numel() * m.rows.element_size()
    return held


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit_base_patch14_reg4_dinov2")
    ap.add_argument("--size", type=int, default=518)
    ap.add_argument("--limit-mib", type=int, default=512)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, img_size=args.size).eval()
    x = torch.randn(1, 3, args.size, args.size)  # (B, 3, H, W)
    print(f"{args.model} at {args.size} px, CPU, one image\n\n| keep | maps | data shape | kept | recorded forward |")
    print("|---|---|---|---|---|")
    for keep in ("rows", "mean", "full"):
        with AttentionRecorder(model, keep=keep), torch.inference_mode():
            model(x)  # the discovery forward
        with AttentionRecorder(model, keep=keep) as rec, torch.inference_mode():
            t = time.perf_counter()
            model(x)
            dt = time.perf_counter() - t
        shape = tuple(rec.maps[0].data.shape)
        print(f"| {keep} | {len(rec.maps)} | {shape} | {_bytes(rec.maps) / 2**20:.1f} MiB | {dt:.2f} s |")
    try:
        with AttentionRecorder(model, keep="full", memory_limit=args.limit_mib * 2**20), torch.inference_mode():
            model(x)
        print(f"\nkeep='full' under {args.limit_mib} MiB: not refused")
    except MemoryLimitError as e:
        print(f"\nkeep='full' under {args.limit_mib} MiB: refused: {e}")


if __name__ == "__main__":
    main()
