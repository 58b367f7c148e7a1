"""Capture: read every attention block's own weights through forward hooks on its taps.

    with AttentionRecorder(model) as rec:
        logits = model(x)
    for m in rec.maps:  # one AttentionMap per tap call, in forward order
        print(m.name, m.stage, m.kind, tuple(m.data.shape))

attnviz's own blocks are read through their :class:`~attnviz.blocks.Tap` submodules, so capture never special-cases
a block; other networks through adapters and discovered sites. The hooks are :mod:`attnviz.capture.hooks`' engine:
removed on exit even when the forward raises, a shared model hooked under a per-model lock (concurrent hooked
forwards of one model are serialised), callbacks only in the thread that entered. The model's train/eval flags are
restored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from fnmatch import fnmatchcase
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from ..blocks.modules import attention_modules
from ..blocks.tap import KINDS, Tap
from .discover import SEQ, DiscoveryPass
from .fused import KeepPolicy, Kept
from .hooks import SiteHooks
from .kinds import KIND_SPECS, Canon
from .maps import IO, AttentionMap, to_cpu
from .sites import Site, axis_alone, canonical, pair_axes
from .structure import Discovery, cached_discovery, first_tensor, remember_layout, structure
from .tokens import TokenLayout, attention_layout, prefix_names

__all__ = ["AttentionRecorder"]


class AttentionRecorder:
    """Context manager recording every attention weight computed during the forwards run inside it.

    Three sources, one result (DESIGN.md, "Any network"): attnviz's own blocks pass their weights through
    :class:`~attnviz.blocks.Tap` modules; known library classes (timm, torchvision) have exact adapters
    (:mod:`attnviz.capture.adapters`); anything else is found by discovery (:mod:`attnviz.capture.discover`: one
    instrumented
    forward per model, cached), and users can declare, override or exclude sites. All become the same
    :class:`AttentionMap`\\ s, in forward order.

    Args:
        model: any ``nn.Module``.
        names: map names to record (default: all). Checked against the taps and the sites known before the forward.
        kinds: record only maps of these kinds (default: all).
        eval_mode: put the model in eval mode while recording (default ``False``: the model is run as it
            is). The train/eval flag of every submodule is restored on exit either way.
        activations: also record, for every attention module, the channel mean of its output (B, H, W) in
            :attr:`activations` (for SE/ECA that is the gate-weighted mean activation), and under the path +
            :data:`~attnviz.capture.maps.IO` its output's and input's (B, 2, H, W) float64, where the input has the
            output's shape.
        sites: declared sites, ``{glob: kind}``: a module path (or glob) whose output is recorded as that kind,
            or the name of a found site whose kind is overridden (e.g. ``{"layer*.cbam.sa": "spatial"}``).
        exclude: globs of map names (or module paths) not to record.
        discover: find attention sites the taps and adapters do not cover (default ``True``).
        dtype: dtype of the recorded maps (default float32).
        keep: what is kept of fused attention weights (``F.scaled_dot_product_attention``, computed explicitly while
            recording): ``"auto"`` (default: ``"rows"`` for token attention, ``"full"`` over a feature map's
            positions), ``"full"``, ``"mean"`` (head mean) or ``"rows"`` (head mean + each head's first query row)
            (:class:`~attnviz.capture.fused.KeepPolicy`).
        memory_limit: bytes the kept fused weights of one recording may take (default 2 GiB; ``None``: no limit);
            past it the forward stops with :class:`~attnviz.capture.fused.MemoryLimitError` naming the layer.

    Raises:
        ValueError: an unknown name or kind, a declared kind that is not a kind, or a glob that matches nothing.
    """

    def __init__(
        self,
        model: nn.Module,
        names: list[str] | None = None,
        kinds: list[str] | None = None,
        *,
        eval_mode: bool = False,
        activations: bool = False,
        sites: dict[str, str] | None = None,
        exclude: Sequence[str] = (),
        discover: bool = True,
        dtype: torch.dtype = torch.float32,
        keep: str = "auto",
        memory_limit: int | None = 2 * 1024**3,
    ) -> None:
        self.model = model
        tree = structure(model)
        self.paths = tree.paths  # registered modules and modules kept in plain lists
        self._modules = [m for _, m in self.paths.values()]
        if kinds is not None:
            bad = [k for k in kinds if k not in KINDS]
            if bad:
                raise ValueError(f"unknown kinds {bad}; valid kinds: {list(KINDS)}")
        self.kinds = None if kinds is None else set(kinds)
        self.exclude = list(exclude)
        declared = dict(sites or {})
        bad = {g: k for g, k in declared.items() if k not in KINDS}
        if bad:
            raise ValueError(f"declared sites with unknown kinds {bad}; valid kinds: {list(KINDS)}")
        taps = {n: m for n, m in tree.taps.items() if not self._excluded(n)}
        adapted, adapted_ids = tree.adapter_sites, tree.adapted
        self._declared, self._overrides = self._declare(declared, adapted)
        # computed adapter sites (nn.MultiheadAttention) learn their layout in a forward: this recorder's own copies
        adapted = [dataclasses.replace(s) if s.compute is not None else s for s in adapted]
        readable = [s for s in adapted + self._declared if not self._excluded(s.name)]
        self._unreadable = [s for s in readable if s.why]  # listed as unclassified with their reason, never hooked
        self.sites: list[Site] = [s for s in readable if not s.why]
        # modules whose insides other sources record (attnviz's tapped blocks, adapted modules); declared modules
        # hide the discovered sites inside them without changing what discovery finds (it is cached per model)
        self._covered = adapted_ids | tree.tapped
        self._plain = frozenset(id(s.owner) for s in adapted if s.compute is not None)  # run outside the pass's mode
        self._hidden = [s.name for s in self._declared]
        self._fingerprint = tree.fingerprint
        cached = cached_discovery(model, self._fingerprint) if discover else None
        self.discovery: Discovery | None = cached
        self._discover = discover and cached is None
        if cached is not None:
            self.sites += self._found(cached)
        if names is not None:
            known = set(taps) | {s.name for s in self.sites}
            modules = {p for p, _ in self.paths.values()}
            unknown = [n for n in names if n not in known and not (self._discover and _base(n) in modules)]
            if unknown:
                raise ValueError(
                    f"not attention maps of this model: {unknown}; its maps are: {sorted(known) or 'none'}"
                )
            taps = {n: taps[n] for n in names if n in taps}
        self.names = None if names is None else set(names)
        self.taps: dict[str, Tap] = {n: t for n, t in taps.items() if self.kinds is None or t.kind in self.kinds}
        self.eval_mode = eval_mode
        self.record_activations = activations
        self.dtype = dtype
        self.keep = KeepPolicy(keep, memory_limit)
        self._kept: dict[int, Kept] = {}  # seq -> what was kept of a fused weight (its rows, how)
        self._layouts: dict[int, TokenLayout] = {}  # seq -> the token layout of a weight's forward (Site.grid)
        self._unclassified: list[tuple[str, tuple[int, ...], str]] = []
        self._acts: dict[str, Tensor] = {}
        self._pending: list[tuple[int, str, str, Tensor, tuple[int, int] | None]] = []  # taps: seq, name, kind, ...
        self._raw: list[tuple[int, Site, Tensor, tuple[int, ...] | None, int | None]] = []  # sites: seq, site, ...
        self._canon: list[tuple[int, Site, Canon]] = []  # the discovery pass's own captures
        self._maps: list[AttentionMap] = []
        self._flags: list[tuple[nn.Module, bool]] = []
        self._batch = 1
        self._image: tuple[int, int] | None = None  # (H, W) of this forward's input image (token grids from shapes)
        self._hooks = SiteHooks(model, on_tap=self._on_tap, on_site=self._capture, on_forward=self._root_pre)
        self._shapes = self._hooks.shapes  # the reference modules' input shapes, kept after exit for reading maps
        self._pass: DiscoveryPass | None = None

    def _excluded(self, name: str) -> bool:
        return any(fnmatchcase(name, g) for g in self.exclude)

    def _wanted(self, site: Site) -> bool:
        """A discovered site is recorded unless excluded, or inside a declared module (which is the site there)."""
        return self._wanted_name(site.name)

    def _wanted_name(self, name: str) -> bool:
        return not any(name == p or name.startswith(p + ".") for p in self._hidden) and not self._excluded(name)

    def _declare(self, declared: dict[str, str], adapted: list[Site]) -> tuple[list[Site], dict[str, str]]:
        """Declared module sites, and the overrides of found sites' kinds (globs that match site names)."""
        out: list[Site] = []
        overrides: dict[str, str] = {}
        module_sites = {id(s.owner) for s in adapted if s.ordinal is None}
        for glob, kind in declared.items():
            matched = [(p, m) for p, m in self.paths.values() if p and fnmatchcase(p, glob)]
            for path, module in matched:  # the module is the site: what discovery would find inside it is not
                if id(module) not in module_sites:
                    out.append(Site(path, "declared", module, None, None, module, None, kind))
            overrides[glob] = kind
            if not matched and not any(fnmatchcase(s.name, glob) for s in adapted) and "(" not in glob:
                raise ValueError(f"declared site {glob!r} matches no module of this model")
        return out, overrides

    # -- context manager -------------------------------------------------------------------------------------
    def __enter__(self) -> AttentionRecorder:
        if self._hooks.active:
            raise RuntimeError("this AttentionRecorder is already active; use a new one per 'with'")
        self._hooks.open()
        try:
            self.clear()
            self._flags = [(m, m.training) for m in self._modules]
            if self.eval_mode:
                for m in self._modules:  # modules kept in plain lists too, which model.eval() never reaches
                    m.training = False
            self._hooks.taps(self.taps)
            self._hooks.hook(self.model, self._root_post, always_call=True)
            self._install(self.sites)
            if self.record_activations:
                for name, module in attention_modules(self.model).items():
                    self._hooks.hook(module, self._act_hook(name))
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release()

    def remove(self) -> None:
        """Remove the hooks and restore the model's flags now (idempotent; ``__exit__`` calls it)."""
        self._release()

    def _release(self) -> None:
        try:
            if self._pass is not None:
                self._pass.stop()
                self._pass = None
        finally:
            try:
                for module, flag in self._flags:
                    if module.training != flag:  # nn.Module.__setattr__ is slow: only what changed
                        module.training = flag
                self._flags = []
            finally:
                self._hooks.close()  # every hook and mode, then the model's lock

    # -- hooks (the engine calls them in the thread that entered only) --------------------------------------------
    def _root_pre(self, args: tuple, kwargs: dict[str, Any]) -> None:
        x = first_tensor(args)
        x = first_tensor(tuple(kwargs.values())) if x is None else x
        self._batch = int(x.shape[0]) if x is not None and x.dim() > 0 else 1
        self._image = (int(x.shape[-2]), int(x.shape[-1])) if x is not None and x.dim() == 4 else None
        if self._discover and self._pass is None:
            self._pass = DiscoveryPass(
                self.model, self.paths, self._covered, self._fingerprint, keep=self.keep, plain=self._plain
            )
            self._pass.start(self._batch, args)

    def _root_post(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self._pass is None:
            return
        if output is None:  # the forward raised (an always-called hook gets None): nothing is cached, a later one finds
            self._pass.stop()
            self._pass = None
            return
        found, captured, acts = self._pass.finish(output)
        self._pass = None
        self._discover = False
        self.discovery = found
        new = self._found(found)
        self.sites += new
        for seq, site, canon, weight, ref, dim in captured:
            if not self._wanted(site):
                continue
            if canon is not None and canon.kind == "token" and canon.size is not None:
                self._layouts[seq] = self._layout_of(canon, weight)
            if site.fused and (canon is not None or self._declared_kind(site.name) is not None):
                self._raw.append((seq, site, self._keep(seq, site, weight, ref), ref, dim))  # as later forwards do
            elif self._declared_kind(site.name) is not None:  # the user's kind, judged as later forwards judge it
                self._raw.append((seq, site, weight, ref, dim))
            elif canon is not None:
                self._canon.append((seq, site, canon))
        if self.record_activations:
            for i, (act, inp) in acts.items():
                self._acts[self.paths[i][0]] = act
                if inp is not None:
                    self._acts[self.paths[i][0] + IO] = inp
        self._install(new)  # later forwards inside this recorder record through cheap hooks

    def _install(self, sites: list[Site]) -> None:
        """The engine's hooks for ``sites``, and activation hooks on their attention modules."""
        self._hooks.sites(sites)
        if self.record_activations:
            attn = {id(s.attention): s.attention for s in sites if s.attention is not None}
            for i, module in attn.items():
                self._hooks.hook(module, self._act_hook(self.paths[i][0]))

    def _capture(self, site: Site, weight: Tensor, op: str, dim: int | None) -> None:
        """A site's weight (the engine's ``on_site``): kept as computed, laid out when the maps are read."""
        seq = next(SEQ)
        if site.compute is not None and site.ref is None and site.grid is None and self._pass is not None:
            self._learn(seq, site, weight)
        ref = self._shapes.get(id(site.ref if site.ref is not None else site.owner))
        if (site.tokens or site.grid is not None) and seq not in self._layouts:  # token attention: this forward's
            layout = self._read_tokens(site, weight)
            if layout is not None:
                self._layouts[seq] = layout
        if site.fused:  # computed for this site alone (no one else holds it): kept as the policy says
            self._raw.append((seq, site, self._keep(seq, site, weight.detach(), ref), ref, dim))
            return
        # a copy: later in-place ops (out += identity, ReLU(inplace)) would overwrite a view (ATTENTION.md, bug 10)
        self._raw.append((seq, site, weight.detach().clone(), ref, dim))

    def _learn(self, seq: int, site: Site, weight: Tensor) -> None:
        """A computed site's layout, read by the discovery pass around the running forward as it reads a discovered
        softmax's: its patch grid (``Site.grid``) and reference module (``Site.ref``), watched from now on and
        remembered for later recorders of this model (:func:`~attnviz.capture.structure.remember_layout`)."""
        assert self._pass is not None
        canon, ref = self._pass.judge(weight, site)
        if ref is None:  # fits no layout: judged again (and listed with its reason) when the maps are read
            return
        site.ref = ref.module
        if ref.inp is not None:
            self._shapes[id(ref.module)] = tuple(ref.inp.shape)
        if isinstance(canon, Canon) and canon.kind == "token" and canon.size is not None:
            self._layouts[seq] = self._layout_of(canon, weight)
            if site.grid is not None:
                self._hooks.outputs.pop(id(site.grid), None)  # this forward's grid: the layout above
        self._hooks.watch([site])
        remember_layout(self.model, site)

    def _layout_of(self, canon: Canon, weight: Tensor) -> TokenLayout:
        """The token layout a token map was read with (its keys', and its queries' where they differ)."""
        if canon.tokens is not None:
            return canon.tokens
        assert canon.size is not None
        k = int(weight.shape[-1]) - canon.size[0] * canon.size[1]
        return TokenLayout(k, canon.size, prefix_names(self.model, k) if k else ())

    def _read_tokens(self, site: Site, weight: Tensor) -> TokenLayout | None:
        """A token site's layout in this forward (:func:`~attnviz.capture.tokens.attention_layout`): over its grid
        modules' outputs (``Site.grid``: the keys', ``Site.qgrid``: the queries'), else from the shapes against this
        forward's input image where discovery read them so (``Site.tokens``)."""
        sides = []
        for module in (site.grid, site.qgrid):
            out = self._hooks.outputs.get(id(module)) if module is not None else None
            sides.append([] if out is None or len(out) != 4 else [(module, (int(out[2]), int(out[3])))])
        image = self._image if site.tokens else None
        found = attention_layout(
            tuple(weight.shape), sides[0], sides[1], image=image, batch=self._batch, model=self.model
        )
        return None if found is None else found[0]

    def _keep(self, seq: int, site: Site, weight: Tensor, ref: tuple[int, ...] | None) -> Tensor:
        """What the keep policy keeps of a fused weight (B, heads, Nq, Nk), checked against the memory limit; the rows
        (``keep="rows"``) wait beside it until the map is made."""
        how = self.keep.admit(site.name, tuple(weight.shape), ref)
        layout = self._layouts.get(seq)
        if layout is not None and layout.query is not None:  # N x M: the queries' prefix rows (the class token's)
            layout = layout.query
        kept = self.keep.reduce(weight, how, None if layout is None else layout.prefix)
        self._kept[seq] = kept
        return kept.weight

    def _on_tap(self, name: str, tap: Tap, output: Tensor, kwargs: dict[str, Any]) -> None:
        """A tap's weight (the engine's ``on_tap``), in its kind's canonical shape."""
        spec = KIND_SPECS[tap.kind]
        data = spec.canonical(output).detach()
        # A copy, not a view: later in-place ops (out += identity, ReLU(inplace)) would overwrite it
        # (ATTENTION.md, bug 10); a channel mean or a cast is already a new tensor and is not copied again,
        # nor is the output of a read_only tap (its block never changes it). It stays on the device until
        # read, so a GPU batch is moved to the CPU in one transfer.
        shared = data.untyped_storage().data_ptr() == output.untyped_storage().data_ptr()
        data = data.to(dtype=self.dtype, copy=shared and not tap.read_only)
        size = kwargs.get("size")
        if size is None and spec.grid == "shape":
            size = (int(data.shape[-2]), int(data.shape[-1]))
        size = None if size is None else (int(size[0]), int(size[1]))
        self._pending.append((next(SEQ), name, tap.kind, data, size))

    def _act_hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            if isinstance(output, Tensor) and output.dim() == 4:
                out = output.detach().mean(dim=1, dtype=torch.float64)  # (B, H, W), a new tensor
                self._acts[name] = out.float()
                x = first_tensor(args)
                if x is not None and x.shape == output.shape:  # what a channel gate multiplies (gate effect view)
                    self._acts[name + IO] = torch.stack([out, x.detach().mean(dim=1, dtype=torch.float64)], 1)

        return hook

    # -- results ---------------------------------------------------------------------------------------------
    def _site_maps(self) -> list[tuple[int, AttentionMap]]:
        """The sites' captures as maps (canonical layouts, coordinate axis gates paired), with their order keys."""
        canon = list(self._canon)
        for seq, site, weight, ref, dim in self._raw:
            kind = self._override(site)
            try:
                w = site.transform(site.owner, weight, ref) if site.transform is not None else weight
                declared = site.how == "declared" or self._declared_kind(site.name) is not None
                c = (
                    w
                    if isinstance(w, Canon)
                    else canonical(  # an adapter's transform may lay it out itself
                        w,
                        batch=self._batch,
                        ref=ref,
                        kind=kind,
                        op=site.op,
                        dim=site.dim if dim is None else dim,
                        declared=declared,
                        tokens=self._layouts.pop(seq, None),
                    )
                )
            except (ValueError, RuntimeError) as e:
                c = f"{tuple(weight.shape)}: {e}"
            if isinstance(c, str):
                self._unclassified.append((site.name, tuple(weight.shape), c))
            else:
                canon.append((seq, site, c))
        canon.sort(key=lambda item: item[0])
        out: list[tuple[int, AttentionMap]] = []
        i = 0
        while i < len(canon):
            seq, site, c = canon[i]
            i += 1
            if c.kind == "axis":  # coordinate attention: pair the H and W gates of one call into one spatial map
                pair = canon[i][2] if i < len(canon) and canon[i][2].kind == "axis" else None
                joined = pair_axes(c.data, pair.data) if pair is not None else None
                if joined is not None:
                    i += 1
                    layout = f"{c.layout} x {pair.layout}"  # type: ignore[union-attr]
                    c = Canon("spatial", joined, tuple(joined.shape[1:]), None, layout)  # type: ignore[arg-type]
                else:
                    ref = self._shapes.get(id(site.ref if site.ref is not None else site.owner))
                    data = axis_alone(c.data, ref)
                    c = Canon("spatial", data, tuple(data.shape[1:]), c.data, c.layout + " alone")  # type: ignore[arg-type]
            if (self.kinds is not None and c.kind not in self.kinds) or (
                self.names is not None and site.name not in self.names
            ):
                continue
            size = c.size if KIND_SPECS[c.kind].grid is not None else None
            if c.kind == "token" and seq not in self._kept and size is not None:  # an explicit softmax's weight
                ref = self._shapes.get(id(site.ref if site.ref is not None else site.owner))
                k = int(c.data.shape[-1]) - size[0] * size[1]
                if c.qgrid is not None:  # N x M: the queries' prefix rows (the class token's)
                    k = int(c.data.shape[-2]) - c.qgrid[0] * c.qgrid[1]
                self._kept[seq] = kept = self.keep.reduce(c.data, self.keep.how(tuple(c.data.shape), ref), k)
                c = dataclasses.replace(c, data=kept.weight)
            if c.kind == "window" and seq not in self._kept:  # per window; keep="auto"/"full": every head
                c = self._keep_windows(site, c)
            data = c.data.to(self.dtype)
            raw = None if c.raw is None else c.raw.to(self.dtype)
            kept = self._kept.pop(seq, None)
            how = "" if kept is None else kept.how
            rows = None if kept is None or kept.rows is None else kept.rows.to(self.dtype)
            layout = c.layout if kept is None else kept.describe(c.layout)  # the heads as computed, what was kept
            m = AttentionMap(site.name, c.kind, data, size, site.how, layout, raw, how, rows, c.window, c.qgrid)
            out.append((seq, m))
        self._raw.clear()
        self._canon.clear()
        self._kept.clear()
        self._layouts.clear()
        return out

    def _keep_windows(self, site: Site, c: Canon) -> Canon:
        """What the keep policy keeps of a window map (B, nW, heads, M², M²): every head (``keep="auto"``, ``"full"``:
        a window's matrices grow with N·M², not N²), else the head mean (heads = 1; no prefix rows to keep)."""
        b, nw, heads, m, _ = c.data.shape
        how = "full" if self.keep.keep == "auto" else self.keep.keep
        how = self.keep.admit(site.name, (b * nw, heads, m, m), None, how=how)
        kept = self.keep.reduce(c.data.flatten(0, 1), how, 0)  # (B·nW, heads or 1, M², M²)
        if kept.how == "full":
            return c
        note = f"{c.layout}; kept: the head mean"
        return dataclasses.replace(c, data=kept.weight.view(b, nw, 1, m, m), layout=note)

    def _found(self, found: Discovery) -> list[Site]:
        """The discovered sites this recorder records: the wanted ones, and those of unread weights whose kind
        the user declared."""
        unread = [s for s in found.unread if self._declared_kind(s.name) is not None]
        return [s for s in found.sites + unread if self._wanted(s)]

    def _declared_kind(self, name: str) -> str | None:
        """The kind the user declared for a site of this name (``sites=`` globs), else ``None``."""
        return next((kind for glob, kind in self._overrides.items() if fnmatchcase(name, glob)), None)

    def _override(self, site: Site) -> str | None:
        return self._declared_kind(site.name) or site.kind

    def _flush(self) -> None:
        """Move the pending maps and the activations to the CPU together: one transfer, one sync on a GPU."""
        maps = [(seq, AttentionMap(name, kind, data, size)) for seq, name, kind, data, size in self._pending]
        maps += self._site_maps()
        maps.sort(key=lambda item: item[0])
        # maps in float32 whatever autocast computed them in (bf16 on a GPU): the dtype the CPU path gives
        tensors = [_f32(m.data) for _, m in maps] + [_f32(m.raw) for _, m in maps if m.raw is not None]
        tensors += [_f32(m.rows) for _, m in maps if m.rows is not None] + list(self._acts.values())
        moved = iter(to_cpu(tensors))
        done = [dataclasses.replace(m, data=next(moved)) for _, m in maps]
        done = [dataclasses.replace(m, raw=next(moved)) if m.raw is not None else m for m in done]
        done = [dataclasses.replace(m, rows=next(moved)) if m.rows is not None else m for m in done]
        self._maps += done
        self._acts = {k: next(moved) for k in self._acts}
        self._pending.clear()

    @property
    def activations(self) -> dict[str, Tensor]:
        """Channel mean of each attention module's output, (B, H, W) CPU float32, by module path; its output's and
        input's, (B, 2, H, W) float64, by path + :data:`~attnviz.capture.maps.IO`."""
        if self._pending or self._raw or self._canon or any(v.device.type != "cpu" for v in self._acts.values()):
            self._flush()
        return dict(self._acts)

    @property
    def maps(self) -> list[AttentionMap]:
        """Every captured map so far, in call order, as CPU tensors."""
        if self._pending or self._raw or self._canon:
            self._flush()
        return list(self._maps)

    @property
    def unclassified(self) -> list[tuple[str, tuple[int, ...], str]]:
        """Weights that fit no kind: (name, shape, why), those discovery found and those a declared or adapted kind
        could not hold."""
        if self._raw or self._canon:
            self._flush()
        found = self.discovery.unclassified if self.discovery is not None else []
        found = [u for u in found if self._declared_kind(u[0]) is None]  # declared: judged again, below if refused
        unreadable = [(s.name, (), s.why) for s in self._unreadable]
        return [u for u in found if self._wanted_name(u[0])] + unreadable + list(self._unclassified)

    @property
    def skipped(self) -> list[tuple[str, tuple[int, ...], str]]:
        """Gates discovery found and did not report: (name, shape, why) (activations, the classifier's softmax)."""
        return list(self.discovery.skipped) if self.discovery is not None else []

    def clear(self) -> None:
        """Forget the maps captured so far (the hooks stay)."""
        self._pending.clear()
        self._raw.clear()
        self._canon.clear()
        self._maps.clear()
        self._acts.clear()
        self._unclassified.clear()
        self._kept.clear()
        self.keep.used = 0
        self._layouts.clear()

    def __len__(self) -> int:
        return len(self._maps) + len(self._pending) + len(self._raw) + len(self._canon)


def _base(name: str) -> str:
    """The module path a site name starts from: ``"a.b.sigmoid()#2"`` -> ``"a.b"``."""
    name = name.partition("#")[0]
    return name.rpartition(".")[0] if name.endswith(")") else name


def _f32(t: Tensor) -> Tensor:
    """``t`` in float32 when it is in a half-precision float (autocast's bf16/fp16), else as it is."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
