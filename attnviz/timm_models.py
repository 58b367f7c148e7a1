"""timm's ImageNet-pretrained attention networks, captured by the same :class:`~attnviz.AttentionRecorder`.

The recorder hooks :class:`~attnviz.blocks.Tap` modules only. :func:`add_timm_taps` gives timm's own attention
modules parameter-free ``Tap`` children (so state-dict keys do not change) and permanent forward hooks that
route each module's attention weight through its tap, in the tap's canonical shape:

===================  ===============================  =====================================================
timm module          tap kind, shape                  what passes through the tap
===================  ===============================  =====================================================
SEModule, Eca/Ceca   ``channel`` (B, C)               the output of the module's ``gate`` (the sigmoid)
SelectiveKernel      ``branch`` (B, K, C)             the output of its ``attn`` (softmax over K paths)
SplitAttn            ``branch`` (B, R, C)             the output of its ``rsoftmax`` (softmax over R radix
                     (``channel`` if R = 1)           splits, or the sigmoid when R = 1)
GlobalContext        ``spatial`` (B, H, W)            softmax over H*W of its ``conv_attn`` output
                     + ``channel`` (B, C)             (recomputed; the module's softmax is inline), and its
                                                      ``gate`` when it has ``mlp_scale``
BottleneckAttn       ``pairwise`` (B, heads, N, N)    softmax(q k * scale + rel. pos. logits), recomputed from
                                                      its ``qkv`` output with the module's own ``pos_embed``
===================  ===============================  =====================================================

A hook does nothing unless its tap is hooked (by a recorder), so a plain forward pays nothing. Papers: SENet
(Hu et al., CVPR 2018), ECA-Net (Wang et al., CVPR 2020), SKNet (Li et al., CVPR 2019), ResNeSt (Zhang et al.,
CVPRW 2022, arXiv:2004.08955), GCNet (Cao et al., ICCVW 2019, arXiv:1904.11492), BoTNet (Srinivas et al.,
CVPR 2021, arXiv:2101.11605).

Weights come from the Hugging Face hub cache (``$HF_HOME/hub``, read by ``huggingface_hub``): a cached
``model.safetensors`` is handed to timm's own pretrained loader as a file, with no network; otherwise timm
downloads it, when the hub can be reached. timm is imported only when a model is built.
"""

from __future__ import annotations

import math
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks.tap import Tap

__all__ = [
    "TIMM_MODELS",
    "add_timm_taps",
    "build_timm_model",
    "remove_timm_taps",
    "timm_attention_modules",
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


# -- hooks -----------------------------------------------------------------------------------------------------------
def _active(tap: Tap) -> bool:
    """Whether anything listens to ``tap`` (a recorder registers forward hooks on it)."""
    return bool(tap._forward_hooks)


class _TapHook:
    """A forward hook on a timm (sub)module that passes the attention weight it computed through ``tap``.

    A callable object, not a closure: ``copy.deepcopy(model)`` then maps ``owner`` and ``tap`` to the copy's own
    modules, and the model stays picklable. ``fn(owner, output)`` returns the weight and the (H, W) it refers to.
    """

    def __init__(
        self, owner: nn.Module, tap: Tap, fn: Callable[[nn.Module, Tensor], tuple[Tensor, tuple[int, int] | None]]
    ) -> None:
        self.owner = owner
        self.tap = tap
        self.fn = fn

    def __call__(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        if not _active(self.tap):
            return
        with torch.no_grad():
            weight, size = self.fn(self.owner, output)
        self.tap(weight, size=size)  # returns ``weight``; the hook returns None, so ``output`` is unchanged


def _gate(owner: nn.Module, out: Tensor) -> tuple[Tensor, None]:
    """SE gate (B, C, 1, 1), ECA gate (B, 1, C), GC scale gate (B, C, 1, 1): as they are (channel tap)."""
    return out, None


def _sk_branch(owner: nn.Module, out: Tensor) -> tuple[Tensor, None]:
    """SelectiveKernelAttn output: softmax over the K paths, (B, K, C, 1, 1)."""
    return out, None


def _radix(owner: nn.Module, out: Tensor) -> tuple[Tensor, None]:
    """RadixSoftmax output (B, R*C), laid out radix-major as SplitAttn reads it -> (B, R, C); (B, C) when R = 1."""
    if owner.radix > 1:
        return out.reshape(out.shape[0], owner.radix, -1), None
    return out, None


def _gc_spatial(owner: nn.Module, logits: Tensor) -> tuple[Tensor, None]:
    """GlobalContext: conv_attn output (B, 1, H, W) -> softmax over the H*W positions, as the module does it."""
    b, _, h, w = logits.shape
    attn = F.softmax(logits.reshape(b, 1, h * w), dim=-1)  # (B, 1, H*W), the same op as GlobalContext.forward
    return attn.reshape(b, 1, h, w), None


def _bot_pairwise(owner: nn.Module, qkv: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """BottleneckAttn: its qkv output (B, 2*Dqk + Dv, H, W) -> softmax over keys, (B, heads, N, N), N = H*W.

    The same ops as ``BottleneckAttn.forward``: q, k per head, relative logits from the module's ``pos_embed``,
    timm's ``scale`` (applied to the position logits too when ``scale_pos_embed``).
    """
    b, _, h, w = qkv.shape
    heads = owner.num_heads
    q, k, _ = torch.split(qkv, [owner.dim_out_qk, owner.dim_out_qk, owner.dim_out_v], dim=1)
    q = q.reshape(b * heads, owner.dim_head_qk, -1).transpose(-1, -2)  # (B*heads, N, d)
    k = k.reshape(b * heads, owner.dim_head_qk, -1)  # (B*heads, d, N)
    if owner.scale_pos_embed:
        attn = (q @ k + owner.pos_embed(q)) * owner.scale
    else:
        attn = (q @ k) * owner.scale + owner.pos_embed(q)
    attn = attn.softmax(dim=-1)  # (B*heads, N, N), batch-major as timm's reshape
    return attn.view(b, heads, h * w, h * w), (h, w)


def _attach(owner: nn.Module, tap_name: str, kind: str, hooked: nn.Module, fn: Callable) -> None:
    if tap_name in owner._modules:
        raise ValueError(f"{type(owner).__name__} already has a submodule named {tap_name!r}")
    tap = Tap(kind)
    owner.add_module(tap_name, tap)
    hooked.register_forward_hook(_TapHook(owner, tap, fn))


def _adapters() -> dict[type[nn.Module], Callable[[nn.Module], None]]:
    """timm attention class -> the function that gives one instance its taps and hooks."""
    from timm.layers import CecaModule, EcaModule, GlobalContext, SelectiveKernel, SEModule, SplitAttn
    from timm.layers.bottleneck_attn import BottleneckAttn  # not re-exported by timm.layers

    def se(m: nn.Module) -> None:  # SEModule, EcaModule, CecaModule: out = x * gate(...)
        _attach(m, "tap", "channel", m.gate, _gate)

    def sk(m: nn.Module) -> None:
        _attach(m, "tap", "branch", m.attn, _sk_branch)

    def splat(m: nn.Module) -> None:
        _attach(m, "tap", "branch" if m.radix > 1 else "channel", m.rsoftmax, _radix)

    def gc(m: nn.Module) -> None:
        if m.conv_attn is not None:  # else the context is a plain mean: no attention weight to show
            _attach(m, "tap", "spatial", m.conv_attn, _gc_spatial)
        if m.mlp_scale is not None:  # the gate is used only on the scale path
            _attach(m, "gate_tap", "channel", m.gate, _gate)

    def bot(m: nn.Module) -> None:
        _attach(m, "tap", "pairwise", m.qkv, _bot_pairwise)

    return {
        SEModule: se,
        EcaModule: se,
        CecaModule: se,
        SelectiveKernel: sk,
        SplitAttn: splat,
        GlobalContext: gc,
        BottleneckAttn: bot,
    }


def add_timm_taps(model: nn.Module) -> dict[str, nn.Module]:
    """Give every timm attention module in ``model`` its taps and hooks (in place; a second call adds nothing).

    Taps have no parameters or buffers, so ``model.state_dict()`` keys are unchanged.

    Returns:
        The adapted modules by path (the same as :func:`timm_attention_modules`).
    """
    adapters = _adapters()
    for module in model.modules():
        adapt = adapters.get(type(module))
        if adapt is not None and not any(isinstance(c, Tap) for c in module.children()):
            adapt(module)
    return timm_attention_modules(model)


def remove_timm_taps(model: nn.Module) -> None:
    """Undo :func:`add_timm_taps`: remove its hooks and taps (works on a deep copy too, whose handles would not)."""
    for module in model.modules():
        for key in [k for k, hook in module._forward_hooks.items() if isinstance(hook, _TapHook)]:
            del module._forward_hooks[key]
            module._forward_hooks_with_kwargs.pop(key, None)
            module._forward_hooks_always_called.pop(key, None)
    for module in list(timm_attention_modules(model).values()):
        for name in [n for n, c in module.named_children() if isinstance(c, Tap)]:
            delattr(module, name)


def timm_attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The timm attention modules that carry taps, by module path (their output is the block's feature map)."""
    return {name: m for name, m in model.named_modules() if any(isinstance(c, Tap) for c in m.children())}


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
    attnviz's ``ATTNVIZ_OFFLINE``, the app's default), or ``None`` (see :func:`attnviz.hub.offline_reason`)."""
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
    """Labels and preprocessing for ``model``: torchvision's ImageNet-1k categories (timm's class order is the
    same), mean/std/interpolation from timm's pretrained config; ``resize_size`` = input size / crop_pct, as
    timm's eval transform resizes before its centre crop (torchvision's ``resize_size`` means the same)."""
    from torchvision.models import ResNet50_Weights

    cfg = model.pretrained_cfg
    h, w = cfg["input_size"][1:]
    crop = float(cfg.get("crop_pct") or 0.875)
    categories = list(ResNet50_Weights.DEFAULT.meta["categories"])
    if len(categories) != int(cfg.get("num_classes", 1000)):
        raise ValueError(f"{cfg.get('architecture')}: {cfg.get('num_classes')} classes, not ImageNet-1k")
    return {
        "categories": categories,
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "resize_size": [math.floor(min(h, w) / crop)],
        "input_size": [int(h), int(w)],
        "crop_pct": crop,
        "interpolation": str(cfg.get("interpolation", "bicubic")),
        "fixed_input_size": bool(cfg.get("fixed_input_size", False)),
    }


def build_timm_model(name: str, *, pretrained: bool = True) -> nn.Module:
    """timm's ``name`` (``timm.create_model``) with taps on its attention modules, in eval mode.

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
    add_timm_taps(model)
    model.arch = name  # type: ignore[assignment]
    model.attention = TIMM_ATTENTION[name]  # type: ignore[assignment]
    model.weights_source = source  # type: ignore[assignment]
    model.untrained_attention = not pretrained  # type: ignore[assignment]
    model.weights_meta = _meta(model)  # type: ignore[assignment]
    return model.eval()
