"""``attnviz stats``: attention statistics over a whole dataset, sharded across torchrun ranks.

The dataset is cut into chunks of consecutive images; rank ``r`` of ``W`` takes chunks ``r, r + W, ...``, reads
only their images (a DataLoader with workers; pinned memory, channels_last and bfloat16 autocast on CUDA) and
keeps each finished chunk's partial statistics (:mod:`attnviz.stats.accumulate`) in ``OUT/shards/``. A rerun
with the same data and settings skips the chunks already there (resume). Rank 0 gathers every chunk's partial
through ``torch.distributed`` and adds them in chunk order (sums and counts: the result does not depend on the
number of processes), then writes the tables, figures and report. Without torchrun one process does it all.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from ..capture.recorder import AttentionRecorder
from ..pipeline.core import NOT_LOGITS, capture_warning
from ..pipeline.distributed import backend_for, resolve_device
from ..sources.loading import build
from ..sources.meta import meta_of, short_side
from ..sources.spec import model_request
from .accumulate import BINS, FLAT_TOL, accumulate, merge, new_partial
from .data import GroundTruth, Listing, StatsDataset, chunks, list_data, rank_env
from .faithful import Scorer, add_rows

__all__ = ["StatsError", "run_stats"]


class StatsError(ValueError):
    """A run that cannot start: bad data, a folder made with other settings, a device this rank cannot use."""


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, dynamic_ncols=True, unit="img")


def _model(spec: str, attention: str | None, weights: str | None, device: torch.device, **options: Any) -> nn.Module:

    model = build(model_request(spec, attention, weights), **options).to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def model_notes(net: nn.Module, short: int) -> list[str]:
    """What the statistics of ``net`` will lack, from one blank recorded forward: predictions (its output is not
    class logits) and attention (none found, or weights it could not read:
    :func:`attnviz.pipeline.core.capture_warning`)."""

    h, w = meta_of(net).preprocess.fixed_size or (short, short)
    param = next(iter(net.parameters()), None)
    x = torch.zeros(1, 3, h, w, device=param.device if param is not None else "cpu")
    with AttentionRecorder(net) as rec, torch.inference_mode():
        output = net(x)
    notes = [] if isinstance(output, torch.Tensor) and output.dim() == 2 else [f"{NOT_LOGITS}: no accuracy"]
    warning = capture_warning(len(rec.maps), rec.unclassified, rec.skipped)
    return notes + ([warning] if warning else [])


def _label_map(classes: list[str], categories: list[str]) -> torch.Tensor | None:
    """model class index -> dataset class index (-1 for none), when every dataset class is one of the model's."""
    if not classes or any(c not in categories for c in classes):
        return None
    index = {c: i for i, c in enumerate(classes)}
    return torch.tensor([index.get(c, -1) for c in categories])


def _chunk_file(folder: Path, k: int) -> Path:
    return folder / f"chunk-{k:06d}.pt"


def _load_chunk(path: Path) -> dict | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged file is computed again
        return None


def _save_chunk(path: Path, partial: dict) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(partial, tmp)
    os.replace(tmp, path)  # atomic: an interrupted write leaves no half chunk


def _check_manifest(shards: Path, manifest: dict, restart: bool) -> str | None:
    """Rank 0: start or resume ``shards``; an error message when it holds another run's chunks."""
    path = shards / "manifest.json"
    if restart and shards.exists():
        shutil.rmtree(shards)
    if path.is_file():
        old = json.loads(path.read_text())
        if old != manifest:
            diff = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            return (
                f"{shards} holds chunks of another run (different {', '.join(diff)}): use another --out, "
                "or --restart to discard them"
            )
        return None
    shards.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return None


def run_stats(
    data: str | Path,
    out: str | Path,
    *,
    model: str = "resnet18",
    attention: str | None = None,
    weights: str | None = "random",
    masks: str | Path | None = None,
    boxes: str | Path | None = None,
    batch_size: int = 32,
    limit: int | None = None,
    size: int | None = None,
    square: bool = False,
    chunk_size: int = 256,
    workers: int = 2,
    grid: int = 32,
    tolerance: float = 0.05,
    device: str | None = None,
    restart: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    faithfulness: Scorer | None = None,
    faithful_images: int = 0,
    **options: Any,
) -> dict[str, Any] | None:
    """Run the statistics of ``data`` and write them to ``out`` (rank 0); see the module docstring.

    Args:
        data: an ImageFolder-style folder or a file list (:func:`attnviz.stats.data.list_data`).
        out: the output folder (``shards/`` inside it keeps finished chunks).
        model, attention, weights, options: the network, as for :func:`attnviz.analyze`.
        masks, boxes: ground truth for the pointing game and energy in mask (a mask folder, or COCO JSON).
        batch_size: images per forward (consecutive images of the same input size).
        limit: the first N images only.
        size: short side the model sees (default: the weights'); ``square`` stretches to size x size.
        chunk_size: images per kept chunk; part of the run's identity (a resume must use the same).
        workers: DataLoader processes reading images per rank.
        grid: side of the grid the mean spatial maps are kept on.
        tolerance: pointing-game tolerance as a fraction of the input's shorter side.
        device: ``cpu``, ``cuda`` (this rank's GPU) or ``None`` (a GPU when there is one).
        restart: discard kept chunks first.
        faithfulness: scores one image's blocks (:func:`attnviz.checks.block_faithfulness`; the command line hands
            it in), for the first ``faithful_images`` images of the dataset (:mod:`attnviz.stats.faithful`).

    Returns:
        rank 0: the finished statistics (:func:`attnviz.stats.report.write_report`'s summary); other ranks: None.

    Raises:
        StatsError: unusable data, a folder holding another run's chunks, a device this rank cannot use.
    """

    rank, world, local_rank, local_world = rank_env()
    try:
        dev = resolve_device(device, local_rank, torch.cuda.device_count(), local_world)
    except ValueError as e:
        raise StatsError(str(e)) from None
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    started = world > 1 and not dist.is_initialized()
    if started:
        dist.init_process_group(backend_for(dev))
    try:
        try:
            listing = list_data(data, limit)
        except ValueError as e:
            raise StatsError(str(e)) from None
        net = _model(model, attention, weights, dev, **options)
        meta = meta_of(net).weights_meta()
        short = short_side(meta, size)
        notes = model_notes(net, short) if rank == 0 else []
        for note in notes:  # said once, before the run: no accuracy, no attention, weights that cannot be read
            log(f"attnviz stats: warning: {note}")
        out = Path(out)
        shards = out / "shards"
        manifest = {
            "data": str(Path(data).resolve()),
            "fingerprint": listing.fingerprint(),
            "images": len(listing.files),
            "model": model,
            "attention": attention,
            "weights": weights,
            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(options.items())},
            "size": short,
            "square": square,
            "masks": None if masks is None else str(Path(masks).resolve()),
            "boxes": None if boxes is None else str(Path(boxes).resolve()),
            "chunk_size": chunk_size,
            "grid": grid,
            "tolerance": tolerance,
            "bins": BINS,
            "flat_tol": FLAT_TOL,
            **({"faithful_images": faithful_images} if faithfulness is not None and faithful_images > 0 else {}),
        }
        error = _check_manifest(shards, manifest, restart) if rank == 0 else None
        if world > 1:
            box = [error]
            dist.broadcast_object_list(box, src=0)
            error = box[0]
        if error:
            raise StatsError(error)
        all_chunks = chunks(len(listing.files), chunk_size)
        mine = list(range(rank, len(all_chunks), world))
        todo = [k for k in mine if _load_chunk(_chunk_file(shards, k)) is None]
        if len(todo) < len(mine):
            log(f"rank {rank}: {len(mine) - len(todo)} of {len(mine)} chunks already done in {shards}, resuming")
        t0 = time.perf_counter()
        ran = _run_chunks(
            net,
            listing,
            todo,
            all_chunks,
            shards,
            meta,
            short,
            square,
            GroundTruth(masks, boxes),
            batch_size,
            workers,
            grid,
            tolerance,
            dev,
            progress and rank == 0,
            rank,
            world,
            faithfulness if faithful_images > 0 else None,
            faithful_images,
        )
        parts = [(k, _load_chunk(_chunk_file(shards, k))) for k in mine]
        missing = [k for k, p in parts if p is None]
        if missing:
            raise RuntimeError(f"rank {rank}: chunks {missing} could not be read back from {shards}")
        counts = [ran]
        if world > 1:
            gathered: list | None = [None] * world if rank == 0 else None
            dist.gather_object(parts, gathered, dst=0)
            counted: list | None = [None] * world if rank == 0 else None
            dist.gather_object(ran, counted, dst=0)
            if rank == 0:
                parts = [p for g in gathered for p in g]  # type: ignore[union-attr]
                counts = counted  # type: ignore[assignment]
        elapsed = time.perf_counter() - t0
        if rank != 0:
            return None
        total = new_partial()
        for _, p in sorted(parts, key=lambda kp: kp[0]):  # chunk order: the sum does not depend on the ranks
            total = merge(total, p)
        from .report import write_report

        run = {
            "world_size": world,
            "device": str(dev),
            "processed_now": sum(counts),
            "seconds": round(elapsed, 3),
            "images_per_s": round(sum(counts) / elapsed, 2) if sum(counts) and elapsed > 0 else None,
            "chunks": len(all_chunks),
            "model_weights": meta_of(net).source,
            "input_short_side": short,
            "notes": notes,
        }
        return write_report(out, total, listing, manifest, run)
    finally:
        if started and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _run_chunks(
    net: nn.Module,
    listing: Listing,
    todo: list[int],
    all_chunks: list[range],
    shards: Path,
    meta: dict[str, Any],
    short: int,
    square: bool,
    truth: GroundTruth,
    batch_size: int,
    workers: int,
    grid: int,
    tolerance: float,
    dev: torch.device,
    show: bool,
    rank: int,
    world: int,
    faithfulness: Scorer | None = None,
    faithful_images: int = 0,
) -> int:
    """Run ``todo`` chunks through the model, keeping each finished chunk; return the images read."""
    indices = [i for k in todo for i in all_chunks[k]]
    if not indices:
        return 0
    chunk_of = {i: k for k in todo for i in all_chunks[k]}
    last_of = {k: all_chunks[k][-1] for k in todo}
    cuda = dev.type == "cuda"
    label_map = _label_map(listing.classes, meta.get("categories", []))
    labels = torch.tensor(listing.labels)
    dataset = StatsDataset(listing, indices, meta, short, square, truth)
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        pin_memory=cuda,
        prefetch_factor=2 * batch_size if workers else None,
        persistent_workers=False,
    )
    bar = _progress(len(indices), f"stats rank {rank}/{world}" if world > 1 else "stats", show)
    partial, batch = new_partial(), []

    def flush() -> None:
        nonlocal batch
        if batch:
            _forward(net, batch, partial, labels, label_map, tolerance, grid, dev)
            bar.update(len(batch))
            batch = []

    try:
        for i, x, mask, problem in loader:
            if problem is not None:
                partial["problems"].append((i, problem))
            if x is None:
                bar.update(1)
            else:
                if faithfulness is not None and i < faithful_images:
                    add_rows(partial, i, faithfulness(net, x[None].to(dev)))
                if batch and (x.shape != batch[0][1].shape or len(batch) == batch_size):
                    flush()
                batch.append((i, x, mask))
            k = chunk_of[i]
            if i == last_of[k]:
                flush()
                _save_chunk(_chunk_file(shards, k), partial)
                partial = new_partial()
    finally:
        bar.close()
    return len(indices)


@torch.inference_mode()
def _forward(
    net: nn.Module,
    batch: list[tuple[int, torch.Tensor, torch.Tensor | None]],
    partial: dict,
    labels: torch.Tensor,
    label_map: torch.Tensor | None,
    tolerance: float,
    grid: int,
    dev: torch.device,
) -> None:
    cuda = dev.type == "cuda"
    idx = torch.tensor([i for i, _, _ in batch])
    x = torch.stack([x for _, x, _ in batch])
    if cuda:
        x = x.pin_memory().to(dev, non_blocking=True).contiguous(memory_format=torch.channels_last)
    with (
        AttentionRecorder(net, activations=True) as rec,
        torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda),
    ):
        output = net(x)
    preds = None
    if label_map is not None and isinstance(output, torch.Tensor) and output.dim() == 2:
        preds = label_map[output.argmax(1).cpu()]
    h, w = int(x.shape[2]), int(x.shape[3])
    has_mask = torch.tensor([m is not None for _, _, m in batch])
    masks = None
    if bool(has_mask.any()):
        masks = torch.stack([m if m is not None else torch.zeros(h, w, dtype=torch.bool) for _, _, m in batch])
    accumulate(
        partial,
        rec.maps,
        rec.activations,
        labels[idx],
        predictions=preds,
        masks=masks,
        has_mask=has_mask,
        tolerance=round(tolerance * min(h, w)),
        grid=grid,
    )
