"""Discovery: find the attention sites of a network that attnviz did not build, in one instrumented forward.

During the first recorded forward of a model, global module hooks keep the stack of running modules (modules kept
in plain Python lists included) and a :class:`~torch.overrides.TorchFunctionMode` sees every gate and softmax
function call (``torch.sigmoid``, ``Tensor.sigmoid``, ``sigmoid_``, ``F.softmax``, ``torch.softmax``,
``Tensor.softmax``, ``F.hardsigmoid``, ...) and every multiplication. Each gate or softmax becomes a :class:`Site`
unless it is:

- an activation: its output is multiplied by its own input (x·sigmoid(x): SiLU/Swish, x·hardsigmoid(x): h-swish);
- a constant: its input does not depend on the image, only on parameters and buffers (ConViT's per-head gate
  sigmoid(gating_param), d'Ascoli et al. 2021, weights heads, not channels, and is the same for every image);
  SiLU/GELU/Hardswish modules call none of the gate functions and are never seen;
- an output activation: its result reaches the model's output without weighting a feature map (the classifier's
  softmax, a detection head's ``torch.cat((box, cls.sigmoid()), 1)``);
- part of another weight: its result feeds another gate or softmax and weights no feature map itself (EPSANet's
  shared SE sigmoid, whose four results only feed the softmax across scales that weights the features);
- inside a module that another source already covers (attnviz's taps, an adapter).

The last three are decided from the dataflow the pass sees, not from names: every tensor computed from a weight
(views, expands, concatenations, arithmetic) carries that weight along; a product with a tensor that carries no
weight (``x * gate``, ``attn @ v``, ``F.linear(attn, memory)``, an einsum) *applies* it to features, and the
product carries nothing further. A weight whose result is never applied, but reaches the model's output or another
weight's input, is not a site. A weight whose trail is lost (``.item()``, ``.detach()`` and numpy, code the pass
cannot see) stays a site.

A fused attention call (``F.scaled_dot_product_attention``: timm's ViTs) is a softmax whose weights never exist:
the pass computes them explicitly (:func:`attnviz.capture.fused.sdpa_weights`) and judges them as it judges an
explicit softmax of the same shape; the call itself applies them (to V), and its output is the original call's.

A gate applied to a permuted copy of a feature map (``x.permute(...)``, followed through ``contiguous`` and ``clone``)
whose product is permuted back to the map's layout (triplet attention, Misra et al., WACV 2021) is read on the map's
own axes (:func:`attnviz.capture.sites.unpermuted_gate`), in later forwards too (its site's transform).

The result (:class:`Discovery`: sites, skipped activations, unclassified weights) is cached per model; later
forwards record only those sites, through cheap hooks (:mod:`attnviz.capture.recorder`). The pass itself changes no
tensor:
the model's outputs are bit-identical with and without it.
"""

from __future__ import annotations

import collections
import itertools
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from .fused import KeepPolicy, fused_op, sdpa_weights
from .kinds import Canon
from .partitions import Found, find_partition
from .sites import Site, Unpermute, canonical, gate_module_op, gate_op, softmax_dim, unpermuted_gate
from .structure import Discovery, cache_discovery, first_tensor, tensors_in
from .tokens import TokenLayout, attention_layout

__all__ = ["DiscoveryPass"]

_MULS = frozenset({"mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply"})
#: calls that weight one operand by another (a product with a tensor that carries no weight applies the weight)
_APPLY = _MULS | frozenset(
    {
        "matmul",
        "__matmul__",
        "__rmatmul__",
        "bmm",
        "mm",
        "baddbmm",
        "addbmm",
        "addmm",
        "einsum",
        "linear",
        "bilinear",
        "conv1d",
        "conv2d",
        "conv3d",
        "addcmul",
        "addcmul_",
        "tensordot",
    }
)
#: calls that lay out a tensor's axes anew (or copy it): followed for gates on permuted maps (triplet attention)
_PERMS = frozenset({"permute", "transpose", "swapaxes", "swapdims", "contiguous", "clone"})
SEQ = itertools.count()  # one order for every capture of every source: maps come out in forward order
#: one capture of the discovery pass: (seq, site, canonical weight or None when unread, weight, reference shape, dim)
Captured = tuple[int, Site, "Canon | None", Tensor, "tuple[int, ...] | None", "int | None"]


@dataclass(eq=False)
class _Frame:
    module: nn.Module
    name: str | None
    call: int
    inp: Tensor | None
    count: int = 0  # gate/softmax calls so far during this call (its submodules' included)
    out: Any = None
    tensors: int = 1  # tensors among its positional arguments
    # channel mean (B, H, W) of a 4-d output, and (B, 2, H, W) float64 of it and an input of its shape, taken when the
    # call returns: the block's activations, read before later in-place ops (``out += identity``) change the tensors
    means: tuple[Tensor, Tensor | None] | None = None


@dataclass(eq=False)
class _Event:
    seq: int
    frames: list[_Frame]  # the running modules, outermost first (a gate module's own frame excluded)
    ordinals: list[int]  # each frame's count when this weight was computed
    gate: _Frame | None  # the gate module whose output this is (module events)
    op: str
    dim: int | None
    func: str
    inp: Tensor | None
    out: Tensor
    data: Tensor
    activation: bool = False
    fused: bool = False  # a fused attention call's weights, computed explicitly
    applied: bool = False  # its result (or one computed from it) multiplied a tensor that carries no weight
    feeds: _Event | None = None  # another weight whose input was computed from this one
    constant: bool = False  # its input was computed from the model's parameters, buffers and constants only
    partition: Any = None  # a windowed softmax's partition, read when computed (DiscoveryPass._partition)
    # it gated a copy of a feature map permuted by perm, and the product was permuted back: (the map, perm)
    permuted: tuple[weakref.ref, tuple[int, ...]] | None = None


class _Mode(TorchFunctionMode):
    def __init__(self, owner: DiscoveryPass) -> None:
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.owner._on_const(func, args, kwargs, out)
        op = gate_op(func)
        if op is not None and isinstance(out, Tensor):
            self.owner._on_function(func, op, args, kwargs, out)
            return out
        name = getattr(func, "__name__", "")
        if fused_op(func) is not None and isinstance(out, Tensor):
            self.owner._on_fused(name, args, kwargs)
        if name in _MULS and len(args) >= 2:
            self.owner._on_mul(args[0], args[1])
        self.owner._on_flow(name, args, kwargs, out)
        if name in _PERMS:
            self.owner._on_perm(name, args, kwargs, out)
        return out


class DiscoveryPass:
    """The instrumentation of one discovery forward (used by :class:`attnviz.AttentionRecorder`).

    ``start()`` in the root module's forward pre-hook, ``finish(output)`` in its forward hook; ``stop()`` removes
    everything (idempotent, also after a forward that raised).

    Args:
        model: the network.
        paths: :func:`module_paths` of it.
        covered: modules whose weights another source records (attnviz's tapped blocks, adapted modules).
        fp: the model's :attr:`Structure.fingerprint` (the discovery is cached under it).
        keep: the recorder's :class:`~attnviz.capture.fused.KeepPolicy`: its limit bounds the explicit weights of
            fused attention calls that the pass holds (whole: it judges each); past it the forward stops with
            :class:`~attnviz.capture.fused.MemoryLimitError`.
        plain: ids of modules that run without the pass's function mode (adapted modules whose weights are computed
            from their inputs, ``nn.MultiheadAttention``: any active mode turns its fused fast path off, and the
            slow path's output differs in the last bits, so logits would not stay bit-identical).
    """

    def __init__(
        self,
        model: nn.Module,
        paths: dict[int, tuple[str, nn.Module]],
        covered: set[int],
        fp: tuple[int, ...],
        *,
        keep: KeepPolicy | None = None,
        plain: frozenset[int] = frozenset(),
    ) -> None:
        self.model = model
        self.plain = plain
        self._suspended: nn.Module | None = None  # a plain module running now, with the pass's mode left
        self._held = KeepPolicy() if keep is None else KeepPolicy(keep.keep, keep.limit, keep.rows)
        self.fingerprint = fp
        self.paths = paths
        self.covered = covered
        self._thread: int | None = None
        self._stack: list[_Frame] = []
        self._calls: dict[int, int] = {}
        self._events: list[_Event] = []
        self._by_out: dict[int, _Event] = {}
        # (module, (H, W), the seq of the latest weight before it) of 4-d outputs that carry no weight, in order
        self._grids: list[tuple[nn.Module, tuple[int, int], int]] = []
        self._image: tuple[int, int] | None = None  # (H, W) of the model's input image
        # id(tensor) -> (tensor, the weights it was computed from); the tensor is held so its id stays its own
        self._carries: dict[int, tuple[Tensor, frozenset[_Event]]] = {}
        # id(tensor) -> tensor computed from the model's parameters, buffers and constants only (not the image)
        self._const: dict[int, Tensor] = {}
        # id(4-d tensor) -> (it, the feature map it is a permuted copy of, perm: it = map.permute(perm)), weakly held
        self._perms: dict[int, tuple[weakref.ref, weakref.ref, tuple[int, ...]]] = {}
        # id(product) -> (it, the weights that gated it, the map, perm): a gate applied to a permuted copy of a map
        self._gated: dict[int, tuple[weakref.ref, frozenset[_Event], weakref.ref, tuple[int, ...]]] = {}
        self._handles: list[RemovableHandle] = []
        self._mode: _Mode | None = None
        self._batch = 1
        self._recent: collections.deque[Tensor] = collections.deque(maxlen=16)  # 4-d batch-B outputs, latest first

    # -- instrumentation -----------------------------------------------------------------------------------------
    def start(self, batch: int, args: tuple) -> None:
        """Instrument the forward that is starting (called from the root module's pre-hook, with its arguments)."""
        self._thread = threading.get_ident()
        self._batch = batch
        self._calls[id(self.model)] = 1
        self._stack = [_Frame(self.model, "", 0, first_tensor(args))]  # the root's global pre-hook has already run
        x = self._stack[0].inp
        self._image = (int(x.shape[-2]), int(x.shape[-1])) if x is not None and x.dim() == 4 else None
        self._const = {id(t): t for t in itertools.chain(self.model.parameters(), self.model.buffers())}
        self._handles = [register_module_forward_pre_hook(self._pre), register_module_forward_hook(self._post)]
        self._mode = _Mode(self)
        self._mode.__enter__()

    def stop(self) -> None:
        if self._mode is not None:
            mode, self._mode = self._mode, None
            if self._suspended is None:  # else a plain module's forward raised: the mode was left already
                mode.__exit__(None, None, None)
            self._suspended = None
        for h in self._handles:
            h.remove()
        self._handles = []
        self._const.clear()
        self._perms.clear()
        self._gated.clear()

    def _pre(self, module: nn.Module, args: tuple) -> None:
        if threading.get_ident() != self._thread:
            return
        k = self._calls.get(id(module), 0)
        self._calls[id(module)] = k + 1
        path = self.paths.get(id(module))
        frame = _Frame(module, None if path is None else path[0], k, first_tensor(args))
        frame.tensors = sum(1 for _ in tensors_in(args))
        self._stack.append(frame)
        if id(module) in self.plain and self._suspended is None and self._mode_on_top():
            self._suspended = module
            self._mode.__exit__(None, None, None)  # type: ignore[union-attr]

    def _mode_on_top(self) -> bool:
        """Whether the pass's mode is the innermost torch function mode (only then can it be left and re-entered)."""
        n = torch._C._len_torch_function_stack()
        return self._mode is not None and n > 0 and torch._C._get_function_stack_at(n - 1) is self._mode

    def _post(self, module: nn.Module, args: tuple, output: Any) -> None:
        if threading.get_ident() != self._thread or not self._stack or self._stack[-1].module is not module:
            return
        if self._suspended is module and self._mode is not None:
            self._suspended = None
            self._mode.__enter__()
        frame = self._stack.pop()
        frame.out = output
        if isinstance(output, Tensor) and output.dim() == 4 and frame.name is not None:
            with torch._C.DisableTorchFunction():  # not part of the forward: no flows, constants or gates
                inp = frame.inp if frame.inp is not None and frame.inp.shape == output.shape else None
                out = output.detach().mean(dim=1, dtype=torch.float64)  # as the recorder's hook takes them
                both = None if inp is None else torch.stack([out, inp.detach().mean(dim=1, dtype=torch.float64)], 1)
                frame.means = (out.float(), both)
        if isinstance(output, Tensor) and output.dim() == 4 and output.shape[0] == self._batch:
            self._recent.appendleft(output)  # the maps a partitioned attention's windows may come from
        if isinstance(output, Tensor) and output.dim() == 4 and frame.name is not None and not self._carried(output):
            seq = self._events[-1].seq if self._events else -1  # a patch grid, maybe (not a weight passed on: dropout)
            self._grids.append((module, (int(output.shape[2]), int(output.shape[3])), seq))
        op = gate_module_op(module)
        if op is not None and isinstance(output, Tensor) and frame.name is not None:
            dim = None
            if op == "softmax":  # nn.Softmax(dim=None) takes F.softmax's legacy dim; Softmax2d normalises dim -3
                dim = -3 if type(module).__name__ == "Softmax2d" else getattr(module, "dim", None)
                dim = softmax_dim(F.softmax, (output, dim), {}, output.dim())
            self._add(self._stack, gate=frame, op=op, dim=dim, func="", inp=frame.inp, out=output)

    def _on_const(self, func: Callable, args: tuple, kwargs: dict, out: Any) -> None:
        """Follow what does not depend on the image: a call's outputs are constant when every tensor it got is (a
        parameter, a buffer, or computed from them; a factory call gets none); any other call's outputs are not,
        nor is a tensor it updates in place (``buf[i] = x``, ``buf.add_(x)``, ``out=``)."""
        if threading.get_ident() != self._thread:
            return
        if all(self._is_const(t) for t in tensors_in((args, kwargs))):
            for t in tensors_in(out):
                self._const[id(t)] = t
            return
        name = getattr(func, "__name__", "")
        changed = list(tensors_in(out)) + list(tensors_in(kwargs.get("out")))
        if name == "__setitem__" or name.startswith("__i") or (name.endswith("_") and not name.endswith("__")):
            changed += [t for t in args[:1] if isinstance(t, Tensor)]
        for t in changed:
            self._const.pop(id(t), None)

    def _is_const(self, t: Tensor | None) -> bool:
        entry = None if t is None else self._const.get(id(t))
        return entry is not None and entry is t

    def _on_function(self, func: Callable, op: str, args: tuple, kwargs: dict, out: Tensor) -> None:
        if threading.get_ident() != self._thread:
            return
        inp = first_tensor(args)
        stack = self._stack
        inner = stack[-1] if stack else None
        if inner is not None and inner.name is not None and gate_module_op(inner.module) is not None:
            self._count(stack)  # a registered gate module's own call: its module event records it
            return
        name = getattr(func, "__name__", op)
        if inner is not None and inner.name is None and gate_module_op(inner.module) is not None:
            name = type(inner.module).__name__  # a gate module made inside forward: hooked through its caller
        dim = softmax_dim(func, args, kwargs, out.dim())
        self._add(stack, gate=None, op=op, dim=dim, func=name, inp=inp, out=out)

    def _on_fused(self, func: str, args: tuple, kwargs: dict) -> None:
        """A fused attention call: its weights (B, heads, Nq, Nk), computed explicitly, as a softmax over the keys
        that the call itself applies (to V)."""
        if threading.get_ident() != self._thread:
            return
        stack = self._stack
        inner = next((f.name for f in reversed(stack) if f.name is not None), None)
        inp = first_tensor(args)
        if inp is None:
            return
        weights = sdpa_weights(args, kwargs)  # (..., heads, Nq, Nk) float32, a tensor of its own
        note = "; the first recorded forward finds the sites and holds each weight whole: for it, keep= does not help"
        self._held.admit(f"{inner or 'the model'} ({func})", tuple(weights.shape), None, how="full", note=note)
        self._add(stack, gate=None, op="softmax", dim=weights.dim() - 1, func=func, inp=inp, out=weights, fused=True)

    def judge(self, weights: Tensor, site: Site) -> tuple[Canon | str, _Frame | None]:
        """A computed adapter site's weight (B, heads, Nq, Nk) in the running forward (:mod:`attnviz.capture.mha`),
        judged as a discovered softmax of that shape is, against the modules running around it: its canonical
        weight (or why it fits no kind) and the frame of its reference module; a token layout's patch-grid module
        becomes ``site.grid``."""
        ev = _Event(next(SEQ), list(self._stack), [], None, "softmax", weights.dim() - 1, "", None, weights, weights)
        return self._classify(ev, site)

    def _count(self, stack: list[_Frame]) -> list[int]:
        ordinals = [f.count for f in stack]
        for f in stack:
            f.count += 1
        return ordinals

    def _add(
        self,
        stack: list[_Frame],
        *,
        gate: _Frame | None,
        op: str,
        dim: int | None,
        func: str,
        inp: Tensor | None,
        out: Tensor,
        fused: bool = False,
    ) -> None:
        ordinals = [f.count for f in stack] if gate is not None else self._count(stack)
        data = out if fused else out.detach().clone()  # fused: computed here, no one else holds it
        event = _Event(next(SEQ), list(stack), ordinals, gate, op, dim, func, inp, out, data)
        event.fused = event.applied = fused  # the fused call weights V with them itself
        event.constant = self._is_const(inp)
        if self._windowed(event) and not any(id(f.module) in self.covered for f in stack):
            event.partition = self._partition(event)  # now, while the maps it may come from are the recent ones
        self._events.append(event)
        self._by_out[id(out)] = event
        for source in self._carried(inp):  # this weight is computed from earlier ones: they are part of it
            source.feeds = source.feeds or event
        self._carries[id(out)] = (out, frozenset((event,)))

    def _carried(self, t: Any) -> frozenset[_Event]:
        """The weights ``t`` was computed from (empty for anything else)."""
        if not isinstance(t, Tensor):
            return frozenset()
        entry = self._carries.get(id(t))
        return entry[1] if entry is not None and entry[0] is t else frozenset()

    def _on_flow(self, name: str, args: tuple, kwargs: dict, out: Any) -> None:
        """Carry weights through a call: a product with a plain tensor applies them, anything else passes them on
        to its outputs."""
        if not self._carries or threading.get_ident() != self._thread:
            return
        carried: frozenset[_Event] = frozenset()
        plain = False
        for t in tensors_in((args, kwargs)):
            c = self._carried(t)
            carried |= c
            plain = plain or (not c and t.numel() > 1)  # a 1-element tensor is a scale, not a feature map
        if not carried:
            return
        if name in _APPLY and plain:
            for ev in carried:
                ev.applied = True
            if name in _MULS and isinstance(out, Tensor):  # gating a permuted copy of a map (triplet attention)
                self._gate_permuted(args, carried, out)
            return
        for t in tensors_in(out):
            self._carries[id(t)] = (t, carried | self._carried(t))

    def _permuted(self, t: Any) -> tuple[Tensor, tuple[int, ...]] | None:
        """(the feature map, perm) where ``t`` is ``map.permute(perm)`` (a copy or a view), else ``None``."""
        entry = self._perms.get(id(t)) if isinstance(t, Tensor) else None
        if entry is None or entry[0]() is not t:
            return None
        base = entry[1]()
        return None if base is None else (base, entry[2])

    def _on_perm(self, name: str, args: tuple, kwargs: dict, out: Any) -> None:
        """Follow 4-d tensors whose axes are permuted (the batch axis kept first), and notice a gated permuted copy
        of a map permuted back to the map's layout: the gate acts on the map's own axes (:func:`unpermuted_gate`)."""
        t = args[0] if args else kwargs.get("input")
        if threading.get_ident() != self._thread or not isinstance(t, Tensor) or not isinstance(out, Tensor):
            return
        if t.dim() != 4 or out.dim() != 4:
            return
        q: tuple[int, ...] = (0, 1, 2, 3)
        if name == "permute":
            dims = args[1:] if len(args) > 1 else kwargs.get("dims", ())
            dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
            q = tuple(int(d) % 4 for d in dims)
        elif name in ("transpose", "swapaxes", "swapdims"):
            pair = [int(a) % 4 for a in (*args[1:], *kwargs.values())][:2]
            if len(pair) != 2:
                return
            swap = list(q)
            swap[pair[0]], swap[pair[1]] = swap[pair[1]], swap[pair[0]]
            q = tuple(swap)
        if sorted(q) != [0, 1, 2, 3] or q[0] != 0:
            return
        gated = self._gated.get(id(t))
        if gated is not None and gated[0]() is t:
            p = gated[3]
            if tuple(p[i] for i in q) == (0, 1, 2, 3):  # the gated product is back in the map's layout
                for ev in gated[1]:
                    ev.permuted = ev.permuted or (gated[2], p)
        known = self._permuted(t)
        base, p = known if known is not None else (t, (0, 1, 2, 3))
        perm = tuple(p[i] for i in q)
        if perm != (0, 1, 2, 3):
            self._perms[id(out)] = (weakref.ref(out), weakref.ref(base), perm)

    def _gate_permuted(self, args: tuple, carried: frozenset[_Event], out: Tensor) -> None:
        """A product of gates with a permuted copy of a feature map: remembered until it is permuted back."""
        for t in args[:2]:
            known = self._permuted(t)
            if known is not None and not self._carried(t):
                self._gated[id(out)] = (weakref.ref(out), carried, weakref.ref(known[0]), known[1])
                return

    def _on_mul(self, a: Any, b: Any) -> None:
        if threading.get_ident() != self._thread:
            return
        for x, y in ((a, b), (b, a)):
            event = self._by_out.get(id(x)) if isinstance(x, Tensor) else None
            if event is not None and event.out is x and event.inp is y:
                event.activation = True

    # -- results ---------------------------------------------------------------------------------------------------
    def finish(self, output: Any) -> tuple[Discovery, list[Captured], dict[int, tuple[Tensor, Tensor | None]]]:
        """The discovery (to cache), this pass's own captures in forward order (:data:`Captured`: the unread
        sites' too, with ``None`` for the canonical weight), and each attention module's channel means, by module
        id: its output's (B, H, W) and its output's and input's (B, 2, H, W) float64 (``None`` where the input is
        not of the output's shape)."""
        self.stop()
        acts: dict[int, tuple[Tensor, Tensor | None]] = {}
        final = {id(t) for t in tensors_in(output)}
        reaches = frozenset().union(*(self._carried(t) for t in tensors_in(output)))  # weights the output carries
        self._carries.clear()
        found = Discovery(fingerprint=self.fingerprint)
        captured: list[Captured] = []
        names: dict[str, int] = {}
        for ev in self._events:
            if any(id(f.module) in self.covered for f in ev.frames) or (
                ev.gate is not None and id(ev.gate.module) in self.covered
            ):
                continue
            site = self._site(ev)
            if site is None:
                continue
            shape = tuple(ev.out.shape)
            if id(ev.out) in final:
                found.skipped.append((site.name, shape, "the model's output (the classifier's softmax)"))
                continue
            if ev.activation:
                found.skipped.append((site.name, shape, "an activation: its output multiplies its own input"))
                continue
            if ev.constant:
                why = "a constant: its input is computed from parameters and buffers only, not from the image"
                found.skipped.append((site.name, shape, why))
                continue
            if ev in reaches and not ev.applied:
                why = "an output activation: it reaches the model's output without weighting a feature map"
                found.skipped.append((site.name, shape, why))
                continue
            if ev.feeds is not None and not ev.applied:
                into = self._site(ev.feeds)
                why = f"part of {into.name if into else 'another weight'}: it feeds it and weights no feature map"
                found.skipped.append((site.name, shape, why))
                continue
            canon, ref = self._classify(ev, site)
            seen = names.get(site.name, 0) + 1
            names[site.name] = seen
            if seen > 1:
                site.name = f"{site.name}#{seen}"
            if isinstance(canon, str):
                found.unclassified.append((site.name, shape, canon))
                found.unread.append(site)  # a declaration of its kind records it (its owner's input as reference)
                frame = next((f for f in reversed(ev.frames) if f.module is site.owner), None)
                inp = None if frame is None or frame.inp is None else tuple(frame.inp.shape)
                captured.append((ev.seq, site, None, ev.data, inp, ev.dim))
                continue
            site.ref = ref.module if ref is not None else None
            out = ref.out if ref is not None else None
            site.attention = ref.module if isinstance(out, Tensor) and out.dim() == 4 else None
            if site.attention is not None and ref is not None and ref.means is not None:
                acts[id(site.attention)] = ref.means
            site.kind = None
            found.sites.append(site)
            ref_shape = tuple(ref.inp.shape) if ref is not None and ref.inp is not None else None
            captured.append((ev.seq, site, canon, ev.data, ref_shape, ev.dim))
        cache_discovery(self.model, found)
        self._events.clear()
        self._by_out.clear()
        return found, captured, acts

    def _site(self, ev: _Event) -> Site | None:
        """The site an event belongs to: a gate module's output, a module that returns the weight, or the k-th
        gate call during a registered module's forward."""
        if ev.gate is not None:
            calls = self._calls.get(id(ev.gate.module), 1)
            call = ev.gate.call if calls > 1 else None
            return Site(ev.gate.name or "", "module", ev.gate.module, None, call, op=ev.op, dim=ev.dim)
        named = [i for i, f in enumerate(ev.frames) if f.name is not None]
        if not named:
            return None
        i = named[-1]
        frame = ev.frames[i]
        calls = self._calls.get(id(frame.module), 1)
        call = frame.call if calls > 1 else None
        if frame.out is ev.out and i == len(ev.frames) - 1:  # the module returns the weight: a gate module of its own
            return Site(frame.name or "", "module", frame.module, None, call, op=ev.op, dim=ev.dim)
        prefix = f"{frame.name}." if frame.name else ""
        name = f"{prefix}{ev.func}()"
        return Site(name, "function", frame.module, ev.ordinals[i], call, op=ev.op, dim=ev.dim, fused=ev.fused)

    def _classify(self, ev: _Event, site: Site) -> tuple[Canon | str, _Frame | None]:
        """Judge the weight against the feature maps the running modules received, innermost first (modules whose
        output has their input's shape, as attention modules do, before the others)."""
        own = site.owner if site.ordinal is None else None
        frames = [f for f in reversed(ev.frames) if f.name is not None and f.module is not own]
        maps = [f for f in frames if f.inp is not None and f.inp.dim() == 4 and f.inp.shape[2] * f.inp.shape[3] > 1]
        same = [f for f in maps if isinstance(f.out, Tensor) and f.out.shape == f.inp.shape]  # type: ignore[union-attr]
        order = same + [f for f in maps if f not in same]
        op = ev.op if ev.op == "softmax" else "sigmoid"
        if ev.permuted is not None and op == "sigmoid":  # a gate on a permuted copy of a map, permuted back
            base, perm = ev.permuted[0](), ev.permuted[1]
            got = next((f for f in frames if base is not None and f.inp is base), None)  # the module that got the map
            if got is not None and base is not None:
                canon = unpermuted_gate(ev.data, perm, tuple(base.shape))
                if isinstance(canon, Canon):
                    site.transform = Unpermute(perm)  # read so in every recorded forward, against got's input
                    return canon, got
        windowed = self._windowed(ev)
        if windowed:  # (B·nW, heads, M, M): windows of a map, read from the tensors (attnviz.capture.partitions)
            part = ev.partition if ev.partition is not None else self._partition(ev)
            if not isinstance(part, str):
                site.transform = part[0].transform
                site.fused = False  # kept as window maps are (every head by default), not as token rows
                return part[0].transform(site.owner, ev.data, tuple(part[1].inp.shape)), part[1]  # type: ignore[union-attr]
        found = self._tokens(ev) if op == "softmax" and not windowed else None  # windows are no prefix + grid
        tokens = None if found is None else found[0]
        first: Canon | str | None = part if windowed else None  # type: ignore[assignment]
        for f in order:
            ref = tuple(f.inp.shape)  # type: ignore[union-attr]
            canon = canonical(ev.data, batch=self._batch, ref=ref, op=op, dim=ev.dim, tokens=tokens)
            if isinstance(canon, Canon) and canon.kind == "token":  # its reference: the module that got the tokens
                n = ev.data.shape[-2:]  # its queries (PVT: the keys are computed inside), or its keys
                got = [g for g in frames if g.inp is not None and g.inp.dim() == 3 and g.inp.shape[1] in n]
                self._mark(site, found)
                return canon, got[0] if got else f
            if isinstance(canon, Canon):
                return canon, f
            first = first or canon
        got = next((f for f in frames if f.inp is not None and f.inp.dim() == 3), None)  # the innermost tokens' module
        if op == "softmax" and got is not None:  # a softmax over channel blocks of its tokens (B, N, C): XCiT's XCA
            shape = tuple(got.inp.shape)  # type: ignore[union-attr]
            canon = canonical(ev.data, batch=self._batch, ref=shape, op=op, dim=ev.dim, tokens=tokens)
            if isinstance(canon, Canon) and canon.kind == "channel_pairwise":
                return canon, got
        if first is not None:  # judged against every feature map around it, it fits none: say why (first reason)
            return first, None
        canon = canonical(ev.data, batch=self._batch, ref=None, op=op, dim=ev.dim, tokens=tokens)  # no 4-d map
        if isinstance(canon, Canon) and canon.kind == "token":
            self._mark(site, found)
        return canon, None

    def _windowed(self, ev: _Event) -> bool:
        """Whether a weight is a softmax (B·nW, heads, M, M) over windows (nW > 1)."""
        s = tuple(ev.data.shape)
        return ev.op == "softmax" and len(s) == 4 and s[0] > self._batch and s[0] % self._batch == 0 and s[2] == s[3]

    def _partition(self, ev: _Event) -> tuple[Found, _Frame] | str:
        """A softmax (B·nW, heads, M, M)'s windows, matched exactly to a recent map's positions
        (:func:`attnviz.capture.partitions.find_partition`), and the frame of the module that got the map; else why
        not."""
        frames = [f for f in reversed(ev.frames) if f.name is not None and f.inp is not None]

        def grid_input(grid: tuple[int, int], channels_last: bool) -> tuple[int, bool] | None:
            for i, f in enumerate(frames):
                x = f.inp
                if x is None or x.dim() != 4 or x.shape[0] != self._batch:
                    continue
                fits = [
                    last
                    for last in (channels_last, not channels_last)
                    if tuple(x.shape[1:3] if last else x.shape[2:]) == grid
                ]
                if fits:
                    return i, fits[0]
            return None

        query = ev.inp if ev.fused else None
        inputs = [(f.inp, f.tensors == 1) for f in frames]
        try:
            maps = [f.inp for f in frames if f.inp.dim() == 4] + list(self._recent)  # type: ignore[union-attr]
            with torch._C.DisableTorchFunction():  # not part of the forward: no flows, constants or gates
                found = find_partition(ev.data, self._batch, inputs, query, maps, grid_input)  # type: ignore[arg-type]
        except (ValueError, RuntimeError, TypeError) as e:  # never the user's forward's failure
            return f"{tuple(ev.data.shape)}: its windows could not be read ({e})"
        return found if isinstance(found, str) else (found[0], frames[found[1]])

    def _tokens(self, ev: _Event) -> tuple[TokenLayout, nn.Module | None, nn.Module | None] | None:
        """The token layout of a softmax (..., Nq, Nk) (:func:`attnviz.capture.tokens.attention_layout`): N x N, or
        Nq <= k prefix queries over N = k + H·W (CaiT's class attention), or queries and keys on different grids
        (N x M), each side over the latest feature map (B, C, H, W) computed before it that the model's own prefix
        count allows (a ViT's patch-embed convolution's output, PVT's strided reduction, MViT's pooling), else read
        from the shapes against the input image; with the modules whose outputs showed the keys' and the queries'
        grids (``None``: from the shapes, or the keys' own)."""
        s = tuple(ev.data.shape)
        if len(s) < 3:
            return None
        before = [(m, g) for m, g, seq in reversed(self._grids) if seq < ev.seq]
        return attention_layout(s, before, before, image=self._image, batch=self._batch, model=self.model)

    @staticmethod
    def _mark(site: Site, found: tuple[TokenLayout, nn.Module | None, nn.Module | None] | None) -> None:
        """A token site's layout is read again in every forward: over these modules' outputs, else the shapes."""
        if found is not None:
            _, site.grid, site.qgrid = found
            site.tokens = True
