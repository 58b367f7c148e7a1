"""Gradient rollout (Chefer, Gur & Wolf, ICCV 2021): the math against a plain implementation of the paper's
self-attention rules, the attention gradients attnviz reads through fused attention and ``nn.MultiheadAttention``
against gradients read from an explicit softmax with a plain tensor hook, no hooks and no ``.grad`` left, and the
checks' contract (result.json, the PNG, the app's Checks panel)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as nn_module

from attnviz.capture.rollout import gradient_rollout, gradient_rollout_matrix
from attnviz.capture.structure import module_paths
from attnviz.checks import find_blocks, run_checks
from attnviz.checks.gradient import attention_gradients, gradient_rollout_check, token_layout
from tests.blockutil import randomise

timm = pytest.importorskip("timm")


def _hooks(model: nn.Module) -> int:
    """Module hooks on every module, global module hooks, torch function modes."""
    mods = [m for _, m in module_paths(model).values()]
    local = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in mods)
    glob = len(nn_module._global_forward_hooks) + len(nn_module._global_forward_pre_hooks)
    return local + glob + torch._C._len_torch_function_stack()


def _plain_chefer(a: list[np.ndarray], g: list[np.ndarray], prefix: int) -> np.ndarray:
    """The paper's rules for self-attention, written out for one image: R = I; per block, in forward order,
    Ā[i, j] = 1/H Σ_h max(∇A[h, i, j] · A[h, i, j], 0), R = R + Ā R; the class token's row over the patch tokens."""
    n = a[0].shape[-1]
    r = np.eye(n)
    for att, grad in zip(a, g, strict=True):  # (H, N, N) each
        heads = att.shape[0]
        a_bar = np.zeros((n, n))
        for h in range(heads):
            a_bar += np.maximum(grad[h].astype(np.float64) * att[h].astype(np.float64), 0.0)
        a_bar /= heads
        r = r + a_bar @ r
    return r[0, prefix:]


# -- (a) the math ---------------------------------------------------------------------------------------------------


def test_gradient_rollout_equals_the_papers_equations_on_random_weights_and_gradients() -> None:
    gen = torch.Generator().manual_seed(0)
    b, heads, grid, prefix, layers = 2, 3, (2, 3), 2, 4
    n = prefix + grid[0] * grid[1]
    a = [torch.softmax(torch.randn(b, heads, n, n, generator=gen) * 2, dim=-1) for _ in range(layers)]
    g = [torch.randn(b, heads, n, n, generator=gen) for _ in range(layers)]  # of both signs: the ReLU matters
    got = gradient_rollout(a, g, grid, prefix=prefix)  # (B, H, W)
    r = gradient_rollout_matrix(a, g)
    assert got.shape == (b, *grid) and r.dtype == torch.float64
    for i in range(b):
        want = _plain_chefer([t[i].numpy() for t in a], [t[i].numpy() for t in g], prefix)
        np.testing.assert_allclose(got[i].numpy().ravel(), want, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(r[i, 0, prefix:].numpy(), want, rtol=1e-12, atol=1e-12)
    # the reference is sensitive to what the mechanism must do: the ReLU and the identity both change the map
    want0 = _plain_chefer([t[0].numpy() for t in a], [t[0].numpy() for t in g], prefix)
    no_relu = np.eye(n)
    for t, u in zip(a, g, strict=True):
        no_relu = no_relu + (u[0] * t[0]).mean(0).double().numpy() @ no_relu
    assert np.abs(no_relu[0, prefix:] - want0).max() > 1e-3
    # one block: R = I + Ā, its class row over the grid is Ā's
    one = gradient_rollout(a[:1], g[:1], grid, prefix=prefix)[0].numpy().ravel()
    np.testing.assert_allclose(one, (g[0][0] * a[0][0]).clamp(min=0).mean(0)[0, prefix:].numpy(), atol=1e-7)


def test_gradient_rollout_rejects_what_it_cannot_read() -> None:
    a = [torch.softmax(torch.randn(1, 2, 5, 5), -1)]
    with pytest.raises(ValueError, match="gradients"):
        gradient_rollout_matrix(a, [])
    with pytest.raises(ValueError, match="do not fit"):
        gradient_rollout_matrix(a, [torch.randn(1, 2, 5, 4)])
    with pytest.raises(ValueError, match="prefix"):
        gradient_rollout(a, [torch.randn(1, 2, 5, 5)], (2, 2), prefix=0)
    with pytest.raises(ValueError, match="not 2 prefix"):
        gradient_rollout(a, [torch.randn(1, 2, 5, 5)], (2, 2), prefix=2)


# -- (b) timm: fused attention as shipped against an explicit softmax ------------------------------------------------


def _explicit_reference(model: nn.Module, x: torch.Tensor, cls: int) -> tuple[list[torch.Tensor], ...]:
    """A copy of a timm ViT with explicit attention (``fused_attn = False``), each block's softmax output read at its
    ``attn_drop``'s input with a plain tensor hook for ∂y_cls/∂A; (A, ∇A, logits)."""
    ref = copy.deepcopy(model)
    a: list[torch.Tensor] = []
    g: list[torch.Tensor] = []

    def read(module: nn.Module, args: tuple) -> None:
        a.append(args[0].detach())
        args[0].register_hook(lambda grad: g.append(grad.detach()))

    for blk in ref.blocks:
        blk.attn.fused_attn = False
        blk.attn.attn_drop.register_forward_pre_hook(read)
    out = ref(x.clone().requires_grad_(True))
    out[0, cls].backward()
    return a, g[::-1], out.detach()  # gradients arrive last block first


def _check_against_reference(model: nn.Module, x: torch.Tensor, tol: float) -> dict[str, float]:
    blocks, maps, _ = find_blocks(model, x)
    layout = token_layout(blocks, maps)
    assert layout is not None
    sites = [s for b in blocks if b.path in layout.blocks for s in b.sites]
    assert all(s.fused for s in sites) and len(sites) == len(model.blocks)  # timm's fused path as shipped
    grads_before = [p.grad for p in model.parameters()]
    names, a, g, logits, cls = attention_gradients(model, x, sites, layout.tokens)
    assert [p.grad for p in model.parameters()] == grads_before  # None: no .grad written
    assert _hooks(model) == 0
    ref_a, ref_g, ref_logits = _explicit_reference(model, x, cls)
    assert len(a) == len(ref_a) == len(model.blocks) and len(names) == len(a)
    with torch.no_grad():
        served = model(x)
    figures = {
        "A": max(float((p - q).abs().max()) for p, q in zip(a, ref_a, strict=True)),
        "grad": max(float((p - q).abs().max()) for p, q in zip(g, ref_g, strict=True)),
        "grad_scale": max(float(q.abs().max()) for q in ref_g),
        "logits_vs_served": float((logits - served).abs().max()),
        "logits_vs_explicit": float((logits - ref_logits).abs().max()),
    }
    assert figures["grad_scale"] > 1e-3  # the gradients are not trivially zero
    assert figures["A"] <= 1e-5 and figures["grad"] <= 1e-5, figures
    assert figures["logits_vs_served"] <= tol and figures["logits_vs_explicit"] <= tol, figures
    check = gradient_rollout_check(model, x, blocks, maps)
    assert check is not None and check.target == cls and check.layout.prefix == layout.prefix
    want = _plain_chefer([t[0].numpy() for t in ref_a], [t[0].numpy() for t in ref_g], layout.prefix)
    np.testing.assert_allclose(check.map.ravel(), want, rtol=1e-5, atol=1e-8)
    assert check.map.shape == layout.grid and check.logits_delta <= tol
    assert _hooks(model) == 0 and all(p.grad is None for p in model.parameters())
    return {**figures, "map": float(np.abs(check.map.ravel() - want).max()), "map_scale": float(want.max())}


def test_timm_vit_tiny_fused_gradients_equal_the_explicit_softmax_ones() -> None:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    figures = _check_against_reference(model, x, tol=1e-5)
    print("vit_tiny_patch16_224 fused vs explicit:", figures)


@pytest.mark.parametrize(
    ("what", "prefix", "grid"),
    [("registers", 5, (4, 6)), ("distilled", 2, (4, 4))],
)
def test_timm_registers_and_distillation_token_on_small_vits(what: str, prefix: int, grid: tuple[int, int]) -> None:
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(2)
    size = (grid[0] * 8, grid[1] * 8)
    common = {"img_size": size, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2, "num_classes": 10}
    model = VisionTransformer(reg_tokens=4, **common) if what == "registers" else VisionTransformerDistilled(**common)
    model = randomise(model, 0.05)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(3))
    blocks, maps, _ = find_blocks(model, x)
    layout = token_layout(blocks, maps)
    assert layout is not None and layout.prefix == prefix and layout.grid == grid
    _check_against_reference(model, x, tol=1e-5)


# -- (c) torchvision's ViT: nn.MultiheadAttention -------------------------------------------------------------------


def _torchvision_by_hand(model: nn.Module, x: torch.Tensor, a: list, g: list) -> torch.Tensor:
    """torchvision's VisionTransformer forward written out (eval: no dropout), its attention an explicit softmax
    whose output and gradient (a plain tensor hook) are read."""
    n = x.shape[0]
    t = model.conv_proj(x)  # (B, E, h, w)
    t = t.reshape(n, model.hidden_dim, -1).permute(0, 2, 1)  # (B, h·w, E)
    t = torch.cat([model.class_token.expand(n, -1, -1), t], dim=1) + model.encoder.pos_embedding  # (B, N, E)
    for layer in model.encoder.layers:
        mha = layer.self_attention
        e, heads = mha.embed_dim, mha.num_heads
        d = e // heads
        y = layer.ln_1(t)
        q, k, v = F.linear(y, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)  # (B, N, E) each
        q, k, v = (u.reshape(n, -1, heads, d).transpose(1, 2) for u in (q, k, v))  # (B, heads, N, d)
        att = torch.softmax(q @ k.transpose(-2, -1) / d**0.5, dim=-1)  # (B, heads, N, N)
        a.append(att.detach())
        att.register_hook(lambda grad: g.append(grad.detach()))
        o = (att @ v).transpose(1, 2).reshape(n, -1, e)
        t = t + mha.out_proj(o)
        t = t + layer.mlp(layer.ln_2(t))
    return model.heads(model.encoder.ln(t)[:, 0])


def test_torchvision_vit_mha_gradients_equal_a_hand_written_explicit_softmax() -> None:
    from torchvision.models import VisionTransformer

    torch.manual_seed(4)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)
    model = randomise(model, 0.2)  # random in-projection and out-projection biases (PyTorch starts them at 0)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    blocks, maps, _ = find_blocks(model, x)
    layout = token_layout(blocks, maps)
    assert layout is not None and layout.prefix == 1 and layout.grid == (4, 4)
    sites = [s for b in blocks if b.path in layout.blocks for s in b.sites]
    assert len(sites) == 2 and all(s.compute is not None for s in sites)
    _, a, g, logits, cls = attention_gradients(model, x, sites, layout.tokens)
    ref_a: list[torch.Tensor] = []
    ref_g: list[torch.Tensor] = []
    ref_logits = _torchvision_by_hand(copy.deepcopy(model), x.clone().requires_grad_(True), ref_a, ref_g)
    with torch.no_grad():
        served = model(x)
    np.testing.assert_allclose(ref_logits.detach().numpy(), served.numpy(), atol=1e-5)  # the hand forward is right
    ref_logits[0, cls].backward()
    ref_g = ref_g[::-1]
    assert max(float(u.abs().max()) for u in ref_g) > 1e-3
    for p, q in zip(a, ref_a, strict=True):
        np.testing.assert_allclose(p.numpy(), q.numpy(), atol=1e-5)
    for p, q in zip(g, ref_g, strict=True):
        np.testing.assert_allclose(p.numpy(), q.numpy(), atol=1e-5)
    assert float((logits - served).abs().max()) <= 1e-5
    check = gradient_rollout_check(model, x, blocks, maps)
    assert check is not None and check.target == cls
    want = _plain_chefer([t[0].numpy() for t in ref_a], [t[0].numpy() for t in ref_g], 1)
    np.testing.assert_allclose(check.map.ravel(), want, rtol=1e-5, atol=1e-7)
    assert _hooks(model) == 0 and all(p.grad is None for p in model.parameters())


# -- (d) what the pass leaves behind ----------------------------------------------------------------------------------


class _RaisesInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: object, t: torch.Tensor) -> torch.Tensor:
        return t.clone()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("backward raised")


class _Wrapped(nn.Module):
    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit
        self.fail = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.vit(x)
        return _RaisesInBackward.apply(out) if self.fail else out


def test_no_hooks_and_no_grad_left_also_when_the_backward_raises() -> None:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(6)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10)
    model = _Wrapped(vit).eval()
    x = torch.randn(1, 3, 32, 32)
    blocks, maps, _ = find_blocks(model, x)
    layout = token_layout(blocks, maps)
    sites = [s for b in blocks for s in b.sites]
    marker = [torch.full_like(p, 7.0) for p in model.parameters()]
    for p, m in zip(model.parameters(), marker, strict=True):
        p.grad = m  # a .grad that was there before stays as it was
    model.fail = True
    with pytest.raises(RuntimeError, match="backward raised"):
        attention_gradients(model, x, sites, layout.tokens)
    assert _hooks(model) == 0
    assert all(p.grad is m for p, m in zip(model.parameters(), marker, strict=True))
    assert all(bool((m == 7.0).all()) for m in marker)
    model.fail = False
    _, a, _, _, _ = attention_gradients(model, x, sites, layout.tokens)
    assert len(a) == 2 and _hooks(model) == 0
    assert all(p.grad is m and bool((m == 7.0).all()) for p, m in zip(model.parameters(), marker, strict=True))
    with torch.no_grad():
        y = model(x)
    with pytest.raises(RuntimeError):  # a forward that raises (wrong channel count) leaves nothing either
        attention_gradients(model, torch.randn(1, 5, 32, 32), sites, layout.tokens)
    assert _hooks(model) == 0
    with torch.no_grad():
        assert torch.equal(model(x), y)


def test_no_token_attention_gives_no_gradient_rollout() -> None:
    from torchvision.models import resnet18

    model = resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    blocks, maps, _ = find_blocks(model, x)
    assert token_layout(blocks, maps) is None and gradient_rollout_check(model, x, blocks, maps) is None


# -- the checks' contract ------------------------------------------------------------------------------------------


def test_run_checks_gives_the_gradient_rollout_and_its_agreement_per_token_block() -> None:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(7)
    model = randomise(
        VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10), 0.05
    )
    x = torch.randn(1, 3, 32, 32)
    checks = run_checks(model, x, randomise=False)
    gr = checks.gradient_rollout
    assert gr is not None and gr.target == checks.target and gr.map.shape == (4, 4)
    blocks, maps, _ = find_blocks(model, x)
    again = gradient_rollout_check(model, x, blocks, maps, checks.target)
    np.testing.assert_array_equal(gr.map, again.map)
    out = checks.json()
    assert out["checks_gradient_rollout"]["blocks"] == 2 and out["checks_gradient_rollout"]["prefix"] == 1
    assert out["checks_gradient_rollout"]["logits_max_abs_diff"] <= 1e-5
    for path in ("blocks.0.attn", "blocks.1.attn"):
        assert set(out["checks"][path]["gradient_rollout"]) == {"spearman", "top20_iou"}
    assert "gradient_rollout" in checks.timings
    off = run_checks(model, x, randomise=False, gradient_rollout_on=False)
    assert off.gradient_rollout is None and "checks_gradient_rollout" not in off.json()


@pytest.mark.slow
def test_render_checks_writes_the_gradient_rollout(tmp_path: Path) -> None:
    from attnviz.cli.main import main
    from tests.images import photo

    img = tmp_path / "cat.png"
    photo((72, 64)).save(img)
    out = tmp_path / "out"
    args = ["render", str(img), "--model", "timm:vit_tiny_patch16_224", "--weights", "random", "--offline"]
    assert main([*args, "--out", str(out), "--device", "cpu", "--workers", "0", "--checks"]) == 0
    sidecar = json.loads((out / "cat" / "result.json").read_text())
    gr = sidecar["checks_gradient_rollout"]
    assert gr["grid"] == [14, 14] and gr["blocks"] == 12 and gr["target"] == sidecar["checks_info"]["target"]
    assert np.load(out / "cat" / "checks" / "gradient_rollout.npy").shape == (14, 14)
    assert (out / "cat" / "checks" / "gradient_rollout.png").read_bytes()[:4] == b"\x89PNG"
    assert "checks/gradient_rollout.png" in sidecar["files"]
    assert "gradient_rollout" in sidecar["checks"]["blocks.11.attn"]


@pytest.mark.slow
def test_app_checks_tab_shows_the_gradient_rollout_beside_a_token_block(tmp_path: Path) -> None:
    """The Checks tab of a ViT: the attribution beside the selected token block's view is the gradient rollout (its
    block has no Grad-CAM), drawn as Grad-CAM is, with its agreement row in the scores table."""
    import dataclasses

    from attnviz.app import AppConfig, Handlers
    from attnviz.app.choices import NONE
    from attnviz.app.panels import panel_image
    from attnviz.render import normalize, overlay
    from tests.images import ASSET

    spec = "timm:vit_tiny_patch16_224"
    config = AppConfig(device="cpu", offline=True, export_root=tmp_path / "exports")
    app = Handlers(dataclasses.replace(config, served=spec, model=spec, attention=None))
    state, *_ = app.run_analysis(ASSET, NONE, spec, "random", "turbo", 0.5, "map", "32", None)
    key = state.result.maps[5].name
    state, _chart, view, cam, _rand, text, _sanity = app.run_checks(state, "turbo", 0.5, "map", key)
    checks = state.result.checks
    c = checks.blocks["blocks.5.attn"]
    assert c.gradcam is None and c.gradient_rollout_scores is not None and checks.gradient_rollout is not None
    image = panel_image(state.result.image)
    want = overlay(image, normalize([checks.gradient_rollout.map], "map")[0], "turbo", 0.5)
    np.testing.assert_array_equal(cam, want)
    s = c.gradient_rollout_scores
    assert "| gradient rollout (" in text and f"| {s['spearman']:+.2f} | {s['top20_iou']:.2f} |" in text
    assert "gradient rollout (Chefer et al. 2021)" in text and view is not None


def test_the_pass_refuses_past_the_memory_limit_before_any_forward() -> None:
    """The pass holds every block's full (B, heads, N, N) weights with their gradients and graph, whatever the
    recorder kept: estimated as blocks x heads x N² x 4 bytes x 3 and refused past the limit (the recorder's
    MemoryLimitError), with no forward run, nothing left hooked and the model as it was; at the limit it runs."""
    from attnviz.capture.fused import MemoryLimitError
    from attnviz.checks.gradient import gradient_memory

    torch.manual_seed(7)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    blocks, maps, _ = find_blocks(model, x)
    layout = token_layout(blocks, maps)
    assert layout is not None and layout.tokens == 17
    need = gradient_memory(layout, maps)
    assert need == len(model.blocks) * 3 * 17 * 17 * 4 * 3  # 12 blocks x 3 heads (kept rows per head) x N² x 4 x 3
    state = {k: v.clone() for k, v in model.state_dict().items()}
    calls: list[int] = []
    counter = model.register_forward_pre_hook(lambda m, a: calls.append(1))  # the test's own: counts forwards
    try:
        with pytest.raises(MemoryLimitError, match=r"memory limit is .* MiB.*larger memory_limit"):
            gradient_rollout_check(model, x, blocks, maps, memory_limit=need - 1)
        assert calls == []  # refused before the forward
    finally:
        counter.remove()
    assert _hooks(model) == 0 and not model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    check = gradient_rollout_check(model, x, blocks, maps, memory_limit=need)
    assert check is not None and check.map.shape == layout.grid and _hooks(model) == 0
    assert gradient_rollout_check(model, x, blocks, maps, memory_limit=None) is not None
