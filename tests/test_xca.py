"""Cross-covariance attention (XCiT, El-Nouby et al., NeurIPS 2021): each head's d x d softmax over channels,
softmax(q̂ k̂ᵀ · τ) with q, k L2-normalised over the tokens, read as ``channel_pairwise`` (B, C, C): the block-diagonal
matrix it acts as on the C = heads·d channels (zeros between heads)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnviz.capture.recorder import AttentionRecorder
from tests.blockutil import module_inputs

timm = pytest.importorskip("timm")


def _reference(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Each XCA's weights written out from its input, as the block-diagonal (B, C, C)."""
    inputs = module_inputs(model, [b.attn for b in model.blocks], x)
    out = []
    with torch.no_grad():
        for block, t in zip(model.blocks, inputs, strict=True):
            a = block.attn
            b, n, c = t.shape
            h = a.num_heads
            d = c // h
            qkv = a.qkv(t).reshape(b, n, 3, h, d).permute(2, 0, 3, 4, 1)  # (3, B, heads, d, N)
            q, k = F.normalize(qkv[0], dim=-1), F.normalize(qkv[1], dim=-1)
            attn = ((q @ k.transpose(-2, -1)) * a.temperature).softmax(-1)  # (B, heads, d, d)
            full = torch.zeros(b, c, c)
            for i in range(h):
                full[:, i * d : (i + 1) * d, i * d : (i + 1) * d] = attn[:, i]
            out.append(full)
    return out


def test_xca_is_block_diagonal_channel_pairwise() -> None:
    torch.manual_seed(0)
    model = timm.create_model("xcit_nano_12_p16_224", pretrained=False, depth=3).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        bare = model(x)
        for _ in range(2):  # the discovery pass, then the cached sites' hooks
            with AttentionRecorder(model) as rec:
                out = model(x)
            assert torch.equal(out, bare)
            assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
            xca = [m for m in rec.maps if m.name.startswith("blocks.")]
            assert [m.kind for m in xca] == ["channel_pairwise"] * 3, rec.unclassified
            for m, ref in zip(xca, _reference(model, x), strict=True):
                assert tuple(m.data.shape) == (2, 128, 128) and "block-diagonal" in m.layout
                torch.testing.assert_close(m.data, ref, rtol=0, atol=1e-6)
                torch.testing.assert_close(m.data.sum(-1), torch.ones(2, 128), rtol=0, atol=1e-5)
            # its class-attention blocks: token maps whose one query is the class token
            cls = [m for m in rec.maps if m.name.startswith("cls_attn_blocks.")]
            assert [m.kind for m in cls] == ["token", "token"] and all(m.data.shape[-2] == 1 for m in cls)


class TokenAttention(nn.Module):
    """Plain multi-head attention over N tokens (B, N, C) whose N x N softmax has heads·N = C: token attention, not
    cross-covariance (LeViT's last stage: 16 tokens, 8 heads, C = 128)."""

    def __init__(self, c: int = 128, heads: int = 8) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(c, 3 * c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, N, d)
        attn = (q @ k.transpose(-2, -1)).softmax(-1)  # (B, heads, N, N)
        return (attn @ v).transpose(1, 2).reshape(b, n, c)


class Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3 * 8 * 8, 128)  # patches cut in forward: no feature map (B, C, H, W) to refer to
        self.attn = TokenAttention()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = F.unfold(x, 8, stride=8).transpose(1, 2)  # (B, N, 3·8·8)
        return self.attn(self.embed(patches)).mean(1)


def test_token_softmax_with_heads_times_n_equal_c_is_not_cross_covariance() -> None:
    torch.manual_seed(0)
    model = Tokens().eval()
    with torch.no_grad(), AttentionRecorder(model) as rec:
        model(torch.randn(2, 3, 32, 32))  # a 4 x 4 grid: N = 16, 8 heads, C = 128 = 8 * 16
    assert not [m for m in rec.maps if m.kind == "channel_pairwise"]
    # no feature map shows its 4 x 4 grid: it is read from the shapes (tests/test_pooled.py), as token attention
    assert [(m.name, m.kind, m.size, tuple(m.data.shape)) for m in rec.maps] == [
        ("attn.softmax()", "token", (4, 4), (2, 1, 16, 16))
    ]
    assert "grid read from the shapes" in rec.maps[0].layout and not rec.unclassified
