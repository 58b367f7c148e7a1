"""``attnviz compare``: two settings side by side, with one shared normalisation and their difference maps
(:mod:`attnviz.comparison`).

attnviz compare IMAGE [IMAGE_B] [--attention A [B]] [--model M [M_B]] [--weights W [W_B]] --out DIR
    each of --attention, --model, --weights takes one value (both sides) or two (A, B)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..blocks import list_attentions
from ..comparison import compare, compare_files
from ..pipeline import AnalyzeError, analyze
from ..pipeline.image import ImageError
from ..render import COLORMAPS
from ..sources.select import choose_network
from .options import default_weights

__all__ = ["add_compare_parser"]


def _two(values: list[str] | None, name: str) -> tuple[Any, Any]:
    if not values:
        return None, None
    if len(values) > 2:
        raise ValueError(f"--{name} takes one or two values, got {len(values)}")
    return values[0], values[-1]


def _cmd_compare(args: argparse.Namespace) -> int:
    try:
        img_a, img_b = _two(args.images, "images")
        att_a, att_b = _two(args.attention, "attention")
        mod_a, mod_b = _two(args.model, "model")
        mod_a, mod_b = mod_a or "resnet18", mod_b or "resnet18"
        w_a, w_b = _two(args.weights, "weights")
        w_a, w_b = w_a or default_weights(mod_a), w_b or default_weights(mod_b)
        # as the page: sk on the demo runs sk_pre, se on ImageNet weights timm's SE-ResNet
        sides = [(img_a, *choose_network(att_a, mod_a, w_a)), (img_b, *choose_network(att_b, mod_b, w_b))]
        if sides[0] == sides[1]:
            raise ValueError("both sides are the same: give two images, two --attention, --model or --weights values")
        results = [
            analyze(i, attention=a, arch=m, weights=w, device=args.device, size=args.size) for i, a, m, w in sides
        ]
    except (ValueError, ImageError, AnalyzeError) as e:
        print(f"attnviz compare: {e}", file=sys.stderr)
        return 2
    labels = [f"{Path(i).name} · {m} · {a or 'plain'} · {w}" for i, a, m, w in sides]
    cmp = compare(results[0], results[1], label_a=labels[0], label_b=labels[1])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in compare_files(cmp, args.cmap, args.alpha):
        (out / name).write_bytes(data)
    for p in cmp.pairs:
        print(f"{p.key:10} spearman {p.scores['spearman']:+.2f}  top-20% IoU {p.scores['top20_iou']:.2f}")
    print(f"{len(cmp.pairs)} {cmp.unit} pairs written into {out}/")
    return 0 if cmp.pairs else 1


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    """``attnviz compare``: each of --attention, --model, --weights takes one value (both sides) or two (A, B)."""
    p = sub.add_parser("compare", help="two settings side by side: shared normalisation and difference maps")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="one image (both sides) or two (A, B)")
    p.add_argument("--attention", nargs="+", choices=list_attentions(), help="one or two attention types")
    p.add_argument("--model", "--arch", nargs="+", help="one or two model specs (default resnet18)")
    p.add_argument("--weights", nargs="+", help="one or two: demo, imagenet, random or checkpoint paths")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", type=int, default=None, help="short side the model sees (default: the weights')")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--cmap", choices=list(COLORMAPS), default="turbo")
    p.add_argument("--alpha", type=float, default=0.5)
    p.set_defaults(func=_cmd_compare)
