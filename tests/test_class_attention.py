"""Class attention (CaiT, Touvron et al., "Going deeper with Image Transformers", ICCV 2021): in the last blocks only
the class token queries, over all N = 1 + H·W tokens: weights (B, heads, 1, N), read as ``token`` maps whose one query
is the class token. The self-attention blocks before the class token joins (N = H·W, k = 0) are read too."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attnviz.capture.recorder import AttentionRecorder
from attnviz.capture.views import ROLLOUT_KEY, build_views, head_view, token_heads
from tests.blockutil import module_inputs

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def cait() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("cait_xxs24_224", pretrained=False, depth=2, depth_token_only=2).eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def _reference(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Each ClassAttn's weights written out from its input: softmax(q_cls · kᵀ · scale), (B, heads, 1, N)."""
    inputs = module_inputs(model, [b.attn for b in model.blocks_token_only], x)
    out = []
    for block, t in zip(model.blocks_token_only, inputs, strict=True):
        a = block.attn
        b, n, c = t.shape
        h = a.num_heads
        q = a.q(t[:, 0]).reshape(b, 1, h, c // h).permute(0, 2, 1, 3)  # (B, heads, 1, d)
        k = a.k(t).reshape(b, n, h, c // h).permute(0, 2, 1, 3)  # (B, heads, N, d)
        out.append(((q @ k.transpose(-2, -1)) * (c // h) ** -0.5).softmax(-1).detach())
    return out


def _record(model: nn.Module, x: torch.Tensor, keep: str) -> list:
    with torch.no_grad():
        bare = model(x)
        for _ in range(2):  # the discovery pass, then the cached sites' hooks
            with AttentionRecorder(model, keep=keep) as rec:
                out = model(x)
            assert torch.equal(out, bare) and _no_hooks(model)
    return rec.maps


def test_class_attention_equals_reference(cait: nn.Module, image: torch.Tensor) -> None:
    maps = _record(cait, image, "full")
    cls = [m for m in maps if m.name.startswith("blocks_token_only.")]
    assert [m.kind for m in cls] == ["token", "token"] and all(m.size == (14, 14) for m in cls)
    for m, ref in zip(cls, _reference(cait, image), strict=True):
        assert tuple(m.data.shape) == (2, 4, 1, 197) and "class attention" in m.layout
        torch.testing.assert_close(m.data, ref, rtol=0, atol=1e-5)
    # the self-attention blocks before the class token joins: N = 196 patch tokens, every one read
    own = [m for m in maps if m.name.startswith("blocks.")]
    assert len(own) == 2 and all(m.data.shape[-1] == m.data.shape[-2] == 196 for m in own)


def test_class_attention_kept_rows_and_views(cait: nn.Module, image: torch.Tensor) -> None:
    """keep="auto": the head mean and the class token's row per head; every view of it is the class token's row
    (a clicked query has no row of its own), per head from the rows; rollout leaves class attention out."""
    maps = _record(cait, image, "auto")
    ref = _reference(cait, image)
    cls = [m for m in maps if m.name.startswith("blocks_token_only.")]
    for m, r in zip(cls, ref, strict=True):
        torch.testing.assert_close(m.data, r.mean(1, keepdim=True), rtol=0, atol=1e-5)
        assert m.rows is not None
        torch.testing.assert_close(m.rows, r, rtol=0, atol=1e-5)

    class _Result:
        def __init__(self, maps: list) -> None:
            self.maps, self.activations = maps, {}

    for query in (None, (0.2, 0.7)):
        views = [v for v in build_views(_Result(cls), query) if v.key != ROLLOUT_KEY]
        assert len(views) == 2
        for v, r in zip(views, ref, strict=True):
            want = r[0].mean(0)[0, 1:].reshape(14, 14).numpy()
            np.testing.assert_allclose(v.spatial, want, rtol=0, atol=1e-5)
            assert v.cell is None and "class token" in v.spatial_label
            assert token_heads(v) == 4
            np.testing.assert_allclose(
                head_view(v, 3).spatial, r[0, 3, 0, 1:].reshape(14, 14).numpy(), rtol=0, atol=1e-5
            )
    assert all(v.key != ROLLOUT_KEY for v in build_views(_Result(cls)))
