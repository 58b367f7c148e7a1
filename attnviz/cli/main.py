"""The ``attnviz`` command line.

attnviz list                               the registered attention types, their placement and paper
attnviz info --arch resnet50 [--attention cbam] [--size 224]
                                           parameters vs the plain network, and every map it captures
attnviz render IMAGE_OR_DIR... [--model SPEC] [--attention cbam] --out DIR [--weights W] [--labels L] [--offline]
                                           every map of every image, as PNG, .npy and result.json
attnviz inspect --model SPEC [--weights W] [--size N]
                                           every attention site found in a network, and what was skipped
attnviz train --data DIR --attention cbam --out CKPT   fine-tune on an image folder (attnviz.cli.fit)
attnviz eval --data SCENES                 accuracy and localisation of the demo checkpoints
attnviz compare IMG [IMG_B] [--attention A [B]] [--model M [M_B]] --out DIR
                                           two settings side by side (attnviz.compare)
attnviz stats DATA --out DIR [--masks M | --boxes B]
                                           dataset statistics, under torchrun too (attnviz.stats)
attnviz serve [--host] [--port] [--model SPEC --weights W --labels L] [--offline]
                                           the web app (attnviz.app)
"""

from __future__ import annotations

import argparse
import contextlib
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

from .. import AttentionRecorder, build_model, get_attention, list_attentions
from ..compare import add_compare_parser
from ..render import COLORMAPS, NORM_MODES
from ..sources.own import ARCHS, count_parameters
from .fit import add_eval_parser, add_train_parser
from .stats import add_stats_parser

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


def _add_serve_parser(sub: argparse._SubParsersAction) -> None:
    """``attnviz serve``, registered without importing gradio until it runs."""
    p = sub.add_parser("serve", help="start the web app (http://127.0.0.1:7860)")

    def run(args: argparse.Namespace) -> int:
        from ..app.server import _cmd_serve

        return _cmd_serve(args)

    add_serve_arguments(p)
    p.set_defaults(func=run)


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``attnviz serve`` and ``python app.py`` (here, so the command line does not import gradio)."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860 or GRADIO_SERVER_PORT)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: CUDA when available")
    p.add_argument("--size", type=int, default=None, help="short side the model sees (default: the weights')")
    p.add_argument(
        "--model",
        "--arch",
        dest="model",
        default=None,
        help="network shown first: resnet18..resnet101, timm:NAME, torchvision:NAME, path/file.py:fn, pkg.mod:fn",
    )
    p.add_argument("--attention", default=None, help="attention type shown first (default cbam)")
    p.add_argument("--weights", default=None, help="demo | imagenet | random | a checkpoint path")
    p.add_argument("--labels", default=None, help="class names of --model: one per line, or JSON")
    p.add_argument("--offline", action="store_true", help="never download (also ATTNVIZ_OFFLINE=1, HF_HUB_OFFLINE=1)")


def _default_weights(spec: str) -> str:
    """``render``'s weights when none are given: the shipped demo checkpoints for attnviz's resnet18, a library
    network's pretrained ones (downloaded once), else random (a user's own code builds its model as it does)."""
    from ..pipeline.core import model_request
    from ..sources.spec import Weights

    if spec == "resnet18":
        return Weights.DEMO.value
    spec = model_request(spec, None, None)[0]
    return (Weights.IMAGENET if spec.startswith(("timm:", "torchvision:")) else Weights.RANDOM).value


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


def _render_expect(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, Any]:
    """What result.json's ``settings`` say for a folder this ``render`` would write (a folder made otherwise is
    rendered again)."""
    expect = {"arch": args.model, "attention": args.attention, "weights": args.weights or "random"}
    expect["display"] = {k: settings[k] for k in ("cmap", "alpha", "norm", "topk")}
    return expect if args.size is None else {**expect, "size": args.size}


def _cmd_render(args: argparse.Namespace) -> int:
    from ..export import rendered, write_folder
    from ..pipeline.core import AnalyzeError, ModelCache, check_device
    from ..pipeline.image import ImageError
    from ..pipeline.run import analyze_many
    from ..stats.data import rank_env, shard

    if args.weights is None:
        args.weights = _default_weights(args.model)
    images = _images(args.inputs)
    if not images:
        print("no images found in " + ", ".join(args.inputs), file=sys.stderr)
        return 2
    settings = {"cmap": args.cmap, "alpha": args.alpha, "norm": args.norm, "topk": args.topk, "query": None}
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
        **_model_options(args),
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
    from ..pipeline.core import load_model

    s = result.settings
    model = load_model(args.model, args.attention, args.weights, s["device"], cache, **_model_options(args))
    check_result(result, model)


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    """What :func:`attnviz.load_model` takes from the command line besides the spec and weights (hashable values)."""
    options: dict[str, Any] = {}
    if args.labels:
        options["labels"] = args.labels
    if args.offline:
        options["offline"] = True
    if args.trust_pickle:
        options["trust_pickle"] = True
    for key in ("mean", "std"):
        if getattr(args, key):
            options[key] = tuple(getattr(args, key))
    if getattr(args, "size", None) and args.model not in ARCHS:  # a network not attnviz's: --size declares its input
        options["input_size"] = args.size
    return options


def _add_model_arguments(p: argparse.ArgumentParser, weights_default: str | None) -> None:
    """--model SPEC and what goes with it (render and inspect share them)."""
    p.add_argument(
        "--model",
        "--arch",
        dest="model",
        default="resnet18",
        help="resnet18..resnet101 (attnviz's, with --attention), timm:NAME, torchvision:NAME, path/file.py:fn or "
        "package.module:fn (default resnet18)",
    )
    p.add_argument("--attention", choices=list_attentions(), default=None, help="attnviz's own ResNets only")
    p.add_argument(
        "--weights",
        default=weights_default,
        help="a checkpoint file (a state dict, safetensors, DataParallel/compile prefixes), or: demo (resnet18), "
        "imagenet/pretrained (downloaded once into the library's cache), random",
    )
    p.add_argument("--labels", default=None, help="class names: one per line, or JSON (list or {index: name})")
    p.add_argument("--mean", type=float, nargs=3, default=None, help="normalisation mean (default: the weights')")
    p.add_argument("--std", type=float, nargs=3, default=None, help="normalisation std (default: the weights')")
    p.add_argument("--offline", action="store_true", help="never download (HF_HUB_OFFLINE=1, ATTNVIZ_OFFLINE=1 too)")
    p.add_argument(
        "--trust-pickle", action="store_true", help="load a checkpoint that holds pickled objects (runs its code)"
    )


def _cmd_inspect(args: argparse.Namespace) -> int:
    from ..pipeline.core import _build, capture_warning, model_request
    from ..pipeline.image import fixed_size

    try:
        spec, attention, weights = model_request(args.model, args.attention, args.weights)
        model = _build(spec, attention, weights, **_model_options(args))
    except ValueError as e:
        print(f"attnviz inspect: {e}", file=sys.stderr)
        return 2
    meta = model.weights_meta
    found = meta.get("input_size") or [224, 224]  # a user's network: the size it was found to run at (input_size.py)
    h, w = fixed_size(meta) or ((args.size, args.size) if args.size else (int(found[-2]), int(found[-1])))
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    with AttentionRecorder(model) as rec, torch.inference_mode():
        model(x)
    maps = rec.maps
    print(f"{spec}: {model.weights_source}; {len(maps)} attention maps at {h} x {w}")
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
    render = sub.add_parser("render", help="write every map of images (files or folders) to a folder")
    render.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    render.add_argument("--out", required=True, help="output folder; one subfolder per image")
    _add_model_arguments(render, None)
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
        "--overwrite",
        action="store_true",
        help="render every image again (default: skip those whose folder in --out is complete, from the same run)",
    )
    render.set_defaults(func=_cmd_render)
    inspect = sub.add_parser("inspect", help="every attention site found in a network, its kind and shape")
    _add_model_arguments(inspect, "random")
    inspect.add_argument(
        "--size", type=int, default=None, help="input side in pixels (default: the size the network runs at, or 224)"
    )
    inspect.set_defaults(func=_cmd_inspect)
    add_train_parser(sub)
    add_eval_parser(sub)
    add_compare_parser(sub)
    add_stats_parser(sub)
    _add_serve_parser(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:  # Ctrl-C: one line, the shell's code for SIGINT
        print(f"attnviz {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
