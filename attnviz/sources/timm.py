"""timm's ImageNet-pretrained attention networks: the six listed in the app, and their weights from the hub cache.

Their attention is captured by :class:`~attnviz.AttentionRecorder` through the exact adapters for timm's classes
(:mod:`attnviz.capture.adapters`: SEModule, EcaModule, SelectiveKernel, SplitAttn, GlobalContext, BottleneckAttn, ...);
nothing is added to the model. Any other timm network loads through ``attnviz.load_model("timm:NAME")``.

Weights come from the Hugging Face hub cache (``$HF_HOME/hub``, read by ``huggingface_hub``): a cached
``model.safetensors`` is handed to timm's own pretrained loader as a file, with no network; otherwise timm
downloads it, when the hub can be reached. timm is imported only when a model is built.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from torch import nn

__all__ = [
    "TIMM_MODELS",
    "build_timm_model",
    "timm_availability",
]

#: timm model name (with its pretrained tag) -> a short description: attention, paper, ImageNet top-1 (timm's).
TIMM_MODELS: dict[str, str] = {
    "seresnet50.ra2_in1k": "SE-ResNet-50: squeeze-and-excitation channel gates (SENet, Hu et al., CVPR 2018); 80.3 %",
    "ecaresnet50d.miil_in1k": "ECA-ResNet-50d: efficient channel attention (ECA-Net, Wang et al., CVPR 2020); 80.6 %",
    "skresnet34.ra_in1k": "SK-ResNet-34: selective kernel branch weights (SKNet, Li et al., CVPR 2019); 77.0 %",
    "resnest50d.in1k": "ResNeSt-50d: split attention over radix splits (ResNeSt, Zhang et al., 2020); 81.0 %",
    "gcresnet50t.ra2_in1k": "GC-ResNet-50t: global context spatial softmax (GCNet, Cao et al., ICCVW 2019); 80.9 %",
    "botnet26t_256.c1_in1k": "BoTNet-26t: multi-head self-attention, 256 px only (BoTNet, Srinivas et al., "
    "CVPR 2021); 79.3 %",
}

#: timm model name -> the short attention label set as ``model.attention``.
TIMM_ATTENTION: dict[str, str] = {
    "seresnet50.ra2_in1k": "se",
    "ecaresnet50d.miil_in1k": "eca",
    "skresnet34.ra_in1k": "sk",
    "resnest50d.in1k": "splat",
    "gcresnet50t.ra2_in1k": "gc",
    "botnet26t_256.c1_in1k": "bot",
}

#: Seconds a hub reachability probe may take; its answer is kept for ``_PROBE_TTL_S``.
HUB_PROBE_TIMEOUT_S = 2.0
_PROBE_TTL_S = 60.0
_WEIGHT_FILE = "model.safetensors"  # what timm's hub loader reads first (timm.models._hub.HF_SAFE_WEIGHTS_NAME)


# -- weights ---------------------------------------------------------------------------------------------------------
def _check_name(name: str) -> None:
    if name not in TIMM_MODELS:
        raise ValueError(f"unknown timm model {name!r}; valid names: {', '.join(TIMM_MODELS)}")


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _repo_cache(name: str) -> str:
    return os.path.join(_hub_cache_dir(), f"models--timm--{name}")


def _cached_file(name: str) -> str | None:
    """Path of ``timm/<name>``'s ``model.safetensors`` in the hub cache (revision ``main``), or ``None``."""
    from .hub import hf_cached_file

    return hf_cached_file(f"timm/{name}", _WEIGHT_FILE)


def _downloads_off() -> str | None:
    """The variable that turns downloads off (``HF_HUB_OFFLINE``, read by huggingface_hub at import or now, or
    attnviz's ``ATTNVIZ_OFFLINE``, the app's default), or ``None`` (see :func:`attnviz.sources.hub.offline_reason`)."""
    import huggingface_hub.constants  # noqa: F401  (its HF_HUB_OFFLINE, read at import, counts too)

    from .hub import offline_reason

    why = offline_reason()
    return why.removesuffix("=1") if why else None


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
        import huggingface_hub  # noqa: F401
        import timm  # noqa: F401
    except ImportError as e:
        return False, f"{e.name} is not installed (pip install timm, which brings huggingface_hub)"
    path = _cached_file(name)
    if path is not None:
        return True, f"cached: {path}"
    where = f"not in the Hugging Face cache ({_repo_cache(name)})"
    off = _downloads_off()
    if off is not None:
        return False, f"{where} and downloads are off ({off}=1)"
    error = _hub_error()
    if error is not None:
        return False, f"{where} and {error}"
    return True, f"not cached; timm downloads it from the hub (timm/{name}) on first use"


def _meta(model: nn.Module) -> dict[str, Any]:
    """Labels and preprocessing for ``model``: :func:`attnviz.sources.loading.timm_meta` (timm's pretrained config),
    which
    must give ImageNet-1k's categories for these networks."""
    from .loading import timm_meta

    meta = timm_meta(model)
    n = int(model.pretrained_cfg.get("num_classes", 1000))
    if not meta["categories"] or len(meta["categories"]) != n or n != 1000:
        raise ValueError(f"{model.pretrained_cfg.get('architecture')}: {n} classes, not ImageNet-1k")
    return meta


def build_timm_model(name: str, *, pretrained: bool = True) -> nn.Module:
    """timm's ``name`` (``timm.create_model``), in eval mode.

    Args:
        name: a key of :data:`TIMM_MODELS`.
        pretrained: load timm's ImageNet weights: from the Hugging Face cache when they are there (no network),
            else downloaded by timm when the hub can be reached. ``False``: timm's random initialisation.

    Returns:
        The model, with ``arch`` (the timm name), ``attention`` (``"se"``, ``"eca"``, ``"sk"``, ``"splat"``,
        ``"gc"``, ``"bot"``), ``weights_source``, ``untrained_attention`` (``not pretrained``) and
        ``weights_meta`` (categories, mean, std, resize_size, input_size, crop_pct, interpolation,
        fixed_input_size: botnet26t_256 runs at 256 x 256 only).

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
        path = _cached_file(name)
        if path is not None:
            try:  # timm's own pretrained loader, reading the cached file (no hub request, no retries)
                model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": path})
            except Exception as e:
                raise ValueError(f"cached weights for {name} ({path}) do not load: {type(e).__name__}: {e}") from None
        else:
            ok, reason = timm_availability(name)
            if not ok:
                raise ValueError(f"pretrained weights for {name} are unavailable: {reason}")
            from .hub import hf_no_telemetry

            hf_no_telemetry()  # no agent-registry request before the download
            try:
                model = timm.create_model(name, pretrained=True)
            except Exception as e:
                why = f"{type(e).__name__}: {e}"
                raise ValueError(f"pretrained weights for {name} could not be fetched: {why}") from None
        source = f"timm {name} (ImageNet)"
    model.arch = name  # type: ignore[assignment]
    model.attention = TIMM_ATTENTION[name]  # type: ignore[assignment]
    model.weights_source = source  # type: ignore[assignment]
    model.untrained_attention = not pretrained  # type: ignore[assignment]
    model.weights_meta = _meta(model)  # type: ignore[assignment]
    return model.eval()
