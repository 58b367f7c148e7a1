"""load_model(): the user's network from a spec, with its weights, labels and preprocessing.

Specs (parsed once into a :class:`~attnviz.sources.spec.ModelSpec`; its kind picks the source,
:mod:`attnviz.sources.registry`):
  ``path/to/file.py:NAME``    a function, class or ``nn.Module`` in a Python file (imported by path)
  ``package.module:NAME``     the same in an importable module                        (:mod:`.user`)
  ``timm:NAME``               any timm model (``resnet18``, ``seresnet50.ra2_in1k``); pretrained weights through
                              timm's loader (huggingface_hub), see :mod:`attnviz.sources.hub`  (:mod:`.timm`)
  ``torchvision:NAME``        any torchvision classification model, with its Weights API's ``DEFAULT`` weights
                                                                                      (:mod:`.torchvision`)
  ``resnet18`` ... ``resnet101``  attnviz's own ResNets (``attention=``; weights ``demo``/``imagenet``/``random``/a
                              file, as :func:`attnviz.build_model`)                     (:mod:`.own`)
  ``model.pt``                a pickled whole model (``torch.save(model)``), only with ``trust_pickle=True``

Checkpoints (``weights=``) may be a plain state dict, one under ``state_dict``/``model_state_dict``/``model``/...
(nested too), with ``module.`` (DataParallel/DDP) or ``_orig_mod.`` (torch.compile) key prefixes, or
``.safetensors``; torch files are read with ``weights_only=True`` (:mod:`attnviz.sources.weights`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import own, timm, torchvision, user  # noqa: F401  (each registers its source)
from .input_size import probe_input
from .meta import attach_meta, measured, meta_of
from .registry import LoadOptions, get_source
from .spec import ModelRequest, ModelSpec, Weights, model_request, parse_spec, parse_weights

__all__ = ["build", "load_model", "model_info", "read_labels"]


def load_model(
    spec: str | ModelSpec,
    weights: str | Path | Weights | None = None,
    *,
    attention: str | None = None,
    labels: str | Path | None = None,
    size: int | None = None,
    input_size: int | tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    offline: bool | None = None,
    trust_pickle: bool = False,
    pretrained: bool = True,
    progress: bool = True,
) -> nn.Module:
    """The network ``spec`` names, with ``weights``, in eval mode, carrying what the pipeline reads.

    Args:
        spec: see the module docstring (or a :class:`~attnviz.sources.spec.ModelSpec`).
        weights: a checkpoint file for file/package specs, or to replace timm's/torchvision's pretrained weights
            (the classifier is rebuilt when the file has another number of classes); attnviz's ResNets: ``demo``,
            ``imagenet``, ``random`` or a file. ``None``: the source's default (pretrained for timm/torchvision,
            random for attnviz's ResNets, as built for the user's code).
        attention: attnviz's ResNets: the registry name of the blocks to insert; other specs: a label only.
        labels: a file of class names: one per line, a JSON list, or a JSON dict ``{index: name}`` (or
            ``{name: index}``). Default: the weights' metadata, else ``class i``.
        size, mean, std: preprocessing (short side, normalisation); they override the weights' metadata, which
            otherwise gives them (timm's ``pretrained_cfg``, torchvision's transforms), else 224 and ImageNet's.
        input_size: the size (an int or (H, W)) a network that is not attnviz's runs at; without it the size is
            read from the network (:func:`attnviz.sources.input_size.probe_input`: blank forwards at the source's size,
            else 224 and other usual sizes), and a network that runs at one size only gets every image
            stretched to it.
        offline: ``True`` forbids downloads (as ``HF_HUB_OFFLINE=1``/``ATTNVIZ_OFFLINE=1`` do).
        trust_pickle: allow checkpoints that hold pickled Python objects (a whole model): they run code.
        pretrained: timm/torchvision: load their pretrained weights (``False``: random initialisation).
        progress: show a progress bar while downloading.

    Returns:
        The model, with its :class:`~attnviz.sources.meta.ModelMeta` attached (:func:`attnviz.sources.meta.meta_of`:
        spec, attention, weights source, whether the attention is untrained, labels and where they came from,
        preprocessing: mean, std, short side and where known input size, crop_pct, interpolation, fixed size).

    Raises:
        ValueError: a bad spec, weights that do not fit (missing/unexpected keys named), a pickled checkpoint
            without ``trust_pickle``, labels that do not match the outputs, or weights not cached while offline
            (:class:`attnviz.sources.hub.OfflineError`).
    """
    parsed = parse_spec(spec)
    mean_, std_ = _check_norm(mean, "mean"), _check_norm(std, "std")
    if std_ is not None and min(std_) <= 0:
        raise ValueError(f"std must be positive, got {std_}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    if input_size is not None and not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 8 for v in _sides(input_size)
    ):
        raise ValueError(f"input_size must be an integer >= 8 or (H, W), got {input_size!r}")
    source = None if weights is None else parse_weights(weights)
    options = LoadOptions(source, attention, pretrained, offline, progress, trust_pickle)
    model, meta = get_source(parsed.kind)(parsed, options)
    model.eval()
    if parsed.kind != "timm" or attention is not None:
        meta = replace(meta, attention=attention)
    pre = meta.preprocess
    if size is not None:
        pre = replace(pre, resize=size, input_size=pre.input_size or (size, size))
    if mean_ is not None:
        pre = replace(pre, mean=tuple(mean_))
    if std_ is not None:
        pre = replace(pre, std=tuple(std_))
    meta = replace(meta, spec=parsed.text, preprocess=pre)
    if labels is not None:
        meta = replace(meta, labels=tuple(read_labels(labels)), labels_source=f"file {Path(labels).name}")
    n = meta.num_outputs
    if not parsed.own and (input_size is not None or pre.fixed is None or n is None):
        probe = probe_input(
            model,
            declared=input_size,
            known=pre.input_size,
            fixed=pre.fixed if input_size is None else None,
            name=parsed.text,
        )
        pre = replace(pre, input_size=probe.size, fixed=probe.fixed)
        if probe.fixed:
            note = f"runs at {probe.size[0]} x {probe.size[1]} only: {probe.why}"
            pre = replace(pre, resize=pre.resize if size is not None else min(probe.size))
            meta = replace(meta, input_note=note)
        meta = replace(meta, preprocess=pre)
        out = probe.output
        n = int(out.shape[1]) if isinstance(out, Tensor) and out.ndim == 2 else None
    if meta.labels is None:
        said = "class i" if n else "none: the output is not class logits"
        meta = replace(meta, labels=tuple(f"class {i}" for i in range(n or 0)), labels_source=said)
    elif n is not None and len(meta.labels) != n:
        raise ValueError(
            f"{meta.labels_source} has {len(meta.labels)} class names, but {parsed.text} outputs {n} classes"
        )
    return attach_meta(model, meta)


# -- the pipeline's requests -----------------------------------------------------------------------------------------
def build(request: ModelRequest, **options: Any) -> nn.Module:
    """The network ``request`` names through :func:`load_model`: attnviz's ResNet with its attention inserted, a timm
    or torchvision network (pretrained unless random), or the user's own (``file.py:fn``, ``pkg.mod:fn``).
    ``options``: :func:`load_model`'s keywords (``labels``, ``offline``, ``trust_pickle``, ...).

    Random weights are drawn from a fixed seed, so a model rebuilt after leaving the cache gives the same maps,
    without touching the caller's generators: models are built on the CPU, so only the CPU generator is seeded,
    and its state is restored afterwards; CUDA's (and any other device's) are neither seeded nor read
    (``torch.manual_seed`` would reseed them all)."""
    spec, attention, weights = request.spec, request.attention, request.weights
    if weights is Weights.RANDOM:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(0)
            return load_model(spec, None, attention=attention, pretrained=False, **options)
    if weights is Weights.IMAGENET and not spec.own:  # a library network's own pretrained weights
        return load_model(spec, None, attention=attention, **options)
    return load_model(spec, weights, attention=attention, **options)


def model_info(model: nn.Module, arch: str | ModelSpec, attention: str | None, weights: Any) -> dict[str, Any]:
    """What :attr:`attnviz.pipeline.core.Result.model` says about a loaded model."""
    request = model_request(arch, attention, weights)
    meta = meta_of(model)
    # a network that is not attnviz's brings its own attention (timm: se, eca, sk, splat, gc, bot)
    attention = request.attention if request.spec.own else meta.attention
    return {
        "arch": request.spec.text,
        "attention": attention,
        "weights": str(request.weights),
        "weights_source": meta.source,
        "trained": meta.source != "random",
        "untrained_attention": meta.untrained and attention is not None,
        # the checkpoint's measured held-out scores (attnviz eval), when its model card has them
        "measured": measured(meta.card or {}),
    }


# -- preprocessing and labels ----------------------------------------------------------------------------------------
def _check_norm(values: Sequence[float] | None, what: str) -> list[float] | None:
    if values is None:
        return None
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be 3 numbers (R, G, B), got {values!r}") from None
    if len(out) == 1:
        out *= 3
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{what} must be 3 finite numbers (R, G, B), got {values!r}")
    return out


def read_labels(path: str | Path) -> list[str]:
    """Class names from a file: one per line, a JSON list, or a JSON dict ``{index: name}`` / ``{name: index}``.

    Raises:
        ValueError: a missing file, an empty one, or a dict whose indices are not 0..n-1.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"labels file not found: {p}")
    text = p.read_text(encoding="utf-8-sig")
    data: Any = None
    if text.lstrip()[:1] in ("[", "{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"labels file {p.name} is not valid JSON: {e}") from None
    if data is None:
        names = [line.strip() for line in text.splitlines()]
        while names and not names[-1]:
            names.pop()
    elif isinstance(data, list):
        names = [str(v) for v in data]
    elif isinstance(data, dict):
        pairs = list(data.items())
        if pairs and all(isinstance(v, int) for _, v in pairs) and not all(str(k).isdigit() for k, _ in pairs):
            pairs = [(v, k) for k, v in pairs]  # {name: index}, as ImageFolder's class_to_idx
        try:
            by_index = {int(k): str(v) for k, v in pairs}
        except (TypeError, ValueError):
            raise ValueError(f"labels file {p.name}: a JSON dict must map indices to names") from None
        if sorted(by_index) != list(range(len(by_index))):
            raise ValueError(f"labels file {p.name}: the indices must be 0..{len(by_index) - 1}, each once")
        names = [by_index[i] for i in range(len(by_index))]
    else:
        raise ValueError(f"labels file {p.name}: expected a JSON list or dict, got {type(data).__name__}")
    if not names:
        raise ValueError(f"labels file {p.name} holds no names")
    return names


def _sides(size: int | Sequence[int]) -> tuple[Any, ...]:
    return (size,) if isinstance(size, int) else tuple(size)
