"""A model's structure and what discovery found in it, cached per model: module paths (also of modules kept in plain
lists), the adapters' sites, the discovered sites (:mod:`.discover`), and the tensor helpers the hook engine and
discovery share. The caches never keep a model alive (weak keys; the model itself is stood in for by a placeholder
in what they hold)."""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from ..blocks.tap import Tap
from .adapters import adapter_sites
from .sites import Site

__all__ = [
    "Discovery",
    "Structure",
    "cache_discovery",
    "cached_discovery",
    "first_tensor",
    "module_paths",
    "remember_layout",
    "structure",
    "submodules",
    "tensors_in",
]


def first_tensor(args: tuple) -> Tensor | None:
    """The first tensor among a call's positional arguments."""
    for a in args:
        if isinstance(a, Tensor):
            return a
    return None


def tensors_in(obj: Any) -> Iterator[Tensor]:
    """Every tensor in a (nested) output: a tensor, a tuple/list, a dict."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from tensors_in(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from tensors_in(o)


def module_paths(model: nn.Module) -> dict[int, tuple[str, nn.Module]]:
    """id(module) -> (path, module) for every module of ``model``: registered ones by their ``named_modules`` path,
    and modules kept in plain Python lists, tuples or dicts (not registered, common in copied code) as
    ``parent.attr[i]`` (their own children below that)."""
    found: dict[int, tuple[str, nn.Module]] = {}
    _walk(found, "", model)
    return found


def _walk(found: dict[int, tuple[str, nn.Module]], prefix: str, module: nn.Module) -> None:
    """:func:`module_paths`' recursion (a module-level function: a recursive closure is a reference cycle, function
    -> cell -> function, that would keep ``found``, and the model, alive until the next full garbage collection)."""
    for name, m in module.named_modules(prefix=prefix):
        if id(m) in found:
            continue
        found[id(m)] = (name, m)
        for attr, value in vars(m).items():
            if attr.startswith("_") or not isinstance(value, (list, tuple, dict)):
                continue
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(item, nn.Module) and id(item) not in found:
                    _walk(found, f"{name}.{attr}[{key}]" if name else f"{attr}[{key}]", item)


@dataclass
class Discovery:
    """What discovery found in a model.

    Attributes:
        sites: the attention sites, in forward order.
        skipped: (name, shape, reason) of gates that are not attention (activations, the classifier's softmax).
        unclassified: (name, shape, reason) of weights whose layout fits no kind.
        unread: the sites of those weights: recorded only where the user declares their kind (``sites=``).
        fingerprint: the model's module structure when discovered (a changed model is discovered again).
    """

    sites: list[Site] = field(default_factory=list)
    skipped: list[tuple[str, tuple[int, ...], str]] = field(default_factory=list)
    unclassified: list[tuple[str, tuple[int, ...], str]] = field(default_factory=list)
    unread: list[Site] = field(default_factory=list)
    fingerprint: tuple[int, ...] = ()


_CACHE: weakref.WeakKeyDictionary[nn.Module, Discovery] = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


@dataclass
class Structure:
    """What a model's module tree says before any forward (cached per model while its modules stay the same).

    Attributes:
        fingerprint: ids of ``model.modules()``, in order: a changed tree is read again (and discovered again).
        paths: :func:`module_paths`.
        taps: attnviz's :class:`~attnviz.blocks.Tap` modules by path.
        tapped: ids of the modules that hold taps (their insides are the taps' business).
        adapter_sites: the sites of known library classes (:func:`attnviz.capture.adapters.adapter_sites`).
        adapted: ids of the adapted modules.
    """

    fingerprint: tuple[int, ...]
    paths: dict[int, tuple[str, nn.Module]]
    taps: dict[str, nn.Module]
    tapped: set[int]
    adapter_sites: list[Site]
    adapted: set[int]


_STRUCTURES: weakref.WeakKeyDictionary[nn.Module, Structure] = weakref.WeakKeyDictionary()


def submodules(model: nn.Module) -> list[nn.Module]:
    """Every registered module of ``model`` (depth first; a shared module once per place): the walk
    ``model.modules()`` does, without its generator and name bookkeeping (a recorder does it per request)."""
    out: list[nn.Module] = []
    stack = [model]
    while stack:
        m = stack.pop()
        out.append(m)
        stack.extend(c for c in reversed(m._modules.values()) if c is not None)
    return out


def structure(model: nn.Module) -> Structure:
    """The model's :class:`Structure`, read once per module tree (a recorder per request costs one walk)."""
    fp = tuple(map(id, submodules(model)))
    with _CACHE_LOCK:
        known = _STRUCTURES.get(model)
    if known is None or known.fingerprint != fp:
        paths = module_paths(model)
        taps = {p: m for p, m in paths.values() if isinstance(m, Tap)}
        tapped = {id(m) for _, m in paths.values() if any(isinstance(c, Tap) for c in m.children())}
        sites, adapted = adapter_sites(paths)
        known = Structure(fp, _rebind_paths(paths, model, _ROOT), taps, tapped, _rebind(sites, model, _ROOT), adapted)
        with _CACHE_LOCK:
            _STRUCTURES[model] = known
    return dataclasses.replace(
        known, paths=_rebind_paths(known.paths, _ROOT, model), adapter_sites=_rebind(known.adapter_sites, _ROOT, model)
    )


def remember_layout(model: nn.Module, site: Site) -> None:
    """Keep the layout a computed adapter site learnt in a forward (its ``ref`` and ``grid``,
    :meth:`DiscoveryPass.judge`) in the model's cached :class:`Structure`, for later recorders of this model."""
    with _CACHE_LOCK:
        known = _STRUCTURES.get(model)
        if known is None:
            return
        for s in known.adapter_sites:
            if s.name == site.name and s.owner is site.owner:
                s.ref = _ROOT if site.ref is model else site.ref  # the cache never holds the model (its key)
                s.grid = _ROOT if site.grid is model else site.grid
                s.qgrid = _ROOT if site.qgrid is model else site.qgrid
                s.tokens = site.tokens


def cached_discovery(model: nn.Module, fp: tuple[int, ...]) -> Discovery | None:
    """The cached discovery of ``model`` if its modules have not changed since."""
    with _CACHE_LOCK:
        d = _CACHE.get(model)
    if d is None or d.fingerprint != fp:
        return None
    return dataclasses.replace(d, sites=_rebind(d.sites, _ROOT, model), unread=_rebind(d.unread, _ROOT, model))


#: Stands for the model itself in what the caches keep: a cached value that held the model (their key) would keep
#: it alive for ever (a WeakKeyDictionary's value must not reference its key).
_ROOT = nn.Module()
_SITE_MODULES = ("owner", "ref", "attention", "grid", "qgrid")


def _rebind(sites: list[Site], old: nn.Module, new: nn.Module) -> list[Site]:
    """``sites`` with ``old`` replaced by ``new`` wherever a site names a module (copies only where it does)."""
    out = []
    for s in sites:
        swap = {f: new for f in _SITE_MODULES if getattr(s, f) is old}
        out.append(dataclasses.replace(s, **swap) if swap else s)
    return out


def _rebind_paths(
    paths: dict[int, tuple[str, nn.Module]], old: nn.Module, new: nn.Module
) -> dict[int, tuple[str, nn.Module]]:
    return {k: (p, new if m is old else m) for k, (p, m) in paths.items()}


def cache_discovery(model: nn.Module, found: Discovery) -> None:
    """Keep what a discovery pass found for ``model`` (its later recorders skip the pass), without keeping the model
    alive: the model itself is stood in for by a placeholder."""
    with _CACHE_LOCK:
        _CACHE[model] = dataclasses.replace(
            found, sites=_rebind(found.sites, model, _ROOT), unread=_rebind(found.unread, model, _ROOT)
        )
