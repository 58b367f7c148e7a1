"""``attnviz list`` and ``attnviz info``: the registered attention types; a model's parameters and maps.

attnviz list                               the registered attention types, their placement and paper
attnviz info --arch resnet50 [--attention cbam] [--size 224]
                                           parameters vs the plain network, and every map it captures
"""

from __future__ import annotations

import argparse

import torch

from ..blocks import get_attention, list_attentions
from ..capture import AttentionRecorder
from ..sources import build_model
from ..sources.own import ARCHS, count_parameters

__all__ = ["add_info_parser", "add_list_parser"]


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


def add_list_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``attnviz list`` on the CLI's subparsers."""
    sub.add_parser("list", help="list the attention types").set_defaults(func=_cmd_list)


def add_info_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``attnviz info`` on the CLI's subparsers."""
    info = sub.add_parser("info", help="parameters and captured maps of a model")
    info.add_argument("--arch", choices=list(ARCHS), default="resnet50")
    info.add_argument("--attention", choices=list_attentions())
    info.add_argument("--size", type=int, default=224, help="input side in pixels (default 224)")
    info.set_defaults(func=_cmd_info)
