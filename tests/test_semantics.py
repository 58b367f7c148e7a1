"""Meaning, not just shapes: each block's weights obey its paper's equations and invariances."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import attnviz
from attnviz.blocks import eca_kernel_size, get_attention
from tests.blockutil import capture, randomise

NAMES = attnviz.list_attentions()


@pytest.mark.parametrize("name", NAMES)
def test_kinds_match_registry_and_ranges(name: str) -> None:
    spec = get_attention(name)
    block = randomise(attnviz.create_attention(name, 32))
    _, maps = capture(block, torch.randn(2, 32, 6, 7).relu())
    assert tuple(m.kind for m in maps) == spec.kinds
    for m in maps:
        d = m.data
        assert d.dtype == torch.float32 and d.device.type == "cpu"
        if m.kind in ("channel", "spatial"):  # sigmoid gates lie strictly in (0, 1)
            assert d.min() > 0 and d.max() < 1
        elif m.kind == "branch":  # softmax over branches, per channel
            torch.testing.assert_close(d.sum(1), torch.ones(d.shape[0], d.shape[2]))
        elif m.kind in ("pairwise", "channel_pairwise"):  # every attention row sums to 1
            torch.testing.assert_close(d.sum(-1), torch.ones(d.shape[:-1]))
        elif m.kind == "memory":  # weights over the S units sum to 1 at each position (l1 over S)
            torch.testing.assert_close(d.sum(1), torch.ones(d.shape[0], *d.shape[2:]))


@pytest.mark.parametrize("name", ["se", "channel", "eca"])
def test_pooled_channel_gates_ignore_spatial_order(name: str) -> None:
    block = randomise(attnviz.create_attention(name, 32))
    x = torch.randn(2, 32, 5, 6)
    perm = torch.randperm(30)
    xp = x.flatten(2)[:, :, perm].view_as(x)
    _, (a,) = capture(block, x)
    _, (b,) = capture(block, xp)
    torch.testing.assert_close(a.data, b.data)


def test_coordinate_attention_is_position_aware() -> None:
    # The counterpart of the test above: coordinate attention must *not* ignore where things are.
    block = randomise(attnviz.create_attention("coord", 32))
    x = torch.randn(1, 32, 6, 6)
    _, (a,) = capture(block, x)
    _, (b,) = capture(block, torch.flip(x, dims=[3]))
    torch.testing.assert_close(torch.flip(b.data, dims=[2]), a.data)  # flipping the input flips the map
    assert not torch.allclose(a.data, b.data)


@pytest.mark.parametrize(("channels", "k"), [(16, 3), (64, 3), (256, 5), (512, 5), (1024, 5), (2048, 7)])
def test_eca_kernel_from_paper_formula(channels: int, k: int) -> None:
    t = int(abs((math.log2(channels) + 1) / 2))
    assert eca_kernel_size(channels) == k == max(t if t % 2 else t + 1, 3)
    block = attnviz.create_attention("eca", channels)
    assert block.conv.weight.shape == (1, 1, k) and block.conv.padding == ((k - 1) // 2,) and block.conv.bias is None


def test_eca_gate_is_local_across_channels() -> None:
    c = 256
    block = randomise(attnviz.create_attention("eca", c), scale=1.0)
    k = block.kernel_size

    def gate(pooled: torch.Tensor) -> torch.Tensor:  # (C,) pooled values -> (C,) gate
        x = pooled.view(1, c, 1, 1).expand(1, c, 3, 4)
        return torch.sigmoid(block.conv(x.mean((2, 3)).view(1, 1, c))).view(c)

    jac = torch.autograd.functional.jacobian(gate, torch.randn(c))  # (C, C): d gate_i / d pooled_j
    i, j = torch.meshgrid(torch.arange(c), torch.arange(c), indexing="ij")
    inside = (i - j).abs() <= k // 2
    assert jac[~inside].abs().max() == 0
    assert (jac[inside].abs() > 0).float().mean() > 0.99
    # and through the real block: changing a channel far away leaves gate i unchanged
    x = torch.randn(1, c, 4, 4)
    _, (a,) = capture(block, x)
    x2 = x.clone()
    x2[:, 100 + k // 2 + 1 :] += 5.0
    _, (b,) = capture(block, x2)
    torch.testing.assert_close(a.data[:, :101], b.data[:, :101])
    assert not torch.allclose(a.data[:, 101 + k // 2 :], b.data[:, 101 + k // 2 :])


def test_cbam_channel_pools_max_over_space_not_channels() -> None:
    block = randomise(attnviz.create_attention("channel", 32, hidden=4))
    x = torch.randn(2, 32, 5, 7)
    _, (m,) = capture(block, x)
    mlp = lambda v: block.fc2(F.relu(block.fc1(v)))  # noqa: E731
    ref = torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True))).view(2, 32)
    torch.testing.assert_close(m.data, ref.detach())


def test_cbam_spatial_equation() -> None:
    block = randomise(attnviz.create_attention("spatial", 32, norm=False))
    x = torch.randn(2, 32, 9, 6)
    y, (m,) = capture(block, x)
    desc = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
    ref = torch.sigmoid(F.conv2d(desc, block.conv.weight, block.conv.bias, padding=3))
    torch.testing.assert_close(m.data, ref[:, 0].detach())
    torch.testing.assert_close(y, x * ref)


def test_cbam_is_channel_then_spatial() -> None:
    block = randomise(attnviz.create_attention("cbam", 32))
    x = torch.randn(2, 32, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(block(x), block.spatial(block.channel(x)))


def test_sk_branch_weights_and_fusion() -> None:
    block = randomise(attnviz.create_attention("sk", 64))
    x = torch.randn(1, 64, 7, 9)  # batch 1: a softmax over the wrong dim gives all ones (blog bug 7)
    y, (m,) = capture(block, x)
    assert m.data.shape == (1, 2, 64)
    assert m.data.min() > 0 and m.data.max() < 1
    with torch.no_grad():
        u = torch.stack([p(x) for p in block.paths], 1)
        torch.testing.assert_close(y, (u * m.data.view(1, 2, 64, 1, 1)).sum(1))
    assert block.paths[1].conv.dilation == (2, 2) and block.paths[0].conv.groups == 32


def test_da_position_map_permutes_with_input() -> None:
    block = randomise(attnviz.create_attention("da", 32))
    x = torch.randn(1, 32, 4, 5)
    perm = torch.randperm(20)
    xp = x.flatten(2)[:, :, perm].view_as(x)
    y, (pa, ca) = capture(block, x)
    yp, (pb, cb) = capture(block, xp)
    torch.testing.assert_close(pb.data[0, 0], pa.data[0, 0][perm][:, perm])
    torch.testing.assert_close(cb.data, ca.data)  # channel affinity ignores spatial order
    torch.testing.assert_close(yp.flatten(2), y.flatten(2)[:, :, perm])


def test_da_equations_and_identity_at_init() -> None:
    fresh = attnviz.create_attention("da", 16).eval()
    x = torch.randn(2, 16, 3, 5)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), x)  # alpha = beta = 0
    block = randomise(attnviz.create_attention("da", 16))
    y, (p, c) = capture(block, x)
    with torch.no_grad():
        pos = block.position
        q, k, v = pos.query(x).flatten(2), pos.key(x).flatten(2), pos.value(x).flatten(2)
        s = torch.softmax(torch.einsum("bci,bcj->bij", q, k), -1)  # S_ij = softmax_j(q_i . k_j)
        e_pos = pos.alpha * torch.einsum("bcj,bij->bci", v, s)  # E_i = alpha sum_j S_ij V_j
        a = x.flatten(2)
        xc = torch.softmax(a @ a.transpose(1, 2), -1)  # no max-subtraction trick, no scaling
        e_chan = block.channel.beta * (xc @ a)
        torch.testing.assert_close(p.data[:, 0], s)
        torch.testing.assert_close(c.data, xc)
        torch.testing.assert_close(y, (a + e_pos + e_chan).view_as(x))


def test_epsa_equations_in_scale_order() -> None:
    block = randomise(attnviz.create_attention("epsa", 64))
    x = torch.randn(2, 64, 7, 6)
    y, (m,) = capture(block, x)
    with torch.no_grad():
        feats = [conv(x) for conv in block.convs]
        assert [conv.kernel_size[0] for conv in block.convs] == [3, 5, 7, 9]
        assert [conv.groups for conv in block.convs] == [1, 4, 8, 16]
        z = torch.stack([block.se(f) for f in feats], 1)  # (B, S, C/S, 1, 1)
        att = torch.softmax(z, 1)
        ref = torch.cat([feats[i] * att[:, i] for i in range(4)], 1)  # concatenated in order, not reversed
    torch.testing.assert_close(m.data, att.flatten(2))
    torch.testing.assert_close(y, ref)


def test_external_attention_equations() -> None:
    block = randomise(attnviz.create_attention("ea", 32, memory=8))
    x = torch.randn(2, 32, 4, 3)
    y, (m,) = capture(block, x)
    with torch.no_grad():
        f = block.conv1(x).flatten(2)  # (B, d, N)
        a = torch.einsum("sd,bdn->bsn", block.mk.weight[:, :, 0], f)
        a = torch.softmax(a, -1)  # over N
        a = a / (1e-9 + a.sum(1, keepdim=True))  # over S
        out = torch.einsum("ds,bsn->bdn", block.mv.weight[:, :, 0], a).view(2, -1, 4, 3)
        ref = F.relu(block.bn(block.conv2(out)) + x)
    torch.testing.assert_close(m.data, a.view(2, 8, 4, 3))
    torch.testing.assert_close(y, ref)
    fresh = attnviz.create_attention("ea", 32).eval()
    with torch.no_grad():
        xr = x.relu()
        torch.testing.assert_close(fresh(xr), xr)  # zero last-BN gain: identity on a stage's ReLU output


def test_mhsa_relative_position_equation() -> None:
    block = randomise(attnviz.create_attention("mhsa", 16, heads=2, rel_extent=3))
    h, w, d, ext = 3, 5, 8, 3  # w = 5 > rel_extent: offsets beyond +-2 share the outermost embedding
    x = torch.randn(1, 16, h, w)
    y, (m,) = capture(block, x)
    with torch.no_grad():
        q, k, v = block.qkv(x).view(1, 3, 2, d, h * w).unbind(1)
        logits = torch.empty(2, h * w, h * w)
        for head in range(2):
            for i in range(h * w):
                for j in range(h * w):
                    yi, xi, yj, xj = i // w, i % w, j // w, j % w
                    rh = block.rel_h[max(-(ext - 1), min(ext - 1, yj - yi)) + ext - 1]
                    rw = block.rel_w[max(-(ext - 1), min(ext - 1, xj - xi)) + ext - 1]
                    qi = q[0, head, :, i]
                    logits[head, i, j] = qi @ k[0, head, :, j] / math.sqrt(d) + qi @ (rh + rw)
        attn = torch.softmax(logits, -1)
        ref = torch.einsum("hdj,hij->hdi", v[0], attn).reshape(1, 16, h, w)
    assert m.size == (h, w) and m.data.shape == (1, 2, h * w, h * w)
    torch.testing.assert_close(m.data[0], attn)
    torch.testing.assert_close(y, ref)


def test_mhsa_has_no_mask_and_no_dropout_in_train_mode() -> None:
    block = attnviz.create_attention("mhsa", 32).train()
    with attnviz.AttentionRecorder(block) as rec:
        block(torch.randn(2, 32, 4, 4))
    (m,) = rec.maps
    assert torch.isfinite(m.data).all()
    torch.testing.assert_close(m.data.sum(-1), torch.ones(2, 4, 16))


def test_simam_equation() -> None:
    block = attnviz.create_attention("simam", 8)
    x = torch.randn(2, 8, 5, 4)
    y, (m,) = capture(block, x)
    mu = x.mean((2, 3), keepdim=True)
    var = ((x - mu) ** 2).sum((2, 3), keepdim=True) / (20 - 1)
    e = (x - mu) ** 2 / (4 * (var + 1e-4)) + 0.5
    torch.testing.assert_close(y, x * torch.sigmoid(e))
    torch.testing.assert_close(m.data, torch.sigmoid(e).mean(1))
    # a 1x1 map: no division by zero (H W - 1 = 0)
    y1 = block(torch.randn(2, 8, 1, 1))
    assert torch.isfinite(y1).all()


def test_coordinate_attention_equation() -> None:
    block = randomise(attnviz.create_attention("coord", 32))
    x = torch.randn(2, 32, 5, 7)
    y, (m,) = capture(block, x)
    with torch.no_grad():
        z = torch.cat([x.mean(3, keepdim=True), x.mean(2, keepdim=True).transpose(2, 3)], 2)
        z = block.act(block.bn1(block.conv1(z)))
        gh = torch.sigmoid(block.conv_h(z[:, :, :5]))  # (B, C, H, 1)
        gw = torch.sigmoid(block.conv_w(z[:, :, 5:].transpose(2, 3)))  # (B, C, 1, W)
    assert block.conv1.out_channels == 8  # max(8, C // 32)
    torch.testing.assert_close(y, x * gh * gw)
    torch.testing.assert_close(m.data, (gh * gw).mean(1))
