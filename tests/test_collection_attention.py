"""Three third-party attention modules that discovery used to read wrong (issue 20), written as module collections
and their authors write them (tests/collection_nets.py), inside a small ResNet-like CNN:

- pyramid split attention: a softmax over the S scales of SE weights expanded to the full feature size is a
  ``branch`` map (B, S, C/S) (it was (B, S, C/S·H·W));
- triplet attention: the H x W branch is a spatial gate; the C x W and H x C branches, gated on permuted maps, are
  laid back on the map's axes as the plane gates they are ((B, C, 1, W), (B, C, H, 1) in ``raw``), shown as their
  channel mean on the map's H x W grid (they were "spatial" maps of size C x W and H x C);
- criss-cross attention: the softmax over each query's column and row (B, H, W, H + W) is a ``pairwise`` map
  (B, 1, N, N), zero off each query's cross (it was unclassified).

Each map is checked against a plain computation from the module's own tensors, with bit-identical logits and no
hooks left, in the discovery pass and in a cached (hooked) forward.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn
from torch.nn.modules import module as nn_module

from attnviz import AttentionRecorder
from attnviz.capture.kinds import detail_image
from attnviz.capture.sites import canonical, cross_pairwise, unexpand
from attnviz.capture.structure import module_paths
from attnviz.capture.views import build_views
from tests.collection_nets import (
    AttentionGate,
    CrissCrossAttention,
    PSAExpanded,
    PSAStacked,
    SmallResNet,
    TripletAttention,
    _randomise_bn,
    ccnet,
    psa_net,
    triplet_net,
)

B = 2
IMAGE = (40, 56)  # feature maps 20 x 28 (C = 16) and 10 x 14 (C = 32): C, H and W all differ


def _x(seed: int = 0) -> Tensor:
    return torch.randn(B, 3, *IMAGE, generator=torch.Generator().manual_seed(seed))


def _hooks(model: nn.Module) -> int:
    """Module hooks on every module (plain-list ones too), global module hooks, torch function modes."""
    mods = [m for _, m in module_paths(model).values()]
    local = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in mods)
    glob = len(nn_module._global_forward_hooks) + len(nn_module._global_forward_pre_hooks)
    return local + glob + torch._C._len_torch_function_stack()


def _record(model: nn.Module, x: Tensor) -> tuple[AttentionRecorder, AttentionRecorder]:
    """The discovery pass, then a cached forward through hooks: logits bit-identical to the bare model's, no hooks
    left (beyond the test's own), every weight read (nothing unclassified)."""
    own = _hooks(model)
    with torch.no_grad():
        bare = model(x)
        with AttentionRecorder(model) as first:
            a = model(x)
        assert _hooks(model) == own
        with AttentionRecorder(model) as second:
            b = model(x)
        assert _hooks(model) == own
    assert torch.equal(a, bare) and torch.equal(b, bare)
    assert not first.unclassified and not second.unclassified, (first.unclassified, second.unclassified)
    assert [(m.name, m.kind, m.data.shape) for m in first.maps] == [(m.name, m.kind, m.data.shape) for m in second.maps]
    return first, second


def _inputs(model: nn.Module, kind: type[nn.Module]) -> tuple[dict[str, list[Tensor]], list]:
    """Forward pre-hooks that keep a copy of every input of the modules of ``kind``, by path (one per call)."""
    seen: dict[str, list[Tensor]] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, kind):
            hook = lambda mod, args, name=name: seen.setdefault(name, []).append(args[0].clone())  # noqa: E731
            handles.append(m.register_forward_pre_hook(hook))
    return seen, handles


# -- pyramid split attention ---------------------------------------------------------------------------------------
def _psa_reference(psa: nn.Module, x: Tensor) -> Tensor:
    """softmax over the S scales of the SE weights of each scale's features, (B, S, C/S), from the module's layers."""
    if isinstance(psa, PSAExpanded):
        b, c, h, w = x.shape
        split = x.view(b, psa.S, c // psa.S, h, w)
        feats = [conv(split[:, i]) for i, conv in enumerate(psa.convs)]
        se = [block(f) for block, f in zip(psa.se_blocks, feats, strict=True)]
    else:
        feats = [conv(x) for conv in psa.convs]
        se = [psa.se(f) for f in feats]
    return torch.softmax(torch.stack(se, 1)[..., 0, 0], dim=1)  # (B, S, C/S)


@pytest.mark.parametrize("stacked", [False, True], ids=["expand_as", "stack_of_expanded"])
def test_psa_softmax_over_expanded_weights_is_a_branch_map(stacked: bool) -> None:
    model = psa_net(stacked)
    kind = PSAStacked if stacked else PSAExpanded
    seen, handles = _inputs(model, kind)  # PSAExpanded writes into its input: the hook keeps a copy
    first, second = _record(model, _x())
    for h in handles:
        h.remove()
    suffix = "softmax()" if stacked else "softmax"
    assert [m.name for m in first.maps] == [f"layer1.0.attn.{suffix}", f"layer2.0.attn.{suffix}"]
    for rec in (first, second):
        for m, (path, xs) in zip(rec.maps, sorted(seen.items()), strict=True):
            psa = model.get_submodule(path)
            s = 4
            c = xs[0].shape[1]
            assert m.kind == "branch" and tuple(m.data.shape) == (B, s, c // s), m.layout
            with torch.no_grad():
                expect = _psa_reference(psa, xs[0])
            torch.testing.assert_close(m.data, expect, rtol=0, atol=1e-6)
            torch.testing.assert_close(m.data.sum(1), torch.ones(B, c // s), rtol=0, atol=1e-6)
            assert "constant over its" in m.layout and "(expanded)" in m.layout


def test_unexpand_reduces_only_weights_constant_over_the_grid() -> None:
    g = torch.Generator().manual_seed(0)
    ref = (B, 16, 6, 7)
    se = torch.rand(B, 4, 4, 1, 1, generator=g)
    expanded = se.expand(B, 4, 4, 6, 7)  # stride 0 over H, W
    assert unexpand(expanded, "softmax", 1).shape == (B, 4, 4, 1, 1)
    c = canonical(expanded.softmax(1), batch=B, ref=ref, op="softmax", dim=1)  # equal values, no stride 0
    assert not isinstance(c, str) and c.kind == "branch" and tuple(c.data.shape) == (B, 4, 4)
    torch.testing.assert_close(c.data, se.softmax(1)[..., 0, 0], rtol=0, atol=1e-7)  # a vectorised lane may round
    # weights that vary over positions keep their full size, as before: a per-position softmax over 4 branches
    varying = torch.rand(B, 4, 4, 6, 7, generator=g).softmax(1)
    c = canonical(varying, batch=B, ref=ref, op="softmax", dim=1)
    assert not isinstance(c, str) and c.kind == "branch" and tuple(c.data.shape) == (B, 4, 4 * 6 * 7)
    # one position off by more than rounding is not constant
    almost = expanded.softmax(1).clone()
    almost[..., 3, 2] += 1e-3
    assert unexpand(almost, "softmax", 1) is almost
    # a channel gate expanded to the feature map's size is a channel gate; a softmax over the grid is left alone
    gate = torch.sigmoid(torch.randn(B, 16, 1, 1, generator=g)).expand(B, 16, 6, 7).contiguous()
    c = canonical(gate, batch=B, ref=ref, op="sigmoid")
    assert not isinstance(c, str) and c.kind == "channel" and tuple(c.data.shape) == (B, 16)
    flat = torch.full((B, 1, 6, 7), 0.5)
    assert unexpand(flat, "sigmoid", None) is flat  # one value per position: a spatial gate, even when flat
    grid_softmax = torch.full((B, 3, 6, 7), 1 / 42)
    assert unexpand(grid_softmax, "softmax", 3) is grid_softmax


# -- triplet attention -----------------------------------------------------------------------------------------------
def _gate_inputs(model: nn.Module) -> tuple[dict[str, Tensor], list]:
    """The pre-sigmoid conv output of every AttentionGate (copied: ``sigmoid_`` overwrites it), by path."""
    got: dict[str, Tensor] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, AttentionGate):
            hook = lambda mod, args, out, name=name: got.__setitem__(name, out.clone())  # noqa: E731
            handles.append(m.conv.register_forward_hook(hook))
    return got, handles


def test_triplet_attention_branches_on_the_maps_own_axes() -> None:
    model = triplet_net()
    logits, handles = _gate_inputs(model)
    seen, more = _inputs(model, TripletAttention)
    outs: dict[str, Tensor] = {}
    for name, m in model.named_modules():
        if isinstance(m, TripletAttention):
            more.append(m.register_forward_hook(lambda mod, a, o, name=name: outs.__setitem__(name, o.clone())))
    first, second = _record(model, _x(1))
    for h in handles + more:
        h.remove()
    names = [m.name for m in first.maps]
    assert names == [f"layer{i}.0.attn.{b}.sigmoid_()" for i in (1, 2) for b in ("cw", "hc", "hw")]
    for rec in (first, second):
        maps = {m.name: m for m in rec.maps}
        for block in ("layer1.0.attn", "layer2.0.attn"):
            x = seen[block][-1]  # (B, C, H, W)
            h, w = x.shape[-2:]
            g_cw = torch.sigmoid(logits[f"{block}.cw"]).permute(0, 2, 1, 3)  # (B, 1, C, W) -> (B, C, 1, W)
            g_hc = torch.sigmoid(logits[f"{block}.hc"]).permute(0, 3, 2, 1)  # (B, 1, H, C) -> (B, C, H, 1)
            g_hw = torch.sigmoid(logits[f"{block}.hw"])[:, 0]  # (B, H, W)
            cw, hc, hw = (maps[f"{block}.{b}.sigmoid_()"] for b in ("cw", "hc", "hw"))
            for m in (cw, hc, hw):  # every branch on the map's own H x W grid, none a C x W or H x C "spatial" map
                assert m.kind == "spatial" and m.size == (h, w) and tuple(m.data.shape) == (B, h, w)
            torch.testing.assert_close(hw.data, g_hw, rtol=0, atol=0)
            assert hw.raw is None
            assert cw.raw is not None and hc.raw is not None
            torch.testing.assert_close(cw.raw, g_cw, rtol=0, atol=0)
            torch.testing.assert_close(hc.raw, g_hc, rtol=0, atol=0)
            torch.testing.assert_close(cw.data, g_cw.mean(1).expand(B, h, w), rtol=0, atol=1e-6)
            torch.testing.assert_close(hc.data, g_hc.mean(1).expand(B, h, w), rtol=0, atol=1e-6)
            assert "C x W plane" in cw.layout and "H x C plane" in hc.layout
            # what the maps say is what the module did: out = x * (g_hw + g_cw + g_hc) / 3 on the map's axes
            gates = hw.data[:, None] + cw.raw + hc.raw
            torch.testing.assert_close(outs[block], x * gates / 3, rtol=1e-5, atol=1e-5)


class ChannelsLastSE(nn.Module):
    """SE as channels-last code writes it: the map permuted to (B, H, W, C), a (B, 1, 1, C) gate, permuted back."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc = nn.Linear(c, c)

    def forward(self, x: Tensor) -> Tensor:
        y = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        gate = torch.sigmoid(self.fc(y.mean((1, 2), keepdim=True)))  # (B, 1, 1, C)
        return (y * gate).permute(0, 3, 1, 2)


class PermutedNotBack(nn.Module):
    """A gate on a permuted copy whose product is never permuted back: read as computed, against its own input."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = AttentionGate()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.gate(x.permute(0, 2, 1, 3)).mean(1, keepdim=True).transpose(1, 2).mean(2, keepdim=True)


def test_gates_on_permuted_maps_need_the_product_permuted_back() -> None:
    torch.manual_seed(0)
    model = _randomise_bn(SmallResNet(attn=ChannelsLastSE))
    first, _ = _record(model, _x(2))
    for m, c in zip(first.maps, (16, 32), strict=True):  # a channel gate of C, not a (1, C) "spatial" map
        assert m.kind == "channel" and tuple(m.data.shape) == (B, c), m.layout
    torch.manual_seed(0)
    model = _randomise_bn(SmallResNet(attn=lambda c: PermutedNotBack()))
    first, _ = _record(model, _x(2))
    assert [(m.kind, m.size) for m in first.maps] == [("spatial", (16, 28)), ("spatial", (32, 14))]  # as before
    assert all("permuted" not in m.layout for m in first.maps)


# -- criss-cross attention -----------------------------------------------------------------------------------------
def _cross_reference(cca: CrissCrossAttention, x: Tensor) -> Tensor:
    """Each query's softmax over the keys of its column (itself left out) and its row, scattered into N x N."""
    q, k = cca.query_conv(x), cca.key_conv(x)  # (B, C', H, W)
    b, _, h, w = q.shape
    out = torch.zeros(b, h * w, h * w)
    for i in range(h):
        for j in range(w):
            col = torch.einsum("bc,bck->bk", q[:, :, i, j], k[:, :, :, j])  # (B, H)
            col[:, i] = float("-inf")
            row = torch.einsum("bc,bck->bk", q[:, :, i, j], k[:, :, i, :])  # (B, W)
            p = torch.softmax(torch.cat([col, row], 1), dim=1)
            for kk in range(h):
                out[:, i * w + j, kk * w + j] += p[:, kk]
            for ll in range(w):
                out[:, i * w + j, i * w + ll] += p[:, h + ll]
    return out[:, None]


@pytest.mark.parametrize("einsum", [False, True], ids=["bmm", "einsum"])
def test_criss_cross_attention_is_pairwise_on_each_querys_cross(einsum: bool) -> None:
    model = ccnet(einsum)
    seen, handles = _inputs(model, CrissCrossAttention)
    first, second = _record(model, _x(3))
    for hd in handles:
        hd.remove()
    suffix = "softmax()" if einsum else "softmax"
    assert [m.name for m in first.maps] == [f"head.cca.{suffix}", f"head.cca.{suffix}#2"]  # R = 2 recurrences
    h, w = 10, 14
    cca = model.head.cca
    inputs = seen["head.cca"]
    for rec in (first, second):
        for m, x in zip(rec.maps, inputs[-2:], strict=True):
            assert m.kind == "pairwise" and m.size == (h, w) and tuple(m.data.shape) == (B, 1, h * w, h * w)
            with torch.no_grad():
                expect = _cross_reference(cca, x)
            torch.testing.assert_close(m.data, expect, rtol=0, atol=1e-6)
            torch.testing.assert_close(m.data.sum(-1), torch.ones(B, 1, h * w), rtol=0, atol=1e-5)
    # the views: a clicked query's map is non-zero only on its row and its column
    for query, cell in (((0.1, 0.25), (2, 1)), ((0.9, 0.75), (7, 12))):
        views = build_views(_first_image(first), query, rollout=False)
        for v in views:
            assert v.cell == cell and v.spatial is not None and v.spatial.shape == (h, w)
            off = v.spatial.copy()
            off[cell[0], :] = 0
            off[:, cell[1]] = 0
            assert (off == 0).all() and (v.spatial[cell[0]] > 0).all() and (v.spatial[:, cell[1]] > 0).all()
            assert abs(float(v.spatial.sum()) - 1) < 1e-5
            assert detail_image(v) is not None


def _first_image(rec: AttentionRecorder) -> SimpleNamespace:
    """The recorder's maps and activations as build_views reads a result's (the first image)."""
    maps = [dataclasses.replace(m, data=m.data[:1]) for m in rec.maps]
    return SimpleNamespace(maps=maps, activations={k: v[0].numpy() for k, v in rec.activations.items()})


def test_cross_pairwise_without_the_query_in_its_column() -> None:
    """H + W - 1 keys per query (the column part leaves the query out): scattered as a plain loop does."""
    g = torch.Generator().manual_seed(4)
    h, w = 5, 6
    t = torch.rand(B, h, w, h + w - 1, generator=g).softmax(-1)
    expect = torch.zeros(B, h * w, h * w)
    for i in range(h):
        for j in range(w):
            others = [kk for kk in range(h) if kk != i]
            for n, kk in enumerate(others):
                expect[:, i * w + j, kk * w + j] += t[:, i, j, n]
            for ll in range(w):
                expect[:, i * w + j, i * w + ll] += t[:, i, j, h - 1 + ll]
    torch.testing.assert_close(cross_pairwise(t)[:, 0], expect, rtol=0, atol=0)
    c = canonical(t, batch=B, ref=(B, 8, h, w), op="softmax", dim=3)
    assert not isinstance(c, str) and c.kind == "pairwise" and c.size == (h, w)
    # on another grid it is not a cross: unclassified, as before
    assert isinstance(canonical(t, batch=B, ref=(B, 8, h + 1, w), op="softmax", dim=3), str)


def test_criss_cross_map_is_the_attention_the_module_applied() -> None:
    """out = gamma * (V A^T) + x with A the recorded N x N map: the map is what weighted the values."""
    model = ccnet()
    seen, handles = _inputs(model, CrissCrossAttention)
    outs: list[Tensor] = []
    handles.append(model.head.cca.register_forward_hook(lambda m, a, o: outs.append(o.clone())))
    with torch.no_grad(), AttentionRecorder(model) as rec:
        model(_x(5))
    for hd in handles:
        hd.remove()
    cca = model.head.cca
    for m, x, out in zip(rec.maps, seen["head.cca"], outs, strict=True):
        with torch.no_grad():
            v = cca.value_conv(x).flatten(2)  # (B, C, N)
            expect = cca.gamma * torch.einsum("bcn,bqn->bcq", v, m.data[:, 0]).view_as(x) + x
        torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-5)
