"""timm's ImageNet-pretrained attention networks: the six listed in the app, and their weights from the hub cache.

Their attention is captured by :class:`~attnviz.AttentionRecorder` through the exact adapters for timm's classes
(:mod:`attnviz.capture.adapters`: SEModule, EcaModule, SelectiveKernel, SplitAttn, GlobalContext, BottleneckAttn, ...);
nothing is added to the model. Any other timm network loads through ``attnviz.load_model("timm:NAME")``: this
module is also the ``"timm"`` source that :func:`attnviz.load_model` dispatches to.

Weights come through :func:`attnviz.sources.hub.create_timm`: a file in the Hugging Face hub cache
(``$HF_HOME/hub``) is handed to timm's own pretrained loader, with no network; otherwise timm downloads it, when
downloads are allowed and the hub can be reached. timm is imported only when a model is built.
"""

from __future__ import annotations

import difflib
import math
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from torch import nn

from .catalog import TIMM_ATTENTION, TIMM_MODELS
from .hub import create_timm, offline_reason, timm_weights
from .meta import ModelMeta, Preprocess, attach_meta
from .registry import LoadOptions, register_source
from .spec import ModelSpec, Weights
from .statedict import load_user_checkpoint
from .weights import imagenet_meta

__all__ = [
    "TIMM_ATTENTION",
    "TIMM_MODELS",
    "build_timm_model",
    "load_timm",
    "timm_availability",
    "timm_meta",
    "timm_name",
]

#: Seconds a hub reachability probe may take; its answer is kept for ``_PROBE_TTL_S``.
HUB_PROBE_TIMEOUT_S = 2.0
_PROBE_TTL_S = 60.0
_IMAGENET_LABELS = "ImageNet (timm config)"


def _check_name(name: str) -> None:
    if name not in TIMM_MODELS:
        raise ValueError(f"unknown timm model {name!r}; valid names: {', '.join(TIMM_MODELS)}")


_PROBES: dict[str, tuple[float, str | None]] = {}
_PROBES_LOCK = threading.Lock()


def _hub_error() -> str | None:
    """``None`` when the hub answers an HTTP request within :data:`HUB_PROBE_TIMEOUT_S`, else why not (memoised)."""
    from huggingface_hub import constants

    endpoint = str(constants.ENDPOINT).rstrip("/")
    with _PROBES_LOCK:
        seen = _PROBES.get(endpoint)
        if seen is not None and time.monotonic() - seen[0] < _PROBE_TTL_S:
            return seen[1]
        error: str | None = None
        try:
            req = urllib.request.Request(endpoint + "/api/models/timm", method="HEAD")
            with urllib.request.urlopen(req, timeout=HUB_PROBE_TIMEOUT_S):
                pass
        except urllib.error.HTTPError:
            pass  # the hub answered (any status): it is reachable
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            error = f"the hub ({endpoint}) cannot be reached ({type(reason).__name__}: {reason})"
        _PROBES[endpoint] = (time.monotonic(), error)
        return error


def timm_availability(name: str) -> tuple[bool, str]:
    """Whether :func:`build_timm_model` can load ``name``'s pretrained weights now, and why (or why not).

    Looks in the Hugging Face cache first (no network). Otherwise, unless downloads are off (``HF_HUB_OFFLINE`` or
    ``ATTNVIZ_OFFLINE``), asks the hub once with a short timeout (:data:`HUB_PROBE_TIMEOUT_S`; the answer is kept
    for a minute).

    Raises:
        ValueError: ``name`` is not in :data:`TIMM_MODELS`.
    """
    _check_name(name)
    try:
        import huggingface_hub.constants  # noqa: F401  (its HF_HUB_OFFLINE, read at import, counts too)
        import timm  # noqa: F401
    except ImportError as e:
        return False, f"{e.name} is not installed (pip install timm, which brings huggingface_hub)"
    w = timm_weights(name)
    if w is not None and w.cached is not None:
        return True, f"cached: {w.cached}"
    where = f"not in the Hugging Face cache ({w.cache if w is not None else 'none: timm has no weights for it'})"
    off = offline_reason()
    if off is not None:
        return False, f"{where} and downloads are off ({off})"
    error = _hub_error()
    if error is not None:
        return False, f"{where} and {error}"
    return True, f"not cached; timm downloads it from the hub (timm/{name}) on first use"


def timm_meta(model: nn.Module) -> tuple[tuple[str, ...] | None, Preprocess]:
    """Labels and preprocessing of a timm model from its pretrained config: ImageNet class names (1k: torchvision's
    order, which is timm's; 21k/22k: timm's descriptions; ``None`` for other classes), and
    ``timm.data.resolve_data_config``'s mean, std, input size, crop_pct, interpolation; the short side is
    input size / crop_pct (timm resizes before its centre crop)."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config(model=model)
    pcfg = getattr(model, "pretrained_cfg", None) or {}
    h, w = cfg["input_size"][1:]
    crop = float(cfg.get("crop_pct") or 0.875)
    pre = Preprocess(
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        resize=math.floor(min(h, w) / crop),
        input_size=(int(h), int(w)),
        crop_pct=crop,
        interpolation=str(cfg.get("interpolation", "bicubic")),
        fixed=bool(pcfg.get("fixed_input_size", False)),
    )
    n = int(getattr(model, "num_classes", 0) or 0)
    labels: tuple[str, ...] | None = None
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
    except ImportError:
        subset = "imagenet-1k" if n == 1000 else None
    if subset == "imagenet-1k" and n == 1000:
        labels = imagenet_meta("resnet50")[0]
    elif subset:
        names = tuple(d.split(",")[0].strip() for d in ImageNetInfo(subset).label_descriptions())
        labels = names if len(names) == n else None
    return labels, pre


def build_timm_model(name: str, *, pretrained: bool = True) -> nn.Module:
    """timm's ``name`` (``timm.create_model``), in eval mode.

    Args:
        name: a key of :data:`TIMM_MODELS`.
        pretrained: load timm's ImageNet weights: from the Hugging Face cache when they are there (no network),
            else downloaded by timm when the hub can be reached. ``False``: timm's random initialisation.

    Returns:
        The model, with its :class:`~attnviz.sources.meta.ModelMeta` attached: spec (the timm name), attention
        (``"se"``, ``"eca"``, ``"sk"``, ``"splat"``, ``"gc"``, ``"bot"``), source, untrained (``not pretrained``),
        ImageNet-1k labels and timm's preprocessing (botnet26t_256 runs at 256 x 256 only).

    Raises:
        ValueError: unknown name; timm not installed; pretrained weights not cached and not downloadable
            (the message gives the reason and the cache folder looked in), or a cached file that does not load.
    """
    _check_name(name)
    try:
        import huggingface_hub  # noqa: F401  (timm's weights come through it)
        import timm
    except ImportError as e:
        raise ValueError(f"{name} needs timm and huggingface_hub ({e.name} is missing; pip install timm)") from None
    if not pretrained:
        model = timm.create_model(name, pretrained=False)
        source = "random"
    else:
        w = timm_weights(name)
        if w is None or w.cached is None:
            ok, reason = timm_availability(name)
            if not ok:
                raise ValueError(f"pretrained weights for {name} are unavailable: {reason}")
        model = create_timm(name)  # the cached file, else timm's download
        source = f"timm {name} (ImageNet)"
    labels, pre = timm_meta(model)
    n = int(model.pretrained_cfg.get("num_classes", 1000))
    if not labels or len(labels) != n or n != 1000:
        raise ValueError(f"{model.pretrained_cfg.get('architecture')}: {n} classes, not ImageNet-1k")
    meta = ModelMeta(name, TIMM_ATTENTION[name], source, not pretrained, labels, _IMAGENET_LABELS, pre, n)
    return attach_meta(model, meta).eval()


# -- the "timm" source -----------------------------------------------------------------------------------------------
def timm_name(spec: ModelSpec) -> str:
    """The timm model name of a ``timm:NAME`` spec, checked against timm's registry (close names suggested)."""
    import timm
    from timm.models import split_model_name_tag

    name = spec.name
    if not name:
        raise ValueError("timm: needs a model name, e.g. timm:resnet18 or timm:seresnet50.ra2_in1k")
    if name.startswith("hf-hub:") or name.startswith("hf_hub:"):
        raise ValueError(f"{spec}: hub-only timm models (hf-hub:) are not supported; use a timm model name")
    if not timm.is_model(split_model_name_tag(name)[0]):
        close = difflib.get_close_matches(name, timm.list_models() + timm.list_pretrained(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
        raise ValueError(f"unknown timm model {name!r}{hint}")
    return name


@register_source("timm")
def load_timm(spec: ModelSpec, options: LoadOptions) -> tuple[nn.Module, ModelMeta]:
    """Any timm model: pretrained through :func:`attnviz.sources.hub.create_timm` (the default), random
    (``Weights.RANDOM`` or ``pretrained=False``), or a checkpoint file (the classifier rebuilt to the file's
    class count)."""
    import timm

    name = timm_name(spec)
    w = options.weights
    if w is Weights.DEMO:
        raise ValueError(f"demo weights are attnviz's resnet18 only; {spec} has none")
    random = w is Weights.RANDOM or (not isinstance(w, Path) and not options.pretrained)
    if isinstance(w, Path) or random:
        timm_weights(name)  # an invalid pretrained tag is an error here too (no network)
        model = timm.create_model(name, pretrained=False)
        attention = TIMM_ATTENTION.get(name)
        if not isinstance(w, Path):
            labels, pre = timm_meta(model)
            said = _IMAGENET_LABELS if labels else "class i"
            return model, ModelMeta(spec.text, attention, "random", True, labels, said, pre, int(model.num_classes))
        model = load_user_checkpoint(
            model,
            w,
            spec.text,
            trust_pickle=options.trust_pickle,
            rebuild=lambda n: timm.create_model(name, pretrained=False, num_classes=n),
        )
        _, pre = timm_meta(model)  # the file's classes, not the pretrained config's
        meta = ModelMeta(spec.text, attention, f"file {w.name}", False, None, "class i", pre, int(model.num_classes))
        return model, meta
    model = create_timm(name, offline=options.offline, progress=options.progress)
    labels, pre = timm_meta(model)
    cfg = model.pretrained_cfg
    full = f"{cfg.get('architecture')}.{cfg.get('tag')}" if cfg.get("tag") else name
    dataset = "ImageNet" if labels and len(labels) == 1000 else "pretrained"
    said = _IMAGENET_LABELS if labels else "class i"
    source = f"timm {full} ({dataset})"
    meta = ModelMeta(spec.text, TIMM_ATTENTION.get(full), source, False, labels, said, pre, int(model.num_classes))
    return model, meta
