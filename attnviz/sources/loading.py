"""load_model(): the user's network from a spec, with its weights, labels and preprocessing.

Specs:
  ``path/to/file.py:NAME``    a function, class or ``nn.Module`` in a Python file (imported by path)
  ``package.module:NAME``     the same in an importable module
  ``timm:NAME``               any timm model (``resnet18``, ``seresnet50.ra2_in1k``); pretrained weights through
                              timm's loader (huggingface_hub), see :mod:`attnviz.sources.hub`
  ``torchvision:NAME``        any torchvision classification model, with its Weights API's ``DEFAULT`` weights
  ``resnet18`` ... ``resnet101``  attnviz's own ResNets (``attention=``; weights ``demo``/``imagenet``/``random``/a
                              file, as :func:`attnviz.build_model`)
  ``model.pt``                a pickled whole model (``torch.save(model)``), only with ``trust_pickle=True``

Checkpoints (``weights=``) may be a plain state dict, one under ``state_dict``/``model_state_dict``/``model``/...
(nested too), with ``module.`` (DataParallel/DDP) or ``_orig_mod.`` (torch.compile) key prefixes, or
``.safetensors``; torch files are read with ``weights_only=True`` (:mod:`attnviz.sources.weights`).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .hub import create_timm, torchvision_state_dict
from .input_size import probe_input
from .weights import (
    fit_state_dict,
    match_keys,
    read_checkpoint_object,
    unwrap_state_dict,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "load_model", "read_labels"]

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
PICKLE_SUFFIXES = (".pt", ".pth", ".pth.tar", ".bin", ".ckpt", ".pkl")
SPEC_FORMS = (
    "path/to/file.py:NAME, package.module:NAME, timm:NAME, torchvision:NAME, resnet18|resnet34|resnet50|resnet101, "
    "or a pickled model file (with trust_pickle)"
)


def load_model(
    spec: str,
    weights: str | Path | None = None,
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
        spec: see the module docstring.
        weights: a checkpoint file for file/package specs, or to replace timm's/torchvision's pretrained weights
            (the classifier is rebuilt when the file has another number of classes); attnviz's ResNets: ``demo``,
            ``imagenet``, ``random`` or a file.
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
        The model, with ``arch`` (the spec), ``attention``, ``weights_source``, ``untrained_attention``,
        ``weights_meta`` (``categories``, ``mean``, ``std``, ``resize_size`` and where known ``input_size``,
        ``crop_pct``, ``interpolation``, ``fixed_input_size``) and ``labels_source``.

    Raises:
        ValueError: a bad spec, weights that do not fit (missing/unexpected keys named), a pickled checkpoint
            without ``trust_pickle``, labels that do not match the outputs, or weights not cached while offline
            (:class:`attnviz.sources.hub.OfflineError`).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty model spec; use {SPEC_FORMS}")
    spec = spec.strip()
    mean_, std_ = _check_norm(mean, "mean"), _check_norm(std, "std")
    if std_ is not None and min(std_) <= 0:
        raise ValueError(f"std must be positive, got {std_}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    if input_size is not None and not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 8 for v in _sides(input_size)
    ):
        raise ValueError(f"input_size must be an integer >= 8 or (H, W), got {input_size!r}")
    from .own import ARCHS

    if spec in ARCHS:
        model = _own(spec, weights, attention, offline, trust_pickle)
    elif spec.startswith("timm:"):
        model = _timm(spec, weights, pretrained, offline, progress, trust_pickle)
    elif spec.startswith("torchvision:"):
        model = _torchvision(spec, weights, pretrained, offline, progress, trust_pickle)
    else:
        model = _user(spec, weights, trust_pickle)
    model.arch = spec  # type: ignore[assignment]
    if not spec.startswith("timm:") or attention is not None:
        model.attention = attention  # type: ignore[assignment]
    model.eval()
    meta = dict(model.weights_meta)
    if size is not None:
        meta["resize_size"] = [size]
        meta.setdefault("input_size", [size, size])
    if mean_ is not None:
        meta["mean"] = mean_
    if std_ is not None:
        meta["std"] = std_
    if labels is not None:
        meta["categories"] = read_labels(labels)
        model.labels_source = f"file {Path(labels).name}"  # type: ignore[assignment]
    n = getattr(model, "num_outputs", None)
    if spec not in ARCHS and (input_size is not None or "fixed_input_size" not in meta or n is None):
        probe = probe_input(
            model,
            declared=input_size,
            known=meta.get("input_size"),
            fixed=meta.get("fixed_input_size") if input_size is None else None,
            name=spec,
        )
        meta["input_size"] = list(probe.size)
        meta["fixed_input_size"] = probe.fixed
        if probe.fixed:
            model.input_note = f"runs at {probe.size[0]} x {probe.size[1]} only: {probe.why}"  # type: ignore[assignment]
            if size is None:
                meta["resize_size"] = [min(probe.size)]
        out = probe.output
        n = int(out.shape[1]) if isinstance(out, Tensor) and out.ndim == 2 else None
    if meta.get("categories") is None:
        meta["categories"] = [f"class {i}" for i in range(n or 0)]
        model.labels_source = "class i" if n else "none: the output is not class logits"  # type: ignore[assignment]
    elif n is not None and len(meta["categories"]) != n:
        where = getattr(model, "labels_source", "the labels")
        raise ValueError(f"{where} has {len(meta['categories'])} class names, but {spec} outputs {n} classes")
    model.weights_meta = meta  # type: ignore[assignment]
    return model


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


def _imagenet_categories() -> list[str]:
    """ImageNet-1k class names in the usual index order (torchvision's metadata; no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.DEFAULT.meta["categories"])


def _sides(size: int | Sequence[int]) -> tuple[Any, ...]:
    return (size,) if isinstance(size, int) else tuple(size)


def _default_meta() -> dict[str, Any]:
    return {"categories": None, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "resize_size": [224]}


def _finish(model: nn.Module, source: str, meta: dict[str, Any], untrained: bool, labels: str) -> nn.Module:
    model.weights_source = source  # type: ignore[assignment]
    model.weights_meta = meta  # type: ignore[assignment]
    model.untrained_attention = untrained  # type: ignore[assignment]
    model.labels_source = labels  # type: ignore[assignment]
    return model


def _load_file(
    spec: str,
    model: nn.Module,
    weights: str | Path,
    trust_pickle: bool,
    rebuild: Callable[[int], nn.Module] | None = None,
) -> nn.Module:
    """Load a checkpoint file into ``model`` (a rebuilt one with the file's class count when ``rebuild`` is given
    and only the classifier's size differs)."""
    p = Path(weights)
    sd = unwrap_state_dict(read_checkpoint_object(p, trust_pickle=trust_pickle), f"checkpoint {p.name}")
    if rebuild is not None:
        n = _head_classes(model, sd)
        if n is not None:
            model = rebuild(n)
    model.arch = spec  # type: ignore[assignment]  (named in the errors)
    fit_state_dict(model, sd, f"checkpoint {p.name}")
    return model


def _head_classes(model: nn.Module, sd: dict[str, Tensor]) -> int | None:
    """The file's class count when the only shapes that differ are one classifier layer's (Linear or 1x1 conv)."""
    own = model.state_dict()
    sd, _ = match_keys(sd, set(own))
    bad = {k.rpartition(".")[0] for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)}
    if len(bad) != 1:
        return None
    layer = model.get_submodule(next(iter(bad)))
    key = next(iter(bad)) + ".weight"
    return int(sd[key].shape[0]) if isinstance(layer, (nn.Linear, nn.Conv2d)) and key in sd else None


# -- attnviz's own ResNets -------------------------------------------------------------------------------------------
def _own(
    arch: str, weights: str | Path | None, attention: str | None, offline: bool | None = None, trust: bool = False
) -> nn.Module:
    from .own import build_model

    w = None if weights in (None, "random") else str(weights)
    if w == "imagenet":  # torchvision's backbone: refused at once when offline and not cached
        from .hub import offline_reason, torchvision_cache_file
        from .weights import imagenet_weights

        cached, off = torchvision_cache_file(imagenet_weights(arch)), offline_reason(offline)
        if off is not None and not cached.is_file():
            raise ValueError(
                f"ImageNet weights for {arch} are not in the cache ({cached}) and downloads are off ({off}): "
                "run once without --offline, or place that file there"
            )
    model = build_model(arch, attention, weights=w, trust_pickle=trust)
    card = getattr(model, "weights_card", None)
    meta = dict(model.weights_meta)
    labels = "model card" if card else "ImageNet-1k (torchvision)" if len(meta["categories"]) == 1000 else "class i"
    model.labels_source = labels  # type: ignore[assignment]
    model.num_outputs = len(meta["categories"])  # type: ignore[assignment]
    return model


# -- timm ------------------------------------------------------------------------------------------------------------
def _timm_name(spec: str) -> str:
    import timm
    from timm.models import split_model_name_tag

    name = spec.partition(":")[2].strip()
    if not name:
        raise ValueError("timm: needs a model name, e.g. timm:resnet18 or timm:seresnet50.ra2_in1k")
    if name.startswith("hf-hub:") or name.startswith("hf_hub:"):
        raise ValueError(f"{spec}: hub-only timm models (hf-hub:) are not supported; use a timm model name")
    if not timm.is_model(split_model_name_tag(name)[0]):
        close = difflib.get_close_matches(name, timm.list_models() + timm.list_pretrained(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
        raise ValueError(f"unknown timm model {name!r}{hint}")
    return name


def timm_meta(model: nn.Module) -> dict[str, Any]:
    """Labels and preprocessing of a timm model from its pretrained config: ImageNet class names (1k: torchvision's
    order, which is timm's; 21k/22k: timm's descriptions), ``timm.data.resolve_data_config``'s mean, std, input
    size, crop_pct, interpolation; ``resize_size`` = input size / crop_pct (timm resizes before its centre crop)."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config(model=model)
    pcfg = getattr(model, "pretrained_cfg", None) or {}
    h, w = cfg["input_size"][1:]
    crop = float(cfg.get("crop_pct") or 0.875)
    meta: dict[str, Any] = {
        "categories": None,
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "resize_size": [math.floor(min(h, w) / crop)],
        "input_size": [int(h), int(w)],
        "crop_pct": crop,
        "interpolation": str(cfg.get("interpolation", "bicubic")),
        "fixed_input_size": bool(pcfg.get("fixed_input_size", False)),
    }
    n = int(getattr(model, "num_classes", 0) or 0)
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
    except ImportError:
        subset = "imagenet-1k" if n == 1000 else None
    if subset == "imagenet-1k" and n == 1000:
        meta["categories"] = _imagenet_categories()
    elif subset:
        names = [d.split(",")[0].strip() for d in ImageNetInfo(subset).label_descriptions()]
        meta["categories"] = names if len(names) == n else None
    return meta


def _timm(
    spec: str, weights: str | Path | None, pretrained: bool, offline: bool | None, progress: bool, trust: bool
) -> nn.Module:
    import timm

    name = _timm_name(spec)
    from .timm import TIMM_ATTENTION

    if weights is not None or not pretrained:
        from .hub import timm_weights

        timm_weights(name)  # an invalid pretrained tag is an error here too (no network)
        model = timm.create_model(name, pretrained=False)
        model.attention = TIMM_ATTENTION.get(name)  # type: ignore[assignment]
        if weights is None:
            meta = timm_meta(model)
            labels = "ImageNet (timm config)" if meta["categories"] else "class i"
            model.num_outputs = int(model.num_classes)  # type: ignore[assignment]
            return _finish(model, "random", meta, True, labels)
        model = _load_file(
            spec, model, weights, trust, lambda n: timm.create_model(name, pretrained=False, num_classes=n)
        )
        meta = timm_meta(model)
        meta["categories"] = None  # the file's classes, not the pretrained config's
        model.attention = TIMM_ATTENTION.get(name)  # type: ignore[assignment]
        model.num_outputs = int(model.num_classes)  # type: ignore[assignment]
        return _finish(model, f"file {Path(weights).name}", meta, False, "class i")
    model = create_timm(name, offline=offline, progress=progress)
    meta = timm_meta(model)
    cfg = model.pretrained_cfg
    full = f"{cfg.get('architecture')}.{cfg.get('tag')}" if cfg.get("tag") else name
    dataset = "ImageNet" if meta["categories"] and len(meta["categories"]) == 1000 else "pretrained"
    model.attention = TIMM_ATTENTION.get(full)  # type: ignore[assignment]
    model.num_outputs = int(model.num_classes)  # type: ignore[assignment]
    labels = "ImageNet (timm config)" if meta["categories"] else "class i"
    return _finish(model, f"timm {full} ({dataset})", meta, False, labels)


# -- torchvision -----------------------------------------------------------------------------------------------------
def _torchvision(
    spec: str, weights: str | Path | None, pretrained: bool, offline: bool | None, progress: bool, trust: bool
) -> nn.Module:
    import torchvision.models as tvm

    name = spec.partition(":")[2].strip()
    names = tvm.list_models(module=tvm)  # classification models only
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; valid names: {', '.join(names)}"
        other = " (not a classification model)" if name in tvm.list_models() else ""
        raise ValueError(f"unknown torchvision classification model {name!r}{other}{hint}")
    default = tvm.get_model_weights(name).DEFAULT
    t = default.transforms()
    meta: dict[str, Any] = {
        "categories": None,
        "mean": [float(v) for v in t.mean],
        "std": [float(v) for v in t.std],
        "resize_size": [int(v) for v in t.resize_size],
        "input_size": [int(v) for v in t.crop_size] * (2 if len(t.crop_size) == 1 else 1),
        "interpolation": str(t.interpolation.value),
    }
    if weights is not None or not pretrained:
        model = tvm.get_model(name, weights=None)
        if weights is None:
            meta["categories"] = list(default.meta["categories"])
            model.num_outputs = len(meta["categories"])  # type: ignore[assignment]
            return _finish(model, "random", meta, True, f"torchvision {default}")
        model = _load_file(spec, model, weights, trust, lambda n: tvm.get_model(name, weights=None, num_classes=n))
        return _finish(model, f"file {Path(weights).name}", meta, False, "class i")
    # read (downloading first if need be) with weights_only=True; torchvision's builder then reads the cached file
    torchvision_state_dict(default, offline=offline, progress=progress)
    model = tvm.get_model(name, weights=default, progress=progress)
    meta["categories"] = list(default.meta["categories"])
    model.num_outputs = len(meta["categories"])  # type: ignore[assignment]
    return _finish(model, f"torchvision {default}", meta, False, f"torchvision {default}")


# -- the user's own code ---------------------------------------------------------------------------------------------
def _import_file(path: Path) -> Any:
    """Import a Python file by path, as a module of its own (its folder on ``sys.path`` while it runs)."""
    if not path.is_file():
        raise ValueError(f"model file not found: {path}")
    if path.suffix != ".py":
        raise ValueError(f"model file {path} is not a .py file")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    name = f"attnviz_user_{path.stem.replace('-', '_')}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise ValueError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    return module


def _build_user(spec: str) -> nn.Module:
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise ValueError(f"unknown model spec {spec!r}; use {SPEC_FORMS}")
    if where.endswith(".py") or "/" in where or "\\" in where:
        module = _import_file(Path(where).expanduser())
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise ValueError(f"cannot import module {where!r} for {spec!r}: {e}") from None
    if not hasattr(module, attr):
        found = [k for k, v in vars(module).items() if not k.startswith("_") and callable(v)]
        close = difflib.get_close_matches(attr, found, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"{where} has no {attr!r}{hint}")
    obj = getattr(module, attr)
    if not isinstance(obj, nn.Module):
        if not callable(obj):
            raise ValueError(f"{spec}: {attr} is a {type(obj).__name__}, not a function or class")
        try:
            obj = obj()
        except TypeError as e:
            raise ValueError(f"{spec}: calling {attr}() failed ({e}); give a function that takes no arguments") from e
    if not isinstance(obj, nn.Module):
        raise ValueError(f"{spec}: {attr}() returned a {type(obj).__name__}, not an nn.Module")
    return obj


def _user(spec: str, weights: str | Path | None, trust_pickle: bool) -> nn.Module:
    if ":" not in spec.replace(":\\", "").replace(":/", "") and spec.lower().endswith(PICKLE_SUFFIXES):
        if weights is not None:
            raise ValueError(f"{spec} is a whole model; it takes no separate weights")
        obj = read_checkpoint_object(spec, trust_pickle=trust_pickle)
        if isinstance(obj, dict):
            obj = next((obj[k] for k in ("model", "module", "net") if isinstance(obj.get(k), nn.Module)), obj)
        if not isinstance(obj, nn.Module):
            raise ValueError(
                f"{spec} holds a {type(obj).__name__}, not a whole model; give the code that builds the network "
                "(file.py:NAME) and pass this file as its weights"
            )
        trust = " (pickled model, trusted)" if trust_pickle else ""
        return _finish(obj, f"file {Path(spec).name}{trust}", _default_meta(), False, "class i")
    model = _build_user(spec)
    if weights is None:
        return _finish(model, f"as built by {spec}", _default_meta(), False, "class i")
    _load_file(spec, model, weights, trust_pickle)
    return _finish(model, f"file {Path(weights).name}", _default_meta(), False, "class i")
