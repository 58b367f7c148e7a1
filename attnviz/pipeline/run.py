"""Many images through one model: decoding in threads, same-size images batched, one map transfer per batch.

    for result in analyze_many(paths, attention="cbam", device="cuda", batch_size=32):
        ...  # one Result per input, in input order; an ImageError in place of an input that cannot be used

Each result is what :func:`attnviz.analyze` returns for that image alone: the same maps (up to floating-point
summation order, which a batch may change), predictions, settings and notes. On CUDA a batch is stacked in
pinned memory and copied without blocking, the model runs in channels_last under bfloat16 autocast, and its
maps and activations come back in one transfer (one host sync per batch, none per map).
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..capture import AttentionMap, AttentionRecorder
from ..sources.loading import model_info
from ..sources.meta import meta_of, short_side
from .core import (
    NOT_LOGITS,
    OOM_MESSAGE,
    AnalyzeError,
    ModelCache,
    Result,
    _is_oom,
    cached_model,
    check_device,
    model_input,
    release_after_oom,
    run_settings,
    top_classes,
)
from .image import Decoded, ImageError, decode_image

__all__ = ["analyze", "analyze_many"]

Source = str | Path | bytes | Image.Image | np.ndarray


def analyze(
    image: str | Path | bytes | Image.Image | np.ndarray,
    *,
    attention: str | None,
    arch: str = "resnet18",
    weights: str | None = "random",
    device: str | None = None,
    size: int | None = None,
    topk: int = 5,
    cache: ModelCache | None = None,
    keep: str = "auto",
    **options: Any,
) -> Result:
    """Run ``image`` through ``arch`` with ``attention`` blocks and capture every block's weights.

    Args:
        image: a path, encoded bytes, a PIL image or a uint8 array (any mode; see :func:`decode_image`).
        attention: a registry name, or ``None`` for the plain network (attnviz's own ResNets only).
        arch: a model spec (:func:`attnviz.load_model`): attnviz's ``resnet18`` .. ``resnet101``, ``timm:NAME``,
            ``torchvision:NAME``, ``path/file.py:fn`` or ``pkg.mod:fn`` (its own attention is found by the
            recorder), or a timm network of :data:`attnviz.sources.timm.TIMM_MODELS` by its name.
        weights: ``"random"``/``None`` (untrained), ``"demo"`` (the shipped checkpoints, resnet18),
            ``"imagenet"`` (a library network's pretrained weights), or a checkpoint path.
        device: ``"cuda"`` or ``"cpu"``; default: CUDA when available (autocast bfloat16 there).
        size: short side the image is resized to (aspect kept); default from the weights' metadata.
        topk: number of predictions.
        cache: where built models are kept (default: a process-wide LRU of 4).
        keep: what the recorder keeps of token attention (:class:`attnviz.capture.fused.KeepPolicy`: ``"auto"``,
            the class-token rows per head + the head mean; ``"full"``, every head's matrix; ``"mean"``; ``"rows"``).
        options: ``labels``, ``offline``, ``trust_pickle`` for :func:`attnviz.load_model`.

    Raises:
        ImageError: the image cannot be used (message for the user).
        ValueError: an unknown arch, attention or weights.
        AnalyzeError: the model cannot be loaded or run (e.g. GPU out of memory).
    """
    (out,) = analyze_many(  # one pipeline: a single image is a batch of one
        [image],
        attention=attention,
        arch=arch,
        weights=weights,
        device=device,
        size=size,
        topk=topk,
        cache=cache,
        batch_size=1,
        decode_workers=0,  # one image: decoded in this thread
        keep=keep,
        **options,
    )
    if isinstance(out, (ImageError, AnalyzeError)):  # analyze_many reports them per input; one image raises
        raise out
    return out


@dataclass
class _Item:
    decoded: Decoded
    x: torch.Tensor  # (1, 3, H, W) float32, CPU
    timings: dict[str, float]


def analyze_many(
    images: Iterable[Source],
    *,
    attention: str | None,
    arch: str = "resnet18",
    weights: str | None = "random",
    device: str | None = None,
    size: int | None = None,
    topk: int = 5,
    cache: ModelCache | None = None,
    batch_size: int = 16,
    decode_workers: int | None = None,
    keep: str = "auto",
    **options: Any,
) -> Iterator[Result | ImageError | AnalyzeError]:
    """Analyze ``images`` in batches; yield one result per input, in order.

    Consecutive inputs whose preprocessed size is the same share a batch (up to ``batch_size``); decoding and
    preprocessing run ahead in ``decode_workers`` threads while the model runs.

    Args:
        images: paths, encoded bytes, PIL images or uint8 arrays (see :func:`attnviz.analyze`).
        attention, arch, weights, device, size, topk, cache, keep: as for :func:`attnviz.analyze`.
        batch_size: most images per forward (>= 1).
        decode_workers: threads decoding ahead, or 0 to decode in the calling thread. Default: 2 on CUDA (the CPU
            is free while the GPU computes), 0 on the CPU, where a decode thread's torch ops start a second
            intra-op thread team that competes with the forward (each image took 1.4x as long, ResNet-50, 2 cores).
        options: ``labels``, ``offline``, ``trust_pickle``, ``mean``, ``std`` for :func:`attnviz.load_model`.

    Yields:
        a :class:`Result` per input; an :class:`ImageError` for an input that cannot be used; an
        :class:`AnalyzeError` for an image that does not fit in GPU memory even alone.

    Raises:
        ValueError: an unknown arch, attention, weights or device (before any image is read).
        AnalyzeError: the model cannot be loaded.
    """
    device = check_device(device)
    if decode_workers is None:
        decode_workers = 2 if device == "cuda" else 0
    if batch_size < 1 or decode_workers < 0:
        raise ValueError(f"batch_size must be >= 1 and decode_workers >= 0, got {batch_size} and {decode_workers}")
    model = cached_model(arch, attention, weights, device, cache, **options)
    meta = meta_of(model)
    short = short_side(meta.preprocess, size)
    common = {
        "model": model_info(model, arch, attention, weights),
        "settings": {**run_settings(arch, attention, weights, device, short, topk), "keep": keep},
        "categories": meta.categories,
        "keep": keep,
    }

    def prepare(source: Source) -> _Item | ImageError:
        try:
            t0 = time.perf_counter()
            decoded = decode_image(source)
            t1 = time.perf_counter()
            x = model_input(decoded.image, meta.preprocess, short)
            t2 = time.perf_counter()
        except ImageError as e:
            return e
        return _Item(decoded, x, {"decode": (t1 - t0) * 1e3, "preprocess": (t2 - t1) * 1e3})

    window = 2 * batch_size + decode_workers  # inputs decoded ahead, at most
    pool_ = ThreadPoolExecutor(decode_workers, thread_name_prefix="attnviz-decode") if decode_workers else _Inline()
    with pool_ as pool:
        sources = iter(images)
        ahead: deque[Future] = deque()

        def fill() -> None:
            while len(ahead) < window:
                try:
                    ahead.append(pool.submit(prepare, next(sources)))
                except StopIteration:
                    return

        batch: list[_Item] = []
        try:
            fill()
            while ahead:
                item = ahead.popleft().result()
                fill()
                if isinstance(item, ImageError):
                    yield from _run(model, batch, device, topk, common, cache)
                    batch = []
                    yield item
                    continue
                if batch and (item.x.shape != batch[0].x.shape or len(batch) == batch_size):
                    yield from _run(model, batch, device, topk, common, cache)
                    batch = []
                batch.append(item)
            yield from _run(model, batch, device, topk, common, cache)
        finally:  # closed early (an interrupt, a caller that stops): the decodes not started yet never start
            for future in ahead:
                future.cancel()


class _Inline:
    """An executor that runs each task at once in the calling thread (``decode_workers=0``)."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Any, *args: Any) -> Future:
        done: Future = Future()
        done.set_result(fn(*args))
        return done


def _run(
    model: nn.Module, batch: list[_Item], device: str, topk: int, common: dict[str, Any], cache: ModelCache | None
) -> Iterator[Result | AnalyzeError]:
    """One forward for ``batch`` (same-size inputs); on GPU out of memory, the images one by one."""
    if not batch:
        return
    t0 = time.perf_counter()
    ran = _forward(model, batch, device, topk, common["keep"])
    if ran is None:
        # Out of memory. _forward has returned, so the batch's input, pending maps, logits and the error's
        # traceback are gone: freeing the cache now gives their memory back before the retry.
        release_after_oom(cache, keep=model)
        if len(batch) == 1:
            yield AnalyzeError(OOM_MESSAGE)
            return
        for it in batch:
            yield from _run(model, [it], device, topk, common, cache)
        return
    maps, acts, top_p, top_i, t1, t2, found = ran
    n = len(batch)
    categories = common["categories"]
    for i, it in enumerate(batch):
        # copies, not views of the batch: a result kept or sent to another process carries only its own maps
        timings = {**it.timings, "forward": (t1 - t0) * 1e3 / n, "capture": (t2 - t1) * 1e3 / n}
        yield Result(
            image=it.decoded.image,
            input_size=(int(it.x.shape[3]), int(it.x.shape[2])),
            predictions=[(categories[c], float(p)) for c, p in zip(top_i[i], top_p[i], strict=True)] if top_i else [],
            maps=[_one(m, i) for m in maps],
            activations={k: v[i].numpy().copy() for k, v in acts.items()},
            model=dict(common["model"]),
            settings=dict(common["settings"]),
            timings=timings,
            notes=it.decoded.notes + ([] if top_i else [NOT_LOGITS]),
            skipped=list(found[0]),
            unclassified=list(found[1]),
        )


def _one(m: AttentionMap, i: int) -> AttentionMap:
    """Image ``i``'s map of a batch's, as a copy of its own."""
    raw = None if m.raw is None else m.raw[i : i + 1].clone()
    return dataclasses.replace(m, data=m.data[i : i + 1].clone(), raw=raw)


def _forward(
    model: nn.Module, batch: list[_Item], device: str, topk: int, keep: str = "auto"
) -> tuple[list[AttentionMap], dict[str, torch.Tensor], list, list, float, float, tuple[list, list]] | None:
    """The batch's recorded forward: (maps, activations, top-k probabilities, top-k indices, time the forward
    ended, time the maps were on the CPU, the recorder's (skipped, unclassified)); ``None`` when the GPU ran out
    of memory (the caller retries once this frame, and with it everything the batch held on the GPU, is gone)."""
    cuda = device == "cuda"
    try:
        host = torch.empty((len(batch), *batch[0].x.shape[1:]), pin_memory=cuda)  # (B, 3, H, W)
        torch.cat([it.x for it in batch], out=host)
        x = host.to(device, non_blocking=True)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with (
            AttentionRecorder(model, activations=True, keep=keep) as rec,
            torch.inference_mode(),
            torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda),
        ):
            output = model(x)
        top = top_classes(output, meta_of(model).categories, topk)
        t1 = time.perf_counter()
        maps = rec.maps  # maps and activations: one transfer, the batch's one wait
        acts = rec.activations
        top_p, top_i = (top.values.cpu().tolist(), top.indices.cpu().tolist()) if top is not None else ([], [])
        return maps, acts, top_p, top_i, t1, time.perf_counter(), (rec.skipped, rec.unclassified)
    except RuntimeError as e:
        if not _is_oom(e):
            raise
    return None
