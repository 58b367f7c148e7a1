"""Capture overhead on networks attnviz did not build: a bare forward vs the same forward inside AttentionRecorder,
after the one discovery pass (cached), next to attnviz's own tapped networks.

    python bench/discover.py [--quick] [--batch 1] [--size 224]

Networks: torchvision's ResNet-50 with blog-style SE and CBAM modules put after each bottleneck's bn3 (found by
discovery: nn.Sigmoid attributes, a functional torch.sigmoid), timm's SE-ResNet-50 and torchvision's
EfficientNet-B0 (exact adapters), and attnviz's ResNet-50 + SE / CBAM (taps). Variants interleaved per network:
``bare`` and ``capture`` (recorder, maps read back to the CPU). Target (issue 10): capture/bare <= 1.05 at batch 1
on CPU for a discovered network, the tap path as before. Also prints what the discovery pass itself costs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _common import header, interleave, med, ratio, table
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.user_nets: the blog-style modules

from attnviz import AttentionRecorder, build_model
from tests.user_nets import CBAMBlog, SEBlog


def _blog(attn: Callable[[int], nn.Module]) -> nn.Module:
    """torchvision's ResNet-50 with ``attn(C)`` after every bottleneck's bn3 (before the residual addition)."""
    from torchvision.models import resnet50

    model = resnet50()
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in layer:
            block.bn3 = nn.Sequential(block.bn3, attn(block.bn3.num_features))
    return model


NETWORKS: dict[str, tuple[str, Callable[[], nn.Module]]] = {
    "resnet50 + blog SE": ("discovery", lambda: _blog(lambda c: SEBlog(c, 16))),
    "resnet50 + blog CBAM": ("discovery", lambda: _blog(CBAMBlog)),
    "timm seresnet50": ("adapter", lambda: __import__("timm").create_model("seresnet50")),
    "torchvision efficientnet_b0": ("adapter", lambda: __import__("torchvision").models.efficientnet_b0()),
    "attnviz resnet50 + se": ("tap", lambda: build_model("resnet50", "se")),
    "attnviz resnet50 + cbam": ("tap", lambda: build_model("resnet50", "cbam")),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="112 px, 5 rounds")
    args = ap.parse_args()
    if args.quick:
        args.size, args.repeat = 112, 5
    torch.manual_seed(0)
    header("Capture overhead on any network (bench/discover.py)", "cpu", "float32; medians over interleaved rounds")
    rows = []
    for name, (how, make) in NETWORKS.items():
        model = make().eval()
        x = torch.randn(args.batch, 3, args.size, args.size)
        with torch.inference_mode():
            t0 = time.perf_counter()
            model(x)
            t_bare = time.perf_counter() - t0
            t0 = time.perf_counter()
            with AttentionRecorder(model) as rec:  # the discovery pass (cached afterwards)
                model(x)
            n = len(rec.maps)
            t_first = time.perf_counter() - t0

        def bare(model: nn.Module = model, x: torch.Tensor = x) -> None:
            with torch.inference_mode():
                model(x)

        def capture(model: nn.Module = model, x: torch.Tensor = x) -> None:
            with AttentionRecorder(model) as rec, torch.inference_mode():
                model(x)
            rec.maps  # noqa: B018  (reading them moves them to the CPU)

        t = interleave({"bare": bare, "capture": capture}, args.repeat, warmup=1, device="cpu")
        rows.append(
            [
                name,
                how,
                str(n),
                f"{med(t['bare']):.1f}",
                f"{med(t['capture']):.1f}",
                f"{ratio(t['capture'], t['bare']):.3f}",
                f"{t_first / t_bare:.2f}",
            ]
        )
    table(["network", "found by", "maps", "bare ms", "capture ms", "capture/bare", "first pass/bare (once)"], rows)


if __name__ == "__main__":
    main()
