"""Pretrained weights on demand, through the libraries' own loaders, and the offline refusal.

timm's weights come through ``huggingface_hub`` (``$HF_HOME/hub``), torchvision's through its Weights API
(``$TORCH_HOME/hub/checkpoints``); both show a progress bar while downloading. A file already in its cache is read
from there with no request at all. ``offline=True``, ``HF_HUB_OFFLINE=1`` or ``ATTNVIZ_OFFLINE=1`` forbid
downloads: a network whose file is not cached is then refused at once (:class:`OfflineError`), with no request,
naming the file, where it belongs and how to get it. Nothing else goes out: no probes, no version checks.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

__all__ = [
    "OfflineError",
    "TimmWeights",
    "create_timm",
    "hf_cached_file",
    "hf_no_telemetry",
    "offline_reason",
    "timm_weights",
    "torchvision_cache_file",
    "torchvision_state_dict",
]

_ON = {"1", "on", "yes", "true"}
#: What timm's hub loader asks for, in order, when the pretrained config names no file (timm.models._hub).
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class OfflineError(ValueError):
    """Downloads are off and the weights a network needs are not in their cache."""


def _on(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in _ON


def offline_reason(offline: bool | None = None) -> str | None:
    """Why downloads are off (``"--offline"``, ``"HF_HUB_OFFLINE=1"``, ``"ATTNVIZ_OFFLINE=1"``), or ``None``.

    ``offline=True`` forces it; ``None``/``False`` leave it to the environment (``HF_HUB_OFFLINE`` as read now or by
    huggingface_hub at its import, and ``ATTNVIZ_OFFLINE``). huggingface_hub is not imported by this check.
    """
    if offline:
        return "--offline"
    constants = sys.modules.get("huggingface_hub.constants")
    if _on("HF_HUB_OFFLINE") or bool(getattr(constants, "HF_HUB_OFFLINE", False)):
        return "HF_HUB_OFFLINE=1"
    if _on("ATTNVIZ_OFFLINE"):
        return "ATTNVIZ_OFFLINE=1"
    return None


def hf_no_telemetry() -> None:
    """Turn huggingface_hub's telemetry off (``HF_HUB_DISABLE_TELEMETRY``): without it, building the request
    headers also fetches ``{endpoint}/api/agent-harnesses`` (an agent-detection registry) before a download."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # for huggingface_hub imported later, and subprocesses
    from huggingface_hub import constants

    constants.HF_HUB_DISABLE_TELEMETRY = True  # read at import; set as the variable would have


@contextlib.contextmanager
def _hf_progress(progress: bool) -> Iterator[None]:
    """huggingface_hub's and timm's download progress bars on or off for the duration (then as they were)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_off = are_progress_bars_disabled()
    if progress and was_off and not _on("HF_HUB_DISABLE_PROGRESS_BARS"):
        enable_progress_bars()
    elif not progress and not was_off:
        disable_progress_bars()
    try:
        yield
    finally:
        if are_progress_bars_disabled() != was_off:
            (disable_progress_bars if was_off else enable_progress_bars)()


def hf_cached_file(repo_id: str, filename: str, revision: str | None = None) -> str | None:
    """Path of ``filename`` of ``repo_id`` at ``revision`` (default ``main``) in the Hugging Face cache, or ``None``.
    No network."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, filename, revision=revision)
    return path if isinstance(path, str) and os.path.isfile(path) else None


@dataclass
class TimmWeights:
    """Where timm's pretrained weights for one model name come from, and whether they are cached (no network).

    Attributes:
        name: the full name, with its pretrained tag (``seresnet50.ra2_in1k``).
        source: ``"hf-hub"`` or ``"url"`` (timm's own two download sources).
        location: the hub repository (``timm/seresnet50.ra2_in1k``) or the URL.
        files: the file names timm asks for, in order.
        cache: the folder they are cached in.
        cached: the cached file, or ``None``.
        revision: the hub revision (``None``: ``main``).
    """

    name: str
    source: str
    location: str
    files: tuple[str, ...]
    cache: str
    cached: str | None
    revision: str | None = None


def timm_weights(name: str) -> TimmWeights | None:
    """Where ``name``'s pretrained weights come from (``None``: timm has none for it). No network.

    Raises:
        ValueError: an invalid pretrained tag (the valid ones are listed).
    """
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:
        arch = split_model_name_tag(name)[0]
        tags = timm.list_pretrained(f"{arch}.*")
        raise ValueError(
            f"timm has no pretrained weights {name!r}; those of {arch}: {', '.join(tags) or 'none'}"
        ) from None
    if cfg is None:
        return None
    full = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else str(cfg.architecture)
    if cfg.hf_hub_id:
        from huggingface_hub import constants

        repo, _, revision = str(cfg.hf_hub_id).partition("@")
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_WEIGHT_FILES
        cached = next((p for f in files if (p := hf_cached_file(repo, f, revision or None))), None)
        cache = os.path.join(str(constants.HF_HUB_CACHE), "models--" + repo.replace("/", "--"))
        return TimmWeights(full, "hf-hub", repo, tuple(files), cache, cached, revision or None)
    url = cfg.url[0] if isinstance(cfg.url, (tuple, list)) else cfg.url
    if not url:
        return None
    filename = cfg.url[1] if isinstance(cfg.url, (tuple, list)) else os.path.basename(urlparse(url).path)
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    path = os.path.join(cache, filename)
    return TimmWeights(full, "url", url, (filename,), cache, path if os.path.isfile(path) else None)


def _timm_refusal(w: TimmWeights, why: str, retry: str = "run once without --offline") -> str:
    if w.source == "hf-hub":
        missing = f"{w.files[0]} of {w.location}, looked for in the Hugging Face cache folder {w.cache}"
        fetch = f"copy that folder from a machine where it is cached (`hf download {w.location} {w.files[0]}` fills it)"
    else:
        missing = os.path.join(w.cache, w.files[0])
        fetch = f"place {w.location} there"
    return (
        f"timm:{w.name}: {why}, and its pretrained weights are not cached (missing: {missing}). To get them, "
        f"{retry} (timm downloads them into that cache), or {fetch}, or use random weights (pretrained=False)"
    )


def create_timm(name: str, *, offline: bool | None = None, progress: bool = True, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=True, **kwargs)``: read from the cache when the file is there (no
    request), else downloaded by timm (huggingface_hub, or torch.hub for URL-only weights) unless offline.

    Raises:
        OfflineError: offline and not cached (at once, no request).
        ValueError: no pretrained weights for ``name``, the download failed, or the cached file does not load.
    """
    import timm

    w = timm_weights(name)
    if w is None:
        raise ValueError(f"timm has no pretrained weights for {name!r}; use random weights (pretrained=False)")
    if w.cached is not None:
        try:  # timm's own pretrained loader, reading the cached file: no hub request
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": w.cached}, **kwargs)
        except Exception as e:
            raise ValueError(
                f"cached weights of timm:{w.name} ({w.cached}) do not load: {type(e).__name__}: {e}"
            ) from None
    why = offline_reason(offline)
    if why is not None:
        raise OfflineError(_timm_refusal(w, f"offline ({why})"))
    from timm.models import _builder

    hf_no_telemetry()
    was = getattr(_builder, "_DOWNLOAD_PROGRESS", False)
    _builder.set_pretrained_download_progress(progress)  # URL-only weights (torch.hub); the hub's bars: hf's
    try:
        with _hf_progress(progress):
            return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        why = f"the download from {w.location} failed ({type(e).__name__}: {first})"
        raise ValueError(_timm_refusal(w, why, "check the network and run again")) from None
    finally:
        _builder.set_pretrained_download_progress(was)


def torchvision_cache_file(weights: Any) -> Path:
    """Where torchvision's Weights API caches ``weights`` (``$TORCH_HOME/hub/checkpoints/<file name of its URL>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def torchvision_state_dict(
    weights: Any, *, offline: bool | None = None, progress: bool = True, what: str | None = None
) -> dict[str, Tensor]:
    """``weights.get_state_dict`` (torchvision's Weights API): the cached file, else downloaded there unless offline.
    Read with ``weights_only=True``. The one place torchvision's weights are fetched (its networks, and the
    backbones of attnviz's ResNets); ``what`` names them in the errors (default ``torchvision <weights>``).

    Raises:
        OfflineError: offline and not cached (at once, no request).
        ValueError: the download failed, or the file does not read as a state dict.
    """
    what = what or f"torchvision {weights}"
    path = torchvision_cache_file(weights)
    how = f"place that file there (from {weights.url})"
    if not path.is_file():
        why = offline_reason(offline)
        if why is not None:
            raise OfflineError(
                f"{what}: offline ({why}), and its weights are not cached (missing: {path}). "
                f"To get it, run once without --offline (torchvision downloads it there), or {how}"
            )
    try:
        return weights.get_state_dict(progress=progress, check_hash=True, weights_only=True)
    except Exception as e:  # no network (URLError), a timeout, a bad hash, a full disk, an unsafe pickle
        reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
        if path.is_file():
            raise ValueError(f"{what}: the weights could not be read ({path}: {reason}); {how}") from None
        raise ValueError(
            f"{what}: the weights are not cached ({path}) and could not be downloaded ({reason}); {how}"
        ) from None
