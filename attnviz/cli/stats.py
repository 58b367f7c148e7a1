"""``attnviz stats DATA --out DIR``: dataset-level attention statistics (:func:`attnviz.stats.run_stats`).

attnviz stats DATA --model SPEC | --arch A --attention T [--weights W] --out DIR [--masks M | --boxes B]
              [--batch-size N] [--limit N] [--size S] [--square] [--device cpu|cuda] [--restart]
torchrun --nproc-per-node=G [--nnodes=N ...] -m attnviz stats ...    shards the dataset across the ranks
"""

from __future__ import annotations

import argparse
import sys

from ..sources.select import choose_network
from .options import add_model_arguments, default_weights, model_options

__all__ = ["add_stats_parser"]


def _scorer(images: int) -> object:
    """The checks' per-image faithfulness scorer (stats does not import the checks: the command line joins them)."""
    if images <= 0:
        return None
    from ..checks import block_faithfulness

    return block_faithfulness


def _cmd_stats(args: argparse.Namespace) -> int:
    from ..stats.run import StatsError, run_stats

    if args.masks and args.boxes:
        print("attnviz stats: give --masks or --boxes, not both", file=sys.stderr)
        return 2
    weights = args.weights if args.weights is not None else default_weights(args.model)
    # as the page; args.model too, so that model_options sees the network that runs (--size for timm's)
    attention, args.model, weights = choose_network(args.attention, args.model, weights)
    try:
        summary = run_stats(
            args.data,
            args.out,
            model=args.model,
            attention=attention,
            weights=weights,
            masks=args.masks,
            boxes=args.boxes,
            batch_size=args.batch_size,
            limit=args.limit,
            size=args.size,
            square=args.square,
            chunk_size=args.chunk_size,
            workers=args.workers,
            device=args.device,
            restart=args.restart,
            faithfulness=_scorer(args.faithfulness),
            faithful_images=args.faithfulness,
            **model_options(args),
        )
    except StatsError as e:
        print(f"attnviz stats: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line; the finished chunks stay, and the same command resumes
        print(
            f"attnviz stats: interrupted; finished chunks are kept in {args.out}/shards: run the same command again "
            "to resume",
            file=sys.stderr,
        )
        return 130
    if summary is None:  # a rank other than 0: rank 0 writes
        return 0
    run = summary["run"]
    speed = f"{run['images_per_s']} images/s" if run["images_per_s"] else "every chunk was already done"
    print(
        f"{summary['images']} images ({summary['unreadable']} unreadable, {summary['mask_problems']} mask problems) "
        f"in {run['seconds']} s on {run['world_size']} process(es): {speed}"
    )
    for stage, corr in summary["stage_profile_correlation"].items():
        print(f"  {stage}: class profile correlation {corr:.3f}")
    for name, v in summary["localisation"].items():
        print(f"  {name}: pointing {v['pointing']:.3f}, energy {v['energy']:.3f}")
    print(f"report: {args.out}/report.md")
    return 0


def add_stats_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``attnviz stats`` on the CLI's subparsers."""
    p = sub.add_parser("stats", help="attention statistics over a dataset (class profiles, gates, localisation)")
    p.add_argument("data", metavar="DATA", help="ImageFolder-style folder (DATA/<class>/*.jpg) or a file list")
    p.add_argument("--out", required=True, help="output folder (tables/, figures/, report.md, shards/)")
    add_model_arguments(p, None)
    truth = p.add_mutually_exclusive_group()
    truth.add_argument("--masks", default=None, help="folder of object masks named like the images (nonzero = object)")
    truth.add_argument("--boxes", default=None, help="COCO JSON with the images' boxes")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward (default 32)")
    p.add_argument("--limit", type=int, default=None, help="the first N images only")
    p.add_argument("--size", type=int, default=None, help="short side the model sees (default: the weights')")
    p.add_argument("--square", action="store_true", help="stretch every image to size x size (full batches)")
    p.add_argument("--chunk-size", type=int, default=256, help="images per kept chunk (resume unit; default 256)")
    p.add_argument("--workers", type=int, default=2, help="processes reading images per rank (default 2)")
    p.add_argument("--device", default=None, help="cpu | cuda (rank i of a node: cuda:i; default: GPU if any)")
    p.add_argument(
        "--faithfulness",
        type=int,
        default=0,
        metavar="N",
        help="deletion/insertion/ROAD of each block's view, Grad-CAM, a centre prior and a random map on the first N "
        "images (many forwards per image; default 0: off)",
    )
    p.add_argument("--restart", action="store_true", help="discard finished chunks of an earlier run in --out")
    p.set_defaults(func=_cmd_stats)
