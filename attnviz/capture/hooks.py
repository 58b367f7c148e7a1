"""The site-hook engine: one callback per attention weight a forward computes, on taps and sites alike.

The recorder (:class:`attnviz.capture.recorder.AttentionRecorder`) reads each weight; the checks' ablation
(:class:`attnviz.checks.ablate.Ablation`) replaces it by its neutral value. Both hold a :class:`SiteHooks`:

- a :class:`~attnviz.blocks.Tap`: a forward hook calls ``on_tap(name, tap, output, kwargs)``;
- a module site (``Site.ordinal is None``): a forward hook on its owner calls ``on_site(site, output, op, None)``;
- a function site (the k-th gate/softmax call during its owner's forward): a pre-hook on the owner enters a
  :class:`~torch.overrides.TorchFunctionMode` for that call, which counts the gate/softmax calls and calls
  ``on_site(site, result, op, dim)`` for the wanted ones; the owner's forward hook leaves it. A fused attention call
  (``F.scaled_dot_product_attention``) counts as a softmax: for a wanted one the mode computes its weights
  explicitly (:func:`attnviz.capture.fused.sdpa_weights`) and calls ``on_site(site, weights, "softmax", last dim)``;
  the caller gets the original call's output (a replacement weight gives ``replacement @ V`` instead);
- a computed site (``Site.compute``, e.g. ``nn.MultiheadAttention``): a forward hook with the owner's arguments
  computes the weight from its inputs (outside every function mode, so no pass counts its softmax) and calls
  ``on_site(site, weight, "softmax", last dim)``; the owner's output is untouched, unless the callback returns a
  replacement: then the output is ``Site.apply``'s (``out_proj(replacement @ V)`` for ``nn.MultiheadAttention``).

A callback returns ``None`` to leave the weight as it is, or a tensor that replaces it (the in-place ``sigmoid_``
keeps its caller's tensor: the replacement is copied into it). Which call of an owner a site means (``Site.call``) is
counted per forward of the model. The engine also keeps the input shape of every site's reference module (the
feature map a weight refers to): :attr:`SiteHooks.shapes`.

Rules (DESIGN.md, "Capture contract"): the model is locked (:func:`model_lock`) from :meth:`SiteHooks.open` to
:meth:`SiteHooks.close`, so hooked forwards of one shared model are serialised; only the thread that opened sees the
callbacks; :meth:`~SiteHooks.close` removes every hook and leaves every mode, also after a forward that raised, and is
idempotent.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from ..blocks.tap import Tap
from .fused import fused_op, sdpa_weights
from .sites import Site, gate_op, softmax_dim
from .structure import first_tensor

__all__ = ["OnSite", "OnTap", "SiteHooks", "model_lock"]

#: (map name, tap, the tap's output, the tap call's keyword arguments) -> a replacement or None
OnTap = Callable[[str, Tap, Tensor, dict[str, Any]], "Tensor | None"]
#: (site, weight, op ("sigmoid", "hardsigmoid", "softmax" or the site's op for a module output), softmax axis or None)
#: -> a replacement or None
OnSite = Callable[[Site, Tensor, str, "int | None"], "Tensor | None"]

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock that serialises hooked forwards of ``model`` (one per model object)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


def _ignore_site(site: Site, weight: Tensor, op: str, dim: int | None) -> None:
    return None


class SiteHooks:
    """Hooks on a model's taps and sites for one ``with`` of their user (module docstring).

    Args:
        model: the network.
        on_tap: called for every tap call (:meth:`taps`).
        on_site: called for every call of a site (:meth:`sites`).
        on_forward: called with ``(args, kwargs)`` at the start of every forward of ``model``, after the per-forward
            call counts are reset.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        on_tap: OnTap | None = None,
        on_site: OnSite | None = None,
        on_forward: Callable[[tuple, dict[str, Any]], None] | None = None,
    ) -> None:
        self.model = model
        self.on_tap = on_tap
        self.on_site: OnSite = on_site or _ignore_site
        self.on_forward = on_forward
        self.thread: int | None = None
        #: id(module) -> the shape of its latest input, for owners and reference modules of the hooked sites
        self.shapes: dict[int, tuple[int, ...]] = {}
        #: id(module) -> the shape of its latest output, for the sites' patch-grid modules (``Site.grid``, ``qgrid``)
        self.outputs: dict[int, tuple[int, ...]] = {}
        self._lock = model_lock(model)
        self._locked = False
        self._handles: list[RemovableHandle] = []
        self._calls: dict[int, int] = {}
        self._modes: list[tuple[nn.Module, TorchFunctionMode]] = []
        self._watched: set[object] = set()  # reference modules' ids, ("grid", id) of patch-grid modules

    @property
    def active(self) -> bool:
        """Whether hooks are in place (between :meth:`open` and :meth:`close`)."""
        return bool(self._handles)

    def open(self) -> None:
        """Lock the model, take this thread as the one that sees the callbacks, and hook the model's forward."""
        self._lock.acquire()
        self._locked = True
        try:
            self.thread = threading.get_ident()
            self._handles.append(self.model.register_forward_pre_hook(self._root_pre, with_kwargs=True))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Leave every mode, remove every hook and unlock the model (idempotent)."""
        try:
            while self._modes:  # a forward that raised inside a hooked module left its mode on the stack
                self._modes.pop()[1].__exit__(None, None, None)
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
            self._watched.clear()
        finally:
            if self._locked:
                self._locked = False
                self._lock.release()

    def mine(self) -> bool:
        """Whether the running thread is the one that opened."""
        return threading.get_ident() == self.thread

    def hook(
        self,
        module: nn.Module,
        fn: Callable[..., Any],
        *,
        pre: bool = False,
        with_kwargs: bool = False,
        always_call: bool = False,
    ) -> None:
        """A forward (or, with ``pre``, forward-pre) hook on ``module`` that runs ``fn`` in the thread that opened
        only; removed by :meth:`close`."""

        def guarded(*args: Any) -> Any:
            return fn(*args) if threading.get_ident() == self.thread else None

        if pre:
            handle = module.register_forward_pre_hook(guarded, with_kwargs=with_kwargs)
        else:
            handle = module.register_forward_hook(guarded, with_kwargs=with_kwargs, always_call=always_call)
        self._handles.append(handle)

    def taps(self, taps: dict[str, Tap]) -> None:
        """Call ``on_tap`` for every call of these taps (by map name)."""
        for name, tap in taps.items():
            self._handles.append(tap.register_forward_hook(self._tap_hook(name), with_kwargs=True))

    def sites(self, sites: list[Site]) -> None:
        """Call ``on_site`` for every call of these sites: one pre/post hook pair per owner module (counting its calls,
        holding the mode that finds its function calls), and a pre-hook per reference module (its input's shape)."""
        by_owner: dict[int, list[Site]] = {}
        for s in sites:
            by_owner.setdefault(id(s.owner), []).append(s)
        for group in by_owner.values():
            owner = group[0].owner
            self._handles.append(owner.register_forward_pre_hook(self._owner_pre(group)))
            self._handles.append(owner.register_forward_hook(self._owner_post(group), always_call=True))
            computed = [s for s in group if s.compute is not None]
            if computed:
                self._handles.append(owner.register_forward_hook(self._computed_post(computed), with_kwargs=True))
        self.watch(sites)

    def watch(self, sites: list[Site]) -> None:
        """Read the input shape of these sites' reference modules and the output shape of their patch-grid modules
        in every forward (also for sites whose ``ref``/``grid`` were learnt during a forward); each module once."""
        for s in sites:
            if s.ref is not None and id(s.ref) not in self._watched:
                self._watched.add(id(s.ref))
                self._handles.append(s.ref.register_forward_pre_hook(self._ref_pre))
            for grid in (s.grid, s.qgrid):  # the keys' and (N x M attention) the queries' grid
                if grid is not None and ("grid", id(grid)) not in self._watched:
                    self._watched.add(("grid", id(grid)))
                    self._handles.append(grid.register_forward_hook(self._grid_post))

    # -- hooks -----------------------------------------------------------------------------------------------
    def _root_pre(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if threading.get_ident() != self.thread:
            return
        self._calls.clear()
        if self.on_forward is not None:
            self.on_forward(args, kwargs)

    def _tap_hook(self, name: str) -> Callable[..., Tensor | None]:
        def hook(module: Tap, args: tuple, kwargs: dict[str, Any], output: Tensor) -> Tensor | None:
            if threading.get_ident() != self.thread or self.on_tap is None:
                return None
            return self.on_tap(name, module, output, kwargs)

        return hook

    def _owner_pre(self, group: list[Site]) -> Callable[[nn.Module, tuple], None]:
        functions = [s for s in group if s.ordinal is not None]
        reference = group[0].ref is None or group[0].ref is group[0].owner

        def hook(module: nn.Module, args: tuple) -> None:
            if threading.get_ident() != self.thread:
                return
            k = self._calls.get(id(module), 0)
            self._calls[id(module)] = k + 1
            if reference:
                x = first_tensor(args)
                if x is not None:
                    self.shapes[id(module)] = tuple(x.shape)
            wanted = {s.ordinal: s for s in functions if s.call is None or s.call == k}
            if wanted:
                mode = _SiteMode(self, wanted)
                mode.__enter__()
                self._modes.append((module, mode))

        return hook

    def _owner_post(self, group: list[Site]) -> Callable[[nn.Module, tuple, Any], Any]:
        outputs = [s for s in group if s.ordinal is None and s.compute is None]
        has_functions = any(s.ordinal is not None for s in group)

        def hook(module: nn.Module, args: tuple, output: Any) -> Any:
            if threading.get_ident() != self.thread:
                return None
            if has_functions and self._modes and self._modes[-1][0] is module:
                self._modes.pop()[1].__exit__(None, None, None)
            k = self._calls.get(id(module), 1) - 1
            replaced = None
            for s in outputs:
                if (s.call is None or s.call == k) and isinstance(output, Tensor):
                    new = self.on_site(s, output, s.op, None)
                    if new is not None:
                        output = replaced = new
            return replaced

        return hook

    def _computed_post(self, computed: list[Site]) -> Callable[..., Any]:
        def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
            if threading.get_ident() != self.thread:
                return None
            k = self._calls.get(id(module), 1) - 1
            replaced = None
            for s in computed:
                if s.call is None or s.call == k:
                    with torch._C.DisableTorchFunction():  # no mode (a discovery pass's, a site's) sees this softmax
                        weight = s.compute(module, args, kwargs)  # type: ignore[misc]
                    new = self.on_site(s, weight, "softmax", weight.dim() - 1)
                    if new is not None:  # a replacement (the checks' ablation): the output it gives
                        if s.apply is None:
                            raise NotImplementedError(f"{s.name}: replacing its computed weights is not supported")
                        with torch._C.DisableTorchFunction():
                            replaced = s.apply(module, args, kwargs, replaced or output, new)
            return replaced

        return hook

    def _ref_pre(self, module: nn.Module, args: tuple) -> None:
        if threading.get_ident() == self.thread:
            x = first_tensor(args)
            if x is not None:
                self.shapes[id(module)] = tuple(x.shape)

    def _grid_post(self, module: nn.Module, args: tuple, output: Any) -> None:
        if threading.get_ident() == self.thread and isinstance(output, Tensor):
            self.outputs[id(module)] = tuple(output.shape)


class _SiteMode(TorchFunctionMode):
    """Active during one call of a site's owner module: counts its gate/softmax calls, hands the wanted ones to the
    engine's ``on_site`` and returns what it gives back."""

    def __init__(self, hooks: SiteHooks, wanted: dict[int | None, Site]) -> None:
        super().__init__()
        self.hooks = hooks
        self.wanted = wanted
        self.count = 0

    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        op = gate_op(func)
        if op is None and fused_op(func) is not None and isinstance(out, Tensor):
            site = self.wanted.get(self.count)
            self.count += 1
            if site is None:  # not kept: nothing computed
                return out
            weights = sdpa_weights(args, kwargs)  # (B, heads, Nq, Nk) float32
            new = self.hooks.on_site(site, weights, "softmax", weights.dim() - 1)
            return out if new is None else _apply_weights(new, args, kwargs, out)
        if op is not None and isinstance(out, Tensor):
            site = self.wanted.get(self.count)
            self.count += 1
            if site is not None:
                new = self.hooks.on_site(site, out, op, softmax_dim(func, args, kwargs, out.dim()))
                if new is not None:
                    if getattr(func, "__name__", "").endswith("_"):  # in place (sigmoid_): the caller keeps its tensor
                        return out.copy_(new)
                    return new
        return out


def _apply_weights(weights: Tensor, args: tuple, kwargs: dict, out: Tensor) -> Tensor:
    """A fused attention call's output with its weights replaced: ``weights @ V`` (K/V heads repeated for GQA),
    in the original output's dtype."""
    value = kwargs.get("value", args[2] if len(args) > 2 else None)  # (..., Hk, S, Ev)
    if value.dim() >= 3 and value.shape[-3] != weights.shape[-3]:
        value = value.repeat_interleave(weights.shape[-3] // value.shape[-3], dim=-3)
    return (weights.to(value.dtype) @ value).to(out.dtype)  # (..., Hq, L, Ev)
