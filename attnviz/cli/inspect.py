"""``attnviz inspect --model SPEC``: every attention site found in a network, its kind and shape, and what was
skipped.

attnviz inspect --model SPEC [--weights W] [--size N]
"""

from __future__ import annotations

import argparse
import sys

import torch

from ..capture import AttentionRecorder
from .options import add_model_arguments, model_options

__all__ = ["add_inspect_parser"]


def _cmd_inspect(args: argparse.Namespace) -> int:
    from ..pipeline.core import capture_warning
    from ..sources.loading import build
    from ..sources.meta import meta_of
    from ..sources.spec import model_request

    try:
        request = model_request(args.model, args.attention, args.weights)
        spec, model = request.spec, build(request, **model_options(args))
    except ValueError as e:
        print(f"attnviz inspect: {e}", file=sys.stderr)
        return 2
    meta = meta_of(model)
    found = meta.preprocess.input_size or (224, 224)  # a user's network: the size it was found to run at
    h, w = meta.preprocess.fixed_size or ((args.size, args.size) if args.size else found)
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    with AttentionRecorder(model) as rec, torch.inference_mode():
        model(x)
    maps = rec.maps
    print(f"{spec}: {meta.source}; {len(maps)} attention maps at {h} x {w}")
    rows = [(m.name, m.kind, str(tuple(m.data.shape[1:])), m.how, m.layout) for m in maps]
    _table(["site", "kind", "shape", "found by", "computed as"], rows)
    kinds: dict[str, int] = {}
    for m in maps:
        kinds[m.kind] = kinds.get(m.kind, 0) + 1
    print("by kind: " + (", ".join(f"{k} {n}" for k, n in kinds.items()) or "none"))
    if rec.skipped:
        print(f"\nskipped ({len(rec.skipped)}), not attention:")
        _table(["site", "shape", "why"], [(n, str(s), why) for n, s, why in rec.skipped])
    if rec.unclassified:
        print(f"\nunclassified ({len(rec.unclassified)}): weights whose layout fits no kind (declare them with sites=)")
        _table(["site", "shape", "why"], [(n, str(s), why) for n, s, why in rec.unclassified])
    warning = capture_warning(len(maps), rec.unclassified, rec.skipped)
    if warning:
        print(f"\nwarning: {warning}")
    return 0


def _table(header: list[str], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    for row in [tuple(header), *rows]:
        print("  " + "  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())


def add_inspect_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``attnviz inspect`` on the CLI's subparsers."""
    inspect = sub.add_parser("inspect", help="every attention site found in a network, its kind and shape")
    add_model_arguments(inspect, "random")
    inspect.add_argument(
        "--size", type=int, default=None, help="input side in pixels (default: the size the network runs at, or 224)"
    )
    inspect.set_defaults(func=_cmd_inspect)
