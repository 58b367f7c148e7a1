"""The ``attnviz`` command line.

attnviz list                               the registered attention types, their placement and paper
attnviz info --arch resnet50 [--attention cbam] [--size 224]
                                           parameters vs the plain network, and every map it captures
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from . import AttentionRecorder, build_model, get_attention, list_attentions
from .models import ARCHS, count_parameters

__all__ = ["main"]


def _cmd_list(_: argparse.Namespace) -> int:
    print(f"{'name':8} {'placement':9} {'stages':8} {'kinds':28} paper")
    for name in list_attentions():
        s = get_attention(name)
        stages = ",".join(map(str, s.stages))
        print(f"{name:8} {s.placement:9} {stages:8} {', '.join(s.kinds):28} {s.paper}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    names = [args.attention] if args.attention else list_attentions()
    base = count_parameters(build_model(args.arch))
    print(f"{args.arch}: {base / 1e6:.3f} M parameters without attention")
    print(f"{'attention':10} {'params (M)':>10} {'vs plain':>9} {'maps':>5}  map shapes at {args.size}x{args.size}")
    for name in names:
        model = build_model(args.arch, name)
        n = count_parameters(model)
        with AttentionRecorder(model) as rec, torch.inference_mode():
            model(torch.zeros(1, 3, args.size, args.size))
        shapes = sorted({f"{m.kind}{tuple(m.data.shape[1:])}" for m in rec.maps})
        print(f"{name:10} {n / 1e6:10.3f} {(n - base) / base:+9.1%} {len(rec.maps):5}  {' '.join(shapes)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``attnviz`` console script."""
    parser = argparse.ArgumentParser(prog="attnviz", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the attention types").set_defaults(func=_cmd_list)
    info = sub.add_parser("info", help="parameters and captured maps of a model")
    info.add_argument("--arch", choices=list(ARCHS), default="resnet50")
    info.add_argument("--attention", choices=list_attentions())
    info.add_argument("--size", type=int, default=224, help="input side in pixels (default 224)")
    info.set_defaults(func=_cmd_info)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
