"""``attnviz render IMAGE_OR_DIR... --out DIR``: every map of every image, as PNG, .npy and result.json.

attnviz render IMAGE_OR_DIR... [--model SPEC] [--attention cbam] --out DIR [--weights W] [--labels L] [--offline]
               [--checks [--faithfulness]] [--overwrite] [--batch-size N] [--workers N]
    Folders are searched for images; under torchrun each rank renders its own share. PNG and chart encoding runs
    in writer processes beside the model; a folder already rendered by the same settings is skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import torch

from ..capture.fused import KEEP
from ..capture.rollout import FUSIONS
from ..render import COLORMAPS, NORM_MODES
from ..sources.select import choose_network
from .options import add_model_arguments, default_weights, model_options

__all__ = ["IMAGE_SUFFIXES", "add_render_parser"]


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}


def _images(paths: Sequence[str]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        else:
            found.append(p)
    return found


def _unique_stems(images: list[Path]) -> list[str]:
    """One output folder name per input; two inputs with the same name do not overwrite each other."""
    from ..render.naming import safe_name

    names: list[str] = []
    for path in images:
        stem = safe_name(path.stem)
        while stem in names:
            stem += "_"
        names.append(stem)
    return names


@contextlib.contextmanager
def _writers(workers: int) -> Iterator[Callable[..., Future]]:
    """``submit(fn, *args) -> Future``: in ``workers`` processes (PNG and chart encoding runs there, beside the
    model), or at once in this process when ``workers`` is 0."""
    if workers == 0:

        def run(fn: Callable[..., Any], *args: Any) -> Future:
            done: Future = Future()
            done.set_result(fn(*args))
            return done

        yield run
        return
    pool = ProcessPoolExecutor(workers, mp_context=_QuietSpawn())
    try:
        yield pool.submit
    except BaseException:  # an interrupt: writes not started yet never start; those running finish
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


class _QuietProcess(multiprocessing.get_context("spawn").Process):  # type: ignore[misc]
    """A writer process born with SIGINT ignored: Ctrl-C, which a terminal sends to its whole process group, is the
    main process's to handle. Ignored at the exec (a disposition the child inherits, and Python keeps), not by an
    initializer: a Ctrl-C while the child still imports would print its traceback."""

    def start(self) -> None:
        if threading.current_thread() is not threading.main_thread():  # signal handlers are the main thread's
            return super().start()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return super().start()
        finally:
            signal.signal(signal.SIGINT, previous)


class _QuietSpawn(type(multiprocessing.get_context("spawn"))):  # type: ignore[misc]
    """The spawn context whose processes are :class:`_QuietProcess`."""

    Process = _QuietProcess


def _fractions(text: str) -> tuple[float, float]:
    """``"0.5,0.3"`` -> (0.5, 0.3): a point as fractions of the image's width and height."""
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give X,Y as two fractions, e.g. 0.5,0.3") from None
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise argparse.ArgumentTypeError(f"{text!r}: X and Y are fractions of the image, between 0 and 1")
    return x, y


def _render_expect(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, Any]:
    """What result.json's ``settings`` say for a folder this ``render`` would write (a folder made otherwise is
    rendered again)."""
    from ..export import DISPLAY_KEYS

    expect = {"arch": args.model, "attention": args.attention, "weights": args.weights or "random"}
    expect["display"] = json.loads(json.dumps({k: settings.get(k) for k in DISPLAY_KEYS}))  # as result.json has it
    expect["keep"] = args.keep
    expect["view"] = settings.get("view")  # None: each kind's default (a folder rendered before had none)
    return expect if args.size is None else {**expect, "size": args.size}


def _cmd_render(args: argparse.Namespace) -> int:
    from ..export import rendered, write_folder
    from ..pipeline.core import AnalyzeError, ModelCache, check_device
    from ..pipeline.image import ImageError
    from ..pipeline.run import analyze_many
    from ..stats.data import rank_env, shard

    if args.faithfulness and not args.checks:
        print("--faithfulness is part of the checks: add --checks", file=sys.stderr)
        return 2
    if args.weights is None:
        args.weights = default_weights(args.model)
    args.attention, args.model, args.weights = choose_network(args.attention, args.model, args.weights)  # as the page
    images = _images(args.inputs)
    if not images:
        print("no images found in " + ", ".join(args.inputs), file=sys.stderr)
        return 2
    if not 0.0 <= args.discard_ratio < 1.0:
        print("--discard-ratio must be in [0, 1)", file=sys.stderr)
        return 2
    settings = {"cmap": args.cmap, "alpha": args.alpha, "norm": args.norm, "topk": args.topk, "query": args.query}
    settings["head"] = args.head
    off = args.rollout == "off"
    settings["rollout"] = False if off else {"fusion": args.rollout, "discard_ratio": args.discard_ratio}
    settings["view"] = None if args.channel_view == "gate-effect" else args.channel_view
    out = Path(args.out)
    try:
        device = check_device(args.device)
    except ValueError as e:
        print(f"attnviz render: {e}", file=sys.stderr)
        return 2
    stems = _unique_stems(images)  # from every input, so the names do not depend on the number of ranks
    rank, world, local_rank, _ = rank_env()
    if world > 1:  # under torchrun each rank renders its own share: every file is written once
        images, stems = shard(images, rank, world), shard(stems, rank, world)
        if device == "cuda":
            torch.cuda.set_device(local_rank)
    expect, total = _render_expect(args, settings), len(images)
    todo = [i for i, s in enumerate(stems) if args.overwrite or not rendered(out / s, expect, args.checks)]
    images, stems = [images[i] for i in todo], [stems[i] for i in todo]
    if len(images) < total:
        print(
            f"attnviz render: {total - len(images)} of {total} images already rendered in {out}/: skipped "
            "(--overwrite renders them again)",
            file=sys.stderr,
        )
    batch_size = args.batch_size or (16 if device == "cuda" else 1)
    workers = args.workers if args.workers is not None else (min(4, os.cpu_count() or 1) if len(images) > 1 else 0)
    n, failed, said = len(images), 0, False
    # (index, input, folder, pending write or None when skipped, top-1 prediction or the error), in input order
    pending: deque[tuple[int, Path, Path, Future | None, Any]] = deque()

    def report(limit: int) -> None:
        """Print the finished lines at the head, in input order; wait while more than ``limit`` are pending."""
        while pending and (pending[0][3] is None or pending[0][3].done() or len(pending) > limit):
            i, path, folder, write, info = pending.popleft()
            if write is None:
                print(f"[{i}/{n}] {path}: skipped: {info}", file=sys.stderr)
            else:
                files = write.result()
                top = f"top-1 {info[0]} {info[1]:.3f}" if info else "no predictions"
                print(f"[{i}/{n}] {path} -> {folder}/ ({len(files)} files; {top})")

    cache = ModelCache(maxsize=1)
    results = analyze_many(
        images,
        attention=args.attention,
        arch=args.model,
        weights=args.weights,
        device=device,
        size=args.size,
        cache=cache,
        batch_size=batch_size,
        keep=args.keep,
        **model_options(args),
    )
    with _writers(workers) as submit:
        try:
            for i, (path, stem, result) in enumerate(zip(images, stems, results, strict=True), 1):
                if isinstance(result, (ImageError, AnalyzeError)):  # this image cannot be used, or ran out of memory
                    failed += 1
                    pending.append((i, path, out / stem, None, result))
                else:
                    if not said:  # one model: what its maps leave out is said once per run
                        _warn(result, args.checks)
                        said = True
                    if args.checks:  # ablation, Grad-CAM agreement, randomisation: result.json's "checks"
                        _checks(result, args, cache)
                    write = submit(write_folder, result, settings, out / stem)
                    pending.append((i, path, out / stem, write, (result.predictions or [None])[0]))
                report(limit=2 * max(1, workers))  # a bounded number of results waits in memory
        except (ValueError, AnalyzeError) as e:  # the arch, attention or weights: every image would fail the same way
            print(f"attnviz render: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            for *_, write, _ in pending:
                if write is not None:
                    write.cancel()  # not started: never starts; running: finishes
            wait([w for *_, w, _ in pending if w is not None])
            written = sum(rendered(out / s, expect, args.checks) for s in stems)
            print(
                f"attnviz render: interrupted; {written} of {n} images written to {out}/ (the same command renders "
                "the rest)",
                file=sys.stderr,
            )
            return 130
        report(limit=0)
    print(f"{n - failed} of {n} images rendered into {out}/")
    return 1 if failed else 0


def _warn(result: Any, checks: bool) -> None:
    """Print what a model's maps leave out: no predictions (the output is not logits, so only the checks that need
    no class), no attention found, weights that could not be read."""
    from ..pipeline.core import NOT_LOGITS

    skip = "; --checks: ablation and Grad-CAM skipped (they follow a class), the randomisation check runs"
    lines = [] if result.predictions else [NOT_LOGITS + (skip if checks else "")]
    if result.capture_warning:
        lines.append(result.capture_warning)
    for line in lines:
        print(f"attnviz render: warning: {line}", file=sys.stderr)


def _checks(result: Any, args: argparse.Namespace, cache: Any) -> None:
    """``render --checks``: every block's checks on the model that made ``result`` (the cache's, the same key)."""
    from ..checks import check_result
    from ..pipeline.core import cached_model

    s = result.settings
    model = cached_model(args.model, args.attention, args.weights, s["device"], cache, **model_options(args))
    check_result(result, model, faithful=args.faithfulness)


def add_render_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``attnviz render`` on the CLI's subparsers."""
    render = sub.add_parser("render", help="write every map of images (files or folders) to a folder")
    render.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    render.add_argument("--out", required=True, help="output folder; one subfolder per image")
    add_model_arguments(render, None)
    render.add_argument(
        "--size",
        type=int,
        default=None,
        help="short side the model sees (default: the weights'); for a network not attnviz's, the input size it "
        "runs at (default: read from the network, see attnviz/input_size.py)",
    )
    render.add_argument("--device", choices=["cpu", "cuda"], default=None)
    render.add_argument("--cmap", choices=list(COLORMAPS), default="turbo")
    render.add_argument("--alpha", type=float, default=0.5)
    render.add_argument("--norm", choices=list(NORM_MODES), default="map")
    render.add_argument("--topk", type=int, default=32)
    render.add_argument(
        "--channel-view",
        choices=["gate-effect", "gate-weighted"],
        default="gate-effect",
        help="a channel gate's spatial view (SE, ECA): its gate effect, where the gate changes the features against "
        "uniform gating (default), or the gate-weighted mean activation (the former view, which shows the "
        "activations more than the gates)",
    )
    render.add_argument(
        "--query",
        type=_fractions,
        default=None,
        metavar="X,Y",
        help="the query of pairwise, token and window views, as fractions of the image's width and height (e.g. "
        "0.5,0.3); default: each kind's own (the centre; a transformer's class token)",
    )
    render.add_argument(
        "--head",
        type=int,
        default=None,
        help="token and window views show this head (0-based; kept with --keep full, or the prefix rows of every "
        "head by default) instead of the head mean",
    )
    render.add_argument(
        "--keep",
        choices=KEEP,
        default="auto",
        help="what is kept of token attention: the head mean plus each head's prefix-token rows (auto, rows), the head "
        "mean only, or every head's full matrix (full)",
    )
    render.add_argument(
        "--rollout",
        choices=[*FUSIONS, "off"],
        default="mean",
        help="attention rollout's head fusion (Abnar & Zuidema 2020), or off; max and min need --keep full",
    )
    render.add_argument("--discard-ratio", type=float, default=0.0, help="rollout: share of weakest links dropped")
    render.add_argument(
        "--batch-size", type=int, default=None, help="images per forward (same size only; default 16 on CUDA, 1 on CPU)"
    )
    render.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes writing files beside the model (default min(4, CPUs); 0: none)",
    )
    render.add_argument(
        "--checks",
        action="store_true",
        help="per block: ablation, Grad-CAM agreement and the randomisation check (checks in result.json)",
    )
    render.add_argument(
        "--faithfulness",
        action="store_true",
        help="with --checks: also each block's deletion/insertion/ROAD curves against Grad-CAM, a centre prior and "
        "a random map (result.json checks.<block>.faithfulness; 60 images per map: over 100x a forward on a CPU)",
    )
    render.add_argument(
        "--overwrite",
        action="store_true",
        help="render every image again (default: skip those whose folder in --out is complete, from the same run)",
    )
    render.set_defaults(func=_cmd_render)
