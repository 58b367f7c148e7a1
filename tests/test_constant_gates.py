"""A gate whose input does not depend on the image is not attention (issue 20): ConViT's per-head gate
sigmoid(gating_param) (d'Ascoli et al., ICML 2021, GPSA) weights heads, is the same for every image, and was reported
as channel gates. Discovery follows what is computed from parameters and buffers only and skips such weights, with
the reason; gates computed from the features (SE) and buffers updated with the features stay sites."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnviz import AttentionRecorder

B, C, HEADS = 2, 16, 4


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


class GatedHeads(nn.Module):
    """A GPSA-like block on a (B, C, H, W) map: two softmax attentions (content, learned positional) mixed per head
    by sigmoid(gating_param), then applied to V; and, with ``se``, an SE gate computed from the features."""

    def __init__(self, se: bool = False) -> None:
        super().__init__()
        self.qkv = nn.Conv2d(C, 3 * C, 1)
        self.pos = nn.Parameter(torch.randn(1, HEADS, 16, 16))  # (1, heads, N, N) positional scores, N = 4 x 4
        self.gating_param = nn.Parameter(torch.ones(HEADS))
        self.fc = nn.Linear(C, C) if se else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).reshape(b, 3, HEADS, c // HEADS, h * w).unbind(1)  # (B, heads, d, N) each
        content = (q.transpose(-2, -1) @ k).softmax(-1)  # (B, heads, N, N)
        positional = self.pos.softmax(-1)  # (1, heads, N, N): learned, the same for every image
        gate = torch.sigmoid(self.gating_param.view(1, -1, 1, 1))  # (1, heads, 1, 1): per head, not per channel
        attn = (1.0 - gate) * content + gate * positional
        out = (v @ attn.transpose(-2, -1)).reshape(b, c, h, w)
        if self.fc is not None:
            out = out * torch.sigmoid(self.fc(out.mean((2, 3))))[:, :, None, None]  # SE: from the features
        return x + out


class BufferGate(nn.Module):
    """A buffer overwritten in place with the features' channel mean, then gated: image-dependent, so a site."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("state", torch.zeros(B, C))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.state[:] = x.mean((2, 3))  # (B, C)
        return x * torch.sigmoid(self.state)[:, :, None, None]


def _record(model: nn.Module, x: torch.Tensor) -> tuple[AttentionRecorder, list, torch.Tensor]:
    with torch.no_grad():
        bare = model(x)
        runs = []
        for _ in range(2):  # the discovery pass, then the cached sites' hooks
            with AttentionRecorder(model) as rec:
                out = model(x)
            assert torch.equal(out, bare) and _no_hooks(model)
            runs.append(rec.maps)
    return rec, runs, bare


def test_parameter_gate_is_not_a_channel_gate() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, C, 3, padding=1), GatedHeads()).eval()
    rec, runs, _ = _record(model, torch.randn(B, 3, 4, 4))
    for maps in runs:
        assert [m.kind for m in maps] == ["pairwise"]  # the content softmax; no "channel" gates
    skipped = {n: why for n, _, why in rec.skipped}
    assert skipped["1.sigmoid()"].startswith("a constant") and "softmax()#2" not in {m.name for m in runs[0]}
    assert any(n.startswith("1.softmax()") and why.startswith("a constant") for n, why in skipped.items())


def test_feature_gate_stays_a_site() -> None:
    """The SE gate beside the constant one is read, and equals a plain recomputation."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, C, 3, padding=1), GatedHeads(se=True)).eval()
    x = torch.randn(B, 3, 4, 4)
    _, runs, _ = _record(model, x)
    for maps in runs:
        assert sorted(m.kind for m in maps) == ["channel", "pairwise"]
        block = model[1]
        with torch.no_grad():  # the reference: the block's own arithmetic, written out
            f = model[0](x)
            b, c, h, w = f.shape
            q, k, v = block.qkv(f).reshape(b, 3, HEADS, c // HEADS, h * w).unbind(1)
            g = torch.sigmoid(block.gating_param.view(1, -1, 1, 1))
            attn = (1 - g) * (q.transpose(-2, -1) @ k).softmax(-1) + g * block.pos.softmax(-1)
            out = (v @ attn.transpose(-2, -1)).reshape(b, c, h, w)
            se = torch.sigmoid(block.fc(out.mean((2, 3))))
        gate = next(m for m in maps if m.kind == "channel")
        torch.testing.assert_close(gate.data, se, rtol=0, atol=1e-6)


def test_buffer_updated_with_features_stays_a_site() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, C, 3, padding=1), BufferGate()).eval()
    x = torch.randn(B, 3, 8, 8)
    _, runs, _ = _record(model, x)
    with torch.no_grad():
        expect = torch.sigmoid(model[0](x).mean((2, 3)))
    for maps in runs:
        assert [m.kind for m in maps] == ["channel"]
        torch.testing.assert_close(maps[0].data, expect, rtol=0, atol=1e-6)


def test_convit_gating_is_not_reported() -> None:
    """timm's ConViT: no channel maps (its 10 GPSA blocks' gating sigmoids were 20 of them), logits bit-identical."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("convit_tiny", pretrained=False).eval()
    rec, runs, _ = _record(model, torch.randn(1, 3, 224, 224))
    for maps in runs:
        assert not [m for m in maps if m.kind == "channel"]
    gating = [n for n, _, why in rec.skipped if n.endswith(".attn.sigmoid()") and why.startswith("a constant")]
    assert len(gating) == 20  # two sigmoid calls in each of the 10 GPSA blocks
