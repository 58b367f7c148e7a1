"""``nn.MultiheadAttention``: its per-head weights recomputed from its inputs (attnviz/capture/mha.py, the adapter in
attnviz/capture/adapters.py), checked against the module's own ``need_weights=True, average_attn_weights=False``
weights and a plain softmax(Q Kᵀ/√d + mask) written here; torchvision's ViT (``need_weights=False``) gives token maps
with identical logits and no hooks left."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.modules import module as nn_module

from attnviz import AttentionRecorder
from attnviz.capture.mha import mha_weights
from attnviz.capture.structure import module_paths

E, HEADS, L, S, B = 32, 4, 7, 9, 2
CASES = ("plain", "batch_first", "kvdim", "bool_mask", "float_mask_3d", "padding", "padding_float_mask", "causal")


def _hooks(model: nn.Module) -> int:
    """Module hooks on every module, global module hooks, torch function modes."""
    mods = [m for _, m in module_paths(model).values()]
    local = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in mods)
    glob = len(nn_module._global_forward_hooks) + len(nn_module._global_forward_pre_hooks)
    return local + glob + torch._C._len_torch_function_stack()


def _case(case: str) -> tuple[nn.MultiheadAttention, tuple, dict]:
    """The module and one call's (args, kwargs) for a case; no query row has every key masked."""
    torch.manual_seed(0)
    kv = case == "kvdim"
    m = nn.MultiheadAttention(
        E, HEADS, batch_first=case == "batch_first", kdim=24 if kv else None, vdim=20 if kv else None
    )
    m.eval()
    with torch.no_grad():  # PyTorch starts the biases at 0: random ones, so a bias left out cannot go unnoticed
        m.in_proj_bias.normal_()
        m.out_proj.bias.normal_()
    n = L if case == "causal" else S
    q = torch.randn(B, L, E) if m.batch_first else torch.randn(L, B, E)
    k = torch.randn(n, B, 24 if kv else E) if not m.batch_first else torch.randn(B, n, E)
    v = torch.randn(n, B, 20 if kv else E) if not m.batch_first else torch.randn(B, n, E)
    kwargs: dict = {}
    g = torch.Generator().manual_seed(1)
    if case == "bool_mask":  # True: not allowed; key 0 always allowed
        mask = torch.rand(L, S, generator=g) > 0.6
        mask[:, 0] = False
        kwargs["attn_mask"] = mask
    if case == "float_mask_3d":
        kwargs["attn_mask"] = torch.randn(B * HEADS, L, S, generator=g)
    if case in ("padding", "padding_float_mask"):
        pad = torch.zeros(B, S, dtype=torch.bool)
        pad[0, -3:] = True
        pad[1, 2] = True
        kwargs["key_padding_mask"] = pad
        if case == "padding_float_mask":
            kwargs["attn_mask"] = torch.randn(L, S, generator=g)
    if case == "causal":
        kwargs["attn_mask"] = nn.Transformer.generate_square_subsequent_mask(L)
        kwargs["is_causal"] = True
    return m, (q, k, v), kwargs


def _plain(m: nn.MultiheadAttention, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(Q Kᵀ/√d + mask) per head, written from the paper (Vaswani et al. 2017, sec. 3.2.2), batch-first
    (L, B, E) inputs; ``mask`` additive (B, heads, L, S) or None."""
    wq = m.in_proj_weight[:E] if m._qkv_same_embed_dim else m.q_proj_weight
    wk = m.in_proj_weight[E : 2 * E] if m._qkv_same_embed_dim else m.k_proj_weight
    bq, bk = m.in_proj_bias[:E], m.in_proj_bias[E : 2 * E]
    d = E // HEADS
    qh = (q @ wq.T + bq).permute(1, 0, 2).reshape(B, L, HEADS, d).transpose(1, 2)  # (B, heads, L, d)
    kh = (k @ wk.T + bk).permute(1, 0, 2).reshape(B, -1, HEADS, d).transpose(1, 2)  # (B, heads, S, d)
    logits = qh @ kh.transpose(-1, -2) / math.sqrt(d)
    return torch.softmax(logits if mask is None else logits + mask, dim=-1)


@pytest.mark.parametrize("case", CASES)
def test_mha_weights_equal_the_modules_own(case: str) -> None:
    m, args, kwargs = _case(case)
    with torch.no_grad():
        _, own = m(*args, need_weights=True, average_attn_weights=False, **kwargs)  # (B, heads, L, S)
        mine = mha_weights(m, args, {**kwargs, "need_weights": False})
    assert mine.shape == own.shape == (B, HEADS, L, args[1].shape[1 if m.batch_first else 0])
    assert torch.allclose(mine, own, atol=1e-6, rtol=0), (mine - own).abs().max()


def test_mha_weights_equal_a_plain_softmax() -> None:
    """Not only torch's own function: the paper's equation, with a bool mask and key padding written as -inf."""
    m, (q, k, v), _ = _case("kvdim")
    mask = torch.rand(L, S, generator=torch.Generator().manual_seed(2)) > 0.7
    mask[:, 1] = False
    pad = torch.zeros(B, S, dtype=torch.bool)
    pad[1, 0] = True
    add = torch.zeros(B, 1, L, S).masked_fill((mask[None] | pad[:, None, :])[:, None], float("-inf"))
    with torch.no_grad():
        ref = _plain(m, q, k, add)
        mine = mha_weights(m, (q, k, v), {"attn_mask": mask, "key_padding_mask": pad})
    assert torch.allclose(mine, ref, atol=1e-6, rtol=0)
    assert float(mine[1, :, :, 0].abs().max()) == 0.0  # the padded key gets nothing


class _ConvMHA(nn.Module):
    """DETR-like: a conv feature map flattened to (H·W, B, C) tokens, self-attention over its positions."""

    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, E, 3, padding=1)
        self.attn = nn.MultiheadAttention(E, HEADS, batch_first=batch_first)
        self.head = nn.Linear(E, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv(x)  # (B, C, H, W)
        t = f.flatten(2).permute(2, 0, 1)  # (HW, B, C)
        if self.attn.batch_first:
            t = t.transpose(0, 1)
        y, _ = self.attn(t, t, t, need_weights=False)
        return self.head(y.mean(dim=1 if self.attn.batch_first else 0))


@pytest.mark.parametrize("batch_first", [False, True])
def test_mha_on_a_feature_map_is_pairwise_and_equals_the_modules_weights(batch_first: bool) -> None:
    torch.manual_seed(0)
    model = _ConvMHA(batch_first).eval()
    x = torch.randn(B, 3, 6, 5)
    with torch.no_grad():
        bare = model(x)
        with AttentionRecorder(model, keep="full") as rec:
            out = model(x)
            out2 = model(x)  # later forwards: the learnt layout, through the cheap hooks
        t = model.conv(x).flatten(2).permute(2, 0, 1)
        t = t.transpose(0, 1) if batch_first else t
        _, own = model.attn(t, t, t, need_weights=True, average_attn_weights=False)
    assert torch.equal(bare, out) and torch.equal(bare, out2)
    assert [(m.name, m.kind, m.how, m.size) for m in rec.maps] == [("attn", "pairwise", "adapter", (6, 5))] * 2
    for m in rec.maps:
        assert torch.allclose(m.data, own, atol=1e-6, rtol=0)
    assert rec.unclassified == []
    assert _hooks(model) == 0


def _vit():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return tv.models.vit_b_16(weights=None).eval()


def test_torchvision_vit_gives_token_maps_with_identical_logits_and_no_hooks_left() -> None:
    model = _vit()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        bare = model(x)
        with AttentionRecorder(model) as rec:
            out = model(x)
        with AttentionRecorder(model, discover=False) as rec2:  # a later recorder: the layout it learnt is kept
            out2 = model(x)
    assert torch.equal(bare, out) and torch.equal(bare, out2)
    for r in (rec, rec2):
        maps = r.maps
        assert len(maps) == 12 and r.unclassified == []
        assert {(m.kind, m.size, m.kept, tuple(m.data.shape)) for m in maps} == {
            ("token", (14, 14), "rows", (1, 1, 197, 197))
        }
        assert all(m.rows is not None and tuple(m.rows.shape) == (1, 12, 1, 197) for m in maps)
        assert maps[0].name == "encoder.layers.encoder_layer_0.self_attention"
    assert "1 prefix token(s) (class)" in rec.maps[0].layout
    assert _hooks(model) == 0
    # the class token's rows per head equal the module's own weights on the same input
    inp: dict = {}
    blk = model.encoder.layers[3]
    handle = blk.self_attention.register_forward_pre_hook(lambda m, a: inp.update(x=a[0]))
    with torch.no_grad():
        model(x)
        _, own = blk.self_attention(inp["x"], inp["x"], inp["x"], need_weights=True, average_attn_weights=False)
    handle.remove()
    assert torch.allclose(rec.maps[3].rows[:, :, 0], own[:, :, 0], atol=1e-6, rtol=0)
    assert torch.allclose(rec.maps[3].data[:, 0], own.mean(dim=1), atol=1e-6, rtol=0)


def test_torchvision_vit_leaves_no_hooks_when_the_forward_raises() -> None:
    model = _vit()
    with pytest.raises(AssertionError, match="Wrong image height"), torch.no_grad(), AttentionRecorder(model):
        model(torch.randn(1, 3, 200, 224))  # torchvision's ViT refuses another size
    assert _hooks(model) == 0
    with torch.no_grad(), AttentionRecorder(model) as rec:
        model(torch.randn(1, 3, 224, 224))
    assert len(rec.maps) == 12
    assert _hooks(model) == 0


def test_mha_with_bias_kv_is_listed_with_its_reason() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, E, 1)
            self.attn = nn.MultiheadAttention(E, HEADS, add_bias_kv=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.conv(x).flatten(2).permute(2, 0, 1)
            return self.attn(t, t, t, need_weights=False)[0].sum(0)

    model = Net().eval()
    x = torch.randn(1, 3, 4, 4)
    with torch.no_grad():
        bare = model(x)
        with AttentionRecorder(model) as rec:
            out = model(x)
    assert torch.equal(bare, out)
    assert rec.maps == []
    assert [(n, why) for n, _, why in rec.unclassified] == [
        ("attn", "nn.MultiheadAttention with add_bias_kv=True (a learnt extra key/value) is not read yet")
    ]
    assert _hooks(model) == 0


def test_mha_weights_are_computed_only_for_kept_sites() -> None:
    """An excluded MHA is not hooked at all: nothing is computed for it (only the user's own hook is there)."""
    model = _ConvMHA(False).eval()
    handle = model.attn.register_forward_hook(lambda *a: None)
    with torch.no_grad(), AttentionRecorder(model, exclude=["attn"]) as rec:
        model(torch.randn(1, 3, 4, 4))
        assert len(model.attn._forward_hooks) == 1 and len(model.attn._forward_pre_hooks) == 0
    assert rec.maps == []
    handle.remove()
    assert _hooks(model) == 0


@pytest.mark.parametrize("case", CASES)
def test_replaced_weights_give_out_proj_of_weights_times_v(case: str) -> None:
    """The checks' ablation replaces an MHA's weights: the engine returns ``out_proj(W' @ V)`` (mha_output). With the
    module's own weights it reproduces the module's output; with other weights it equals a plain computation."""
    from attnviz.capture.adapters import adapter_sites
    from attnviz.capture.hooks import SiteHooks
    from attnviz.capture.mha import mha_output

    m, args, kwargs = _case(case)
    with torch.no_grad():
        own_out = m(*args, **kwargs, need_weights=False)
        w = mha_weights(m, args, kwargs)  # (B, heads, L, S)
        again = mha_output(m, args, {**kwargs, "need_weights": False}, own_out, w)
        assert torch.allclose(again[0], own_out[0], atol=1e-5) and again[1] is own_out[1]

        value = args[2] if not m.batch_first else args[2].transpose(0, 1)  # (S, B, vdim)
        w_v = m.in_proj_weight.chunk(3)[2] if m._qkv_same_embed_dim else m.v_proj_weight
        b_v = m.in_proj_bias.chunk(3)[2]
        v = nn.functional.linear(value, w_v, b_v).mean(0)  # uniform rows: every query gets the mean value (B, E)
        plain = m.out_proj(v).unsqueeze(0).expand(w.shape[-2], -1, -1)  # (L, B, E)
        if m.batch_first:
            plain = plain.transpose(0, 1)

        (site,) = [s for s in adapter_sites(module_paths(m))[0] if s.compute is not None]
        hooks = SiteHooks(m, on_site=lambda s, weight, op, dim: torch.full_like(weight, 1.0 / weight.shape[-1]))
        hooks.open()
        try:
            hooks.sites([site])
            got = m(*args, **kwargs, need_weights=False)
        finally:
            hooks.close()
    assert torch.allclose(got[0], plain, atol=1e-5), (got[0] - plain).abs().max()
    assert _hooks(m) == 0
