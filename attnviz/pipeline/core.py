"""The pipeline the app, the CLI and scripts share: image -> preprocess -> forward + capture -> Result.

result = attnviz.analyze("cat.jpg", attention="cbam", arch="resnet18")
result.predictions      # [("tabby", 0.41), ...] top-5
result.maps             # every AttentionMap, batch of one
result.timings          # ms: decode, preprocess, forward, capture
"""

from __future__ import annotations

import ctypes
import functools
import gc
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..capture.hooks import model_lock
from ..capture.maps import AttentionMap
from ..sources.loading import build
from ..sources.meta import Preprocess, meta_of, warm_size
from ..sources.spec import model_request
from .image import preprocess

__all__ = ["AnalyzeError", "ModelCache", "Result", "default_device"]


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
        skipped: (site, shape, why) of gates and softmaxes the recorder found to be no attention (activations,
            output activations, parts of another weight).
        unclassified: (site, shape, why) of weights whose layout fits no kind: attention attnviz could not read.
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
    skipped: list[tuple[str, tuple[int, ...], str]] = field(default_factory=list)
    unclassified: list[tuple[str, tuple[int, ...], str]] = field(default_factory=list)

    @property
    def capture_warning(self) -> str:
        """What the maps leave out, said loudly (:func:`capture_warning`); '' when every weight found was read."""
        return capture_warning(len(self.maps), self.unclassified, self.skipped)

    @property
    def warning(self) -> str:
        """A line to show when the maps cannot be meaningful, else ''."""
        if not self.model["trained"]:
            return "untrained: maps are not meaningful (random weights)"
        if self.model["untrained_attention"]:
            return "untrained attention: the backbone is trained, the inserted blocks are not"
        return ""


Finding = tuple[str, tuple[int, ...], str]


def capture_warning(n_maps: int, unclassified: list[Finding], skipped: list[Finding]) -> str:
    """A line that tells "this network has no attention" from "attnviz could not read it" ('' when the maps are
    all there is): no map and nothing found, no map but weights of unknown layout, or maps with some unread."""

    def first(found: list[Finding]) -> str:
        name, shape, why = found[0]
        more = f" and {len(found) - 1} more" if len(found) > 1 else ""
        where = name if why.startswith("(") else f"{name} {tuple(shape)}"  # most reasons start with the shape
        return f"{where}: {why}{more}"

    read = "declare them with sites= (AttentionRecorder) or see `attnviz inspect`"
    if n_maps == 0 and unclassified:
        return (
            f"no attention map: attnviz could not read the {len(unclassified)} attention weight(s) it found "
            f"({first(unclassified)}); {read}"
        )
    if n_maps == 0:
        if skipped:
            return f"no attention found in this network: {len(skipped)} gate(s) are not attention ({first(skipped)})"
        return "no attention found in this network: its forward computes no gate or softmax"
    if unclassified:
        return f"{len(unclassified)} attention weight(s) could not be read ({first(unclassified)}); {read}"
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

    def get(self, arch: str, attention: str | None, weights: str | None, device: str, **options: Any) -> nn.Module:
        """The model ``arch`` (any spec :func:`attnviz.load_model` takes) with ``weights`` on ``device``, built on
        first use. ``options``: ``labels``, ``offline``, ``trust_pickle`` for :func:`attnviz.load_model`."""
        request = model_request(arch, attention, weights)
        key = (request, device, tuple(sorted(options.items())))
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
            model = build(request, **options).to(device).eval()
            if device == "cuda":  # cuDNN's fastest (bfloat16, tensor core) convolutions take NHWC
                model = model.to(memory_format=torch.channels_last)
            with torch.inference_mode():
                h, w = warm_size(meta_of(model).preprocess)
                model(torch.zeros(1, 3, h, w, device=device))  # warm-up: allocator, kernels
            self._models[key] = model
            evicted = len(self._models) > self.maxsize
            while len(self._models) > self.maxsize:
                self._models.popitem(last=False)
        if evicted:
            release_memory()
        return model

    def models(self) -> list[nn.Module]:
        with self._lock:
            return list(self._models.values())

    def clear(self) -> None:
        """Forget every model and give their memory back (:func:`release_memory`)."""
        with self._lock:
            self._models.clear()
        release_memory()

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
    release_memory()


def release_memory() -> None:
    """Give the memory of models no longer referenced back: collect reference cycles (a model in one lives until
    the next full collection otherwise), hand CUDA's cached blocks back to the driver, and on glibc return the
    freed heap to the OS (``malloc_trim``: freed parameters otherwise stay in the process's arenas, and its resident
    memory never shrinks)."""
    gc.collect()
    torch.cuda.empty_cache()  # a no-op where CUDA was never initialised
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or ``None`` (another C library, another platform)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


NOT_LOGITS = "the model's output is not class logits (B, classes): no predictions, its attention maps only"


def top_classes(output: Any, categories: list[str], topk: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Top-k (probabilities, indices), each (B, k), of a classifier's logits; ``None`` for any other output (a
    detector's, a segmenter's, a tuple), whose attention is still shown."""
    if not isinstance(output, torch.Tensor) or output.dim() != 2 or output.shape[1] != len(categories):
        return None
    return torch.topk(torch.softmax(output.float(), dim=1), min(topk, output.shape[1]), dim=1)


def channel_activation(model: nn.Module, result: Result, module: str, channel: int) -> np.ndarray:
    """Channel ``channel`` of module ``module``'s output for ``result``'s image, (h, w) float32: one forward of the
    same input under the model's lock, reading that output through a hook that is removed afterwards."""

    target = model.get_submodule(module)
    x = model_input(result.image, meta_of(model).preprocess, int(result.settings["size"]))
    device = next(model.parameters(), torch.empty(0)).device
    got: list[torch.Tensor] = []

    def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
        got.append(out[0, channel].detach().float().cpu())

    with model_lock(model), torch.inference_mode():
        handle = target.register_forward_hook(hook)
        try:
            model(x.to(device))
        finally:
            handle.remove()
    return got[0].numpy()


def model_input(image: Image.Image, meta: Preprocess | dict[str, Any], short: int) -> torch.Tensor:
    """(1, 3, H, W) input for a model with preprocessing ``meta`` (:class:`~attnviz.sources.meta.Preprocess`, or
    the older ``weights_meta`` dict): its mean, std and any fixed input size."""
    pre = Preprocess.of(meta)
    return preprocess(image, short, list(pre.mean), list(pre.std), fixed=pre.fixed_size)


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


def cached_model(
    arch: str,
    attention: str | None,
    weights: str | None,
    device: str,
    cache: ModelCache | None = None,
    **options: Any,
) -> nn.Module:
    """The model from ``cache`` (default: the process-wide one), built on first use.

    Raises:
        ValueError: an unknown arch, attention or weights.
        AnalyzeError: the model cannot be loaded (e.g. GPU out of memory).
    """
    try:
        return (cache or DEFAULT_CACHE).get(arch, attention, weights, device, **options)
    except ValueError:
        raise
    except Exception as e:
        if not _is_oom(e):
            raise AnalyzeError(f"cannot load {arch} with {attention} ({weights} weights): {e}") from None
    release_after_oom(cache)  # outside the except block: the half-built model is gone with the traceback
    raise AnalyzeError(f"cannot load {arch} with {attention}: {OOM_MESSAGE}")
