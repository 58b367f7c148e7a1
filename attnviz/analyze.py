"""The pipeline the app, the CLI and scripts share: image -> preprocess -> forward + capture -> Result.

result = attnviz.analyze("cat.jpg", attention="cbam", arch="resnet18")
result.predictions      # [("tabby", 0.41), ...] top-5
result.maps             # every AttentionMap, batch of one
result.timings          # ms: decode, preprocess, forward, capture
"""

from __future__ import annotations

import gc
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .capture import AttentionMap, AttentionRecorder
from .image import decode_image, fixed_size, preprocess
from .models import build_model

__all__ = ["AnalyzeError", "ModelCache", "Result", "analyze", "default_device"]

#: Weights the pipeline knows by name; a path to a checkpoint file is accepted too.
WEIGHTS = ("random", "imagenet")


class AnalyzeError(RuntimeError):
    """A failure of the pipeline that is not the input's fault (a model that cannot load, out of memory)."""


@dataclass
class Result:
    """What :func:`analyze` returns.

    Attributes:
        image: the decoded RGB image at its original size (EXIF orientation applied): maps are drawn on it.
        input_size: (width, height) the model saw (aspect ratio kept, no crop).
        predictions: top-k (label, probability).
        maps: every captured map, batch dimension of 1 kept.
        activations: block path -> channel mean of that attention module's output (H, W) float32.
        model: arch, attention, weights source, and whether the weights are trained.
        settings: the arguments of the call.
        timings: milliseconds per stage (decode, preprocess, forward, capture).
        notes: what decoding did to the image (e.g. "rotated by its EXIF orientation (6)").
    """

    image: Image.Image
    input_size: tuple[int, int]
    predictions: list[tuple[str, float]]
    maps: list[AttentionMap]
    activations: dict[str, np.ndarray]
    model: dict[str, Any]
    settings: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def warning(self) -> str:
        """A line to show when the maps cannot be meaningful, else ''."""
        if not self.model["trained"]:
            return "untrained: maps are not meaningful (random weights)"
        if self.model["untrained_attention"]:
            return "untrained attention: the backbone is trained, the inserted blocks are not"
        return ""


OOM_MESSAGE = "the GPU ran out of memory; try a smaller image, a smaller model or --device cpu"


def _is_oom(e: BaseException) -> bool:
    """Whether ``e`` is a CUDA out-of-memory error (cuDNN and cuBLAS raise theirs as plain RuntimeErrors)."""
    return isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and ("out of memory" in str(e) or "ALLOC_FAILED" in str(e))
    )


def default_device() -> str:
    """``"cuda"`` when a GPU is available, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


class ModelCache:
    """A few built models, least recently used first out; each is warmed up once when built.

    Building is serialised by one lock; forwards of a shared model are serialised by the recorder's
    per-model lock.
    """

    def __init__(self, maxsize: int = 4) -> None:
        self.maxsize = maxsize
        self._models: OrderedDict[tuple, nn.Module] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, arch: str, attention: str | None, weights: str | None, device: str) -> nn.Module:
        if is_timm(arch):  # the network's own attention; weights: random, else its ImageNet weights
            attention, weights = None, "random" if weights in (None, "random") else "imagenet"
        key = (arch, attention, weights, device)
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
            model = _build(arch, attention, weights).to(device).eval()
            if device == "cuda":  # cuDNN's fastest (bfloat16, tensor core) convolutions take NHWC
                model = model.to(memory_format=torch.channels_last)
            with torch.inference_mode():
                h, w = fixed_size(model.weights_meta) or (64, 64)
                model(torch.zeros(1, 3, h, w, device=device))  # warm-up: allocator, kernels
            self._models[key] = model
            while len(self._models) > self.maxsize:
                self._models.popitem(last=False)
            return model

    def models(self) -> list[nn.Module]:
        with self._lock:
            return list(self._models.values())

    def clear(self) -> None:
        with self._lock:
            self._models.clear()

    def shrink(self, keep: nn.Module | None = None) -> int:
        """Forget every model but ``keep`` (after an out-of-memory error); return how many went."""
        with self._lock:
            gone = [k for k, m in self._models.items() if m is not keep]
            for k in gone:
                del self._models[k]
            return len(gone)


DEFAULT_CACHE = ModelCache()


def release_after_oom(cache: ModelCache | None, keep: nn.Module | None = None) -> None:
    """After a GPU out-of-memory error, once the failed call's tensors and traceback are gone: drop the cache's
    other models, collect reference cycles, and hand the freed blocks back to the driver.

    Called outside the ``except`` block that caught the error: inside it, the error's traceback keeps every frame
    of the failed forward (its input, the recorder's pending maps, the logits) alive, and nothing would be freed.
    """
    (cache or DEFAULT_CACHE).shrink(keep)
    gc.collect()
    torch.cuda.empty_cache()  # a no-op where CUDA was never initialised


def is_timm(arch: str) -> bool:
    """Whether ``arch`` names one of timm's pretrained attention networks (:data:`attnviz.timm_models.TIMM_MODELS`)."""
    from .timm_models import TIMM_MODELS

    return arch in TIMM_MODELS


def _build(arch: str, attention: str | None, weights: str | None) -> nn.Module:
    """attnviz's ResNet with ``attention`` inserted, or a timm attention network (ImageNet weights unless random).

    Random weights are drawn from a fixed seed, so a model rebuilt after leaving the cache gives the same maps,
    without touching the caller's generators: models are built on the CPU, so only the CPU generator is seeded,
    and its state is restored afterwards; CUDA's (and any other device's) are neither seeded nor read
    (``torch.manual_seed`` would reseed them all)."""
    if weights in (None, "random"):
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(0)
            return _build(arch, attention, "seeded")
    if is_timm(arch):
        from .timm_models import build_timm_model

        return build_timm_model(arch, pretrained=weights != "seeded")
    return build_model(arch, attention, weights=None if weights == "seeded" else weights)


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
) -> Result:
    """Run ``image`` through ``arch`` with ``attention`` blocks and capture every block's weights.

    Args:
        image: a path, encoded bytes, a PIL image or a uint8 array (any mode; see :func:`decode_image`).
        attention: a registry name, or ``None`` for the plain network.
        arch: ResNet depth (``resnet18`` .. ``resnet101``), or a timm network of
            :data:`attnviz.timm_models.TIMM_MODELS` (its own attention; ``attention`` is then not used).
        weights: ``"random"``/``None`` (untrained), ``"demo"`` (the shipped checkpoints, resnet18),
            ``"imagenet"`` or a checkpoint path.
        device: ``"cuda"`` or ``"cpu"``; default: CUDA when available (autocast bfloat16 there).
        size: short side the image is resized to (aspect kept); default from the weights' metadata.
        topk: number of predictions.
        cache: where built models are kept (default: a process-wide LRU of 4).

    Raises:
        ImageError: the image cannot be used (message for the user).
        ValueError: an unknown arch, attention or weights.
        AnalyzeError: the model cannot be loaded or run (e.g. GPU out of memory).
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    decoded = decode_image(image)
    timings["decode"] = (time.perf_counter() - t0) * 1e3
    device = check_device(device)
    model = load_model(arch, attention, weights, device, cache)
    meta = model.weights_meta
    short = short_side(meta, size)

    t0 = time.perf_counter()
    x = model_input(decoded.image, meta, short)
    timings["preprocess"] = (time.perf_counter() - t0) * 1e3

    t0 = time.perf_counter()
    ran = _forward(model, x, device, topk)
    if ran is None:  # out of GPU memory: the forward's frames are gone by now, so this frees their memory
        release_after_oom(cache, keep=model)
        raise AnalyzeError(OOM_MESSAGE)
    rec, top_p, top_i = ran
    timings["forward"] = (time.perf_counter() - t0) * 1e3

    t0 = time.perf_counter()
    maps = rec.maps
    activations = {k: v[0].numpy() for k, v in rec.activations.items()}
    timings["capture"] = (time.perf_counter() - t0) * 1e3

    categories = meta["categories"]
    return Result(
        image=decoded.image,
        input_size=(int(x.shape[3]), int(x.shape[2])),
        predictions=[(categories[i], float(p)) for i, p in zip(top_i, top_p, strict=True)],
        maps=maps,
        activations=activations,
        model=model_info(model, arch, attention, weights),
        settings=run_settings(arch, attention, weights, device, short, topk),
        timings=timings,
        notes=decoded.notes,
    )


def _forward(
    model: nn.Module, x: torch.Tensor, device: str, topk: int
) -> tuple[AttentionRecorder, list[float], list[int]] | None:
    """The recorded forward of one image: (recorder, top-k probabilities, top-k indices); ``None`` when the GPU
    ran out of memory. Returning ``None`` rather than handling the error here lets the caller free memory once
    this frame and the error's traceback are gone."""
    try:
        x = x.to(device, non_blocking=True)
        with (
            AttentionRecorder(model, activations=True) as rec,
            torch.inference_mode(),
            torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"),
        ):
            logits = model(x)
        probs = torch.softmax(logits.float(), dim=1)[0]
        top = torch.topk(probs, min(topk, probs.numel()))
        return rec, top.values.cpu().tolist(), top.indices.cpu().tolist()  # one sync
    except RuntimeError as e:
        if not _is_oom(e):
            raise
    return None


def short_side(meta: dict[str, Any], size: int | None) -> int:
    """The short side images are resized to: ``size``, else the weights' own (``resize_size``), else 224."""
    return size or int(meta.get("resize_size", [224])[0])


def model_input(image: Image.Image, meta: dict[str, Any], short: int) -> torch.Tensor:
    """(1, 3, H, W) input for a model with weights metadata ``meta`` (its mean, std and any fixed input size)."""
    return preprocess(image, short, meta["mean"], meta["std"], fixed=fixed_size(meta))


def run_settings(
    arch: str, attention: str | None, weights: str | None, device: str, short: int, topk: int
) -> dict[str, Any]:
    """What :attr:`Result.settings` records about a run."""
    return {
        "arch": arch,
        "attention": attention,
        "weights": weights or "random",
        "device": device,
        "size": short,
        "topk": topk,
    }


def check_device(device: str | None) -> str:
    """``device``, or the default one; ``ValueError`` for anything but an available ``cpu`` or ``cuda``."""
    device = device or default_device()
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but no CUDA GPU is available")
    return device


def load_model(
    arch: str, attention: str | None, weights: str | None, device: str, cache: ModelCache | None = None
) -> nn.Module:
    """The model from ``cache`` (default: the process-wide one), built on first use.

    Raises:
        ValueError: an unknown arch, attention or weights.
        AnalyzeError: the model cannot be loaded (e.g. GPU out of memory).
    """
    try:
        return (cache or DEFAULT_CACHE).get(arch, attention, weights, device)
    except ValueError:
        raise
    except Exception as e:
        if not _is_oom(e):
            raise AnalyzeError(f"cannot load {arch} with {attention} ({weights} weights): {e}") from None
    release_after_oom(cache)  # outside the except block: the half-built model is gone with the traceback
    raise AnalyzeError(f"cannot load {arch} with {attention}: {OOM_MESSAGE}")


def model_info(model: nn.Module, arch: str, attention: str | None, weights: str | None) -> dict[str, Any]:
    """What :attr:`Result.model` says about a loaded model."""
    if is_timm(arch):
        attention = getattr(model, "attention", None)  # the network's own (se, eca, sk, splat, gc, bot)
    return {
        "arch": arch,
        "attention": attention,
        "weights": weights or "random",
        "weights_source": model.weights_source,
        "trained": model.weights_source != "random",
        "untrained_attention": bool(model.untrained_attention) and attention is not None,
        # the checkpoint's measured held-out scores (attnviz eval), when its model card has them
        "measured": (getattr(model, "weights_card", None) or {}).get("test", {}).get("summary"),
    }
