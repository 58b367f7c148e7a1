"""Numerical parity between attnviz's blocks and timm's modules, given the same (random) weights.

Every weight and every BatchNorm running statistic is randomised (so an identity BN or a zero bias cannot hide a
mismatch), the modules run in eval mode on non-square inputs, in float32 and float64, for several channel counts.
Each comparison is guarded so a wrong implementation fails: the output must differ from the input, the gates must
not be constant, and perturbing any single tensor of timm's state must move timm's output well past the tolerance
(so every weight takes part in the comparison).

The largest absolute difference seen per module and dtype is kept in :data:`MAX_ABS_DIFF`; the last test writes it
as JSON to the path in ``ATTNVIZ_PARITY_REPORT`` when that variable is set.
"""

from __future__ import annotations

import copy
import json
import math
import os

import pytest
import torch
from torch import Tensor, nn

import attnviz

timm_layers = pytest.importorskip("timm.layers")
SEModule = timm_layers.SEModule
EcaModule = timm_layers.EcaModule
TimmSelectiveKernel = timm_layers.SelectiveKernel
CbamModule = pytest.importorskip("timm.layers.cbam").CbamModule  # not re-exported by timm.layers
CoordAttn = pytest.importorskip("timm.layers.coord_attn").CoordAttn

#: module -> dtype name -> largest |ours - timm| seen over every case run.
MAX_ABS_DIFF: dict[str, dict[str, float]] = {}

DTYPES = [torch.float32, torch.float64]
ATOL = {torch.float32: 1e-5, torch.float64: 1e-6}
BATCH, HEIGHT, WIDTH = 2, 11, 7  # non-square on purpose: a transposed H/W shows up


# -- helpers -------------------------------------------------------------------------------------------------------
def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _record(module: str, dtype: torch.dtype, diff: float) -> None:
    per_dtype = MAX_ABS_DIFF.setdefault(module, {})
    key = _dtype_name(dtype)
    per_dtype[key] = max(per_dtype.get(key, 0.0), diff)


def _max_abs_diff(a: Tensor, b: Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def _generator(*seed_parts: int) -> torch.Generator:
    seed = 0
    for part in seed_parts:
        seed = (seed * 1_000_003 + int(part)) % (2**31)
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def _randomise(module: nn.Module, gen: torch.Generator) -> nn.Module:
    """Random weights, biases and BN running statistics (nothing left at its identity-like default)."""
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            n = sub.num_features
            sub.weight.copy_(torch.rand(n, generator=gen) + 0.5)
            sub.bias.copy_(torch.randn(n, generator=gen) * 0.3)
            sub.running_mean.copy_(torch.randn(n, generator=gen) * 0.3)
            sub.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            sub.num_batches_tracked.fill_(7)
        elif isinstance(sub, nn.modules.conv._ConvNd):
            fan_in = sub.weight[0].numel()
            sub.weight.copy_(torch.randn(sub.weight.shape, generator=gen) * (1.5 / math.sqrt(fan_in)))
            if sub.bias is not None:
                sub.bias.copy_(torch.randn(sub.bias.shape, generator=gen) * 0.3)
        else:
            own = list(sub.parameters(recurse=False))
            assert not own, f"unexpected parameters in {type(sub).__name__}: randomise them too"
    return module


def _prepare(ours: nn.Module, theirs: nn.Module, dtype: torch.dtype, key_map=None) -> None:
    """Load ours' state into theirs (strictly, through ``key_map``), cast both to ``dtype``, eval mode."""
    state = ours.state_dict()
    if key_map is not None:
        state = {key_map(k): v for k, v in state.items()}
    theirs.load_state_dict(state, strict=True)
    ours.to(dtype).eval()
    theirs.to(dtype).eval()
    mine, other = ours.state_dict(), theirs.state_dict()
    for k, v in mine.items():
        assert torch.equal(v, other[key_map(k) if key_map else k]), k


def _input(dtype: torch.dtype, channels: int, gen: torch.Generator) -> Tensor:
    return (torch.randn(BATCH, channels, HEIGHT, WIDTH, generator=gen) * 1.5 + 0.2).to(dtype)


def _assert_not_identity(out: Tensor, x: Tensor) -> None:
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    assert _max_abs_diff(out, x) > 1e-2, "the block returned (almost) its input: the test would be vacuous"


@torch.no_grad()
def _assert_every_tensor_matters(theirs: nn.Module, x: Tensor, out: Tensor, atol: float) -> None:
    """Perturbing any one float tensor of theirs' state moves its output far past ``atol``.

    So no weight (or running statistic) can be ignored, mis-mapped or mis-used by ours without failing parity.
    """
    for key, value in theirs.state_dict().items():
        if not value.is_floating_point():
            continue
        other = copy.deepcopy(theirs)
        other.state_dict()[key].mul_(1.5).add_(0.1)  # keeps a running_var positive
        moved = _max_abs_diff(other(x.clone()), out)
        assert moved > 100 * atol, f"timm's output barely depends on {key!r} ({moved:.2e}): weak test"


def _compare(name: str, ours: nn.Module, theirs: nn.Module, x: Tensor, dtype: torch.dtype) -> Tensor:
    """Run both (each on its own copy of x: in-place ops must not leak), assert parity, record the diff."""
    with torch.no_grad():
        out_ours = ours(x.clone())
        out_theirs = theirs(x.clone())
    assert out_ours.dtype == dtype
    assert out_ours.shape == out_theirs.shape
    diff = _max_abs_diff(out_ours, out_theirs)
    _record(name, dtype, diff)
    torch.testing.assert_close(out_ours, out_theirs, atol=ATOL[dtype], rtol=0)
    return out_theirs


# -- SE ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_name)
@pytest.mark.parametrize(("channels", "hidden"), [(16, 4), (64, 16), (256, 8), (2048, 128)])
def test_se_matches_timm(channels: int, hidden: int, dtype: torch.dtype) -> None:
    gen = _generator(1, channels, hidden)
    ours = _randomise(attnviz.create_attention("se", channels, hidden=hidden), gen)
    theirs = SEModule(channels, rd_channels=hidden)
    assert set(ours.state_dict()) == set(theirs.state_dict())  # fc1/fc2 names match timm's
    _prepare(ours, theirs, dtype)
    x = _input(dtype, channels, gen)
    out = _compare("se", ours, theirs, x, dtype)
    _assert_not_identity(out, x)
    gate = out / x
    assert gate.flatten(2).std(-1).max() < 1e-6, "SE's gate is one number per channel"
    assert gate[:, :, 0, 0].std() > 1e-2, "SE's gate must vary across channels"
    _assert_every_tensor_matters(theirs, x, out, ATOL[dtype])


# -- ECA -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [16, 64, 100, 256, 512, 1000, 2048])
def test_eca_kernel_size_matches_timm(channels: int) -> None:
    ours = attnviz.create_attention("eca", channels)
    theirs = EcaModule(channels=channels)
    assert ours.kernel_size == theirs.conv.kernel_size[0] == attnviz.blocks.eca_kernel_size(channels)
    assert ours.conv.weight.shape == theirs.conv.weight.shape
    assert ours.conv.padding == theirs.conv.padding


def test_eca_kernel_size_formula_matches_timm_for_every_channel_count() -> None:
    for channels in range(1, 8193):
        t = int(abs(math.log(channels, 2) + 1) / 2)  # timm's (and the authors') expression
        assert attnviz.blocks.eca_kernel_size(channels) == max(t if t % 2 else t + 1, 3), channels
    # the paper's table: k grows with C, odd, at least 3
    assert [attnviz.blocks.eca_kernel_size(c) for c in (64, 256, 512, 2048)] == [3, 5, 5, 7]


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_name)
@pytest.mark.parametrize("channels", [64, 256, 512, 2048])
def test_eca_matches_timm(channels: int, dtype: torch.dtype) -> None:
    gen = _generator(2, channels)
    ours = _randomise(attnviz.create_attention("eca", channels), gen)
    theirs = EcaModule(channels=channels)
    _prepare(ours, theirs, dtype)
    x = _input(dtype, channels, gen)
    out = _compare("eca", ours, theirs, x, dtype)
    _assert_not_identity(out, x)
    gate = (out / x)[:, :, 0, 0]
    assert gate.std() > 1e-2, "ECA's gate must vary across channels"
    _assert_every_tensor_matters(theirs, x, out, ATOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_name)
def test_eca_zero_padding_at_channel_ends(dtype: torch.dtype) -> None:
    """Zero (not circular) padding: the first channel's gate ignores the last channels (timm's EcaModule, not
    CecaModule); checked by perturbing the last channel only."""
    channels = 256
    gen = _generator(3, channels)
    ours = _randomise(attnviz.create_attention("eca", channels), gen).to(dtype).eval()
    x = _input(dtype, channels, gen)
    y = x.clone()
    y[:, -1] += 5.0
    with torch.no_grad():
        g_x, g_y = ours(x) / x, ours(y) / y
    k = ours.kernel_size
    torch.testing.assert_close(g_x[:, : channels - k // 2 - 1], g_y[:, : channels - k // 2 - 1], atol=0, rtol=0)
    assert _max_abs_diff(g_x[:, -1], g_y[:, -1]) > 1e-3


# -- CBAM ----------------------------------------------------------------------------------------------------------
def _spatial_key_to_timm(key: str) -> str:
    """Ours ``conv.*`` / ``bn.*`` -> timm's SpatialAttn, a ConvNormAct: ``conv.conv.*`` / ``conv.bn.*``."""
    if key.startswith(("conv.", "bn.")):
        return "conv." + key
    raise AssertionError(f"unexpected key in the spatial module: {key!r}")


def _cbam_key_to_timm(key: str) -> str:
    """Ours ``spatial.conv.*`` / ``spatial.bn.*`` -> timm's ``spatial.conv.conv.*`` / ``spatial.conv.bn.*``."""
    if key.startswith("spatial."):
        return "spatial." + _spatial_key_to_timm(key.removeprefix("spatial."))
    return key


def test_cbam_key_map_is_a_bijection() -> None:
    ours = attnviz.create_attention("cbam", 64, hidden=8)
    theirs = CbamModule(64, rd_channels=8)
    mapped = [_cbam_key_to_timm(k) for k in ours.state_dict()]
    assert sorted(mapped) == sorted(theirs.state_dict())
    assert len(set(mapped)) == len(mapped)
    assert "spatial.conv.conv.weight" in mapped and "spatial.conv.bn.running_var" in mapped


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_name)
@pytest.mark.parametrize(("channels", "hidden"), [(16, 4), (64, 8), (256, 16), (512, 32)])
def test_cbam_matches_timm(channels: int, hidden: int, dtype: torch.dtype) -> None:
    gen = _generator(4, channels, hidden)
    ours = _randomise(attnviz.create_attention("cbam", channels, hidden=hidden), gen)
    theirs = CbamModule(channels, rd_channels=hidden)
    _prepare(ours, theirs, dtype, key_map=_cbam_key_to_timm)
    x = _input(dtype, channels, gen)
    out = _compare("cbam", ours, theirs, x, dtype)
    _assert_not_identity(out, x)
    # the spatial gate must vary over positions (else a transposed or constant map would pass)
    with torch.no_grad():
        after_channel = ours.channel(x.clone())
        spatial_gate = (ours.spatial(after_channel.clone()) / after_channel)[:, 0]
        # the parts agree with timm's parts too
        torch.testing.assert_close(after_channel, theirs.channel(x.clone()), atol=ATOL[dtype], rtol=0)
    assert spatial_gate.std() > 1e-2
    _assert_every_tensor_matters(theirs, x, out, ATOL[dtype])


class _MaxFirstSpatialAttention(nn.Module):
    """Reference spatial attention as in the CBAM authors' code: ``cat([max_c; mean_c])``, conv 2->1 k=7
    (no bias), BatchNorm, sigmoid; out = x * gate."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: Tensor) -> Tensor:
        desc = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.bn(self.conv(desc)))


def _swap_input_channels(state: dict[str, Tensor]) -> dict[str, Tensor]:
    state = dict(state)
    state["conv.weight"] = state["conv.weight"][:, [1, 0]].clone()
    return state


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_name)
@pytest.mark.parametrize("channels", [16, 64, 256])
@pytest.mark.parametrize("which", ["spatial", "cbam.spatial"])
def test_cbam_concat_order_both_ways(which: str, channels: int, dtype: torch.dtype) -> None:
    """Ours ([mean; max]) == the authors' max-first module with the conv's two input channels swapped; without the
    swap they differ (so this test can fail)."""
    gen = _generator(5, channels, len(which))
    reference = _randomise(_MaxFirstSpatialAttention(), gen)
    if which == "spatial":
        ours = attnviz.create_attention("spatial", channels)
    else:
        ours = attnviz.create_attention("cbam", channels, hidden=8).spatial
    assert set(ours.state_dict()) == set(reference.state_dict())

    ours.load_state_dict(_swap_input_channels(reference.state_dict()), strict=True)
    ours.to(dtype).eval()
    reference.to(dtype).eval()
    x = _input(dtype, channels, gen)
    with torch.no_grad():
        out_ref = reference(x.clone())
        out_swapped = ours(x.clone())
    _assert_not_identity(out_ref, x)
    diff = _max_abs_diff(out_swapped, out_ref)
    _record("cbam_concat_order_swapped", dtype, diff)
    torch.testing.assert_close(out_swapped, out_ref, atol=ATOL[dtype], rtol=0)

    # without the swap: same weights, different module
    ours.load_state_dict(reference.state_dict(), strict=True)
    with torch.no_grad():
        out_unswapped = ours(x.clone())
    assert _max_abs_diff(out_unswapped, out_ref) > 1e3 * ATOL[dtype], "the concat order must matter"

    # and timm (paper order) agrees with ours, not with the authors' order, for the same unswapped weights
    timm_spatial = CbamModule(channels, rd_channels=4).spatial
    timm_spatial.load_state_dict({_spatial_key_to_timm(k): v for k, v in ours.state_dict().items()}, strict=True)
    timm_spatial.to(dtype).eval()
    with torch.no_grad():
        out_timm = timm_spatial(x.clone())
    torch.testing.assert_close(out_unswapped, out_timm, atol=ATOL[dtype], rtol=0)


# -- SK ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_name)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize(("channels", "hidden", "groups"), [(32, 8, 1), (64, 32, 8), (128, 16, 32), (256, 32, 32)])
def test_sk_matches_timm(channels: int, hidden: int, groups: int, stride: int, dtype: torch.dtype) -> None:
    gen = _generator(6, channels, hidden, groups, stride)
    ours = _randomise(
        attnviz.create_attention("sk", channels, hidden=hidden, groups=groups, stride=stride),
        gen,
    )
    theirs = TimmSelectiveKernel(
        channels,
        channels,
        stride=stride,
        split_input=False,
        keep_3x3=True,
        groups=groups,
        rd_channels=hidden,
    )
    assert list(ours.state_dict()) == list(theirs.state_dict())  # keys match directly, in order
    for mine, other in zip(ours.paths, theirs.paths, strict=True):
        assert mine.conv.groups == other.conv.groups == groups
        assert mine.conv.dilation == other.conv.dilation
        assert mine.conv.padding == other.conv.padding
    _prepare(ours, theirs, dtype)
    x = _input(dtype, channels, gen)

    captured: list[Tensor] = []
    handle = theirs.attn.register_forward_hook(lambda mod, args, out: captured.append(out.detach().clone()))
    try:
        with attnviz.AttentionRecorder(ours, kinds=["branch"]) as rec:
            out = _compare("sk", ours, theirs, x, dtype)
    finally:
        handle.remove()

    h_out, w_out = (HEIGHT - 1) // stride + 1, (WIDTH - 1) // stride + 1
    assert out.shape == (BATCH, channels, h_out, w_out)
    assert out.abs().max() > 1e-2

    maps = rec.maps
    assert len(maps) == 1 and len(captured) == 1
    ours_branch = maps[0].data  # (B, K, C), float32 copy
    theirs_branch = captured[0]  # (B, K, C, 1, 1)
    assert maps[0].kind == "branch"
    assert ours_branch.shape == (BATCH, 2, channels)
    assert theirs_branch.shape == (BATCH, 2, channels, 1, 1)
    theirs_branch = theirs_branch.flatten(2)
    diff = _max_abs_diff(ours_branch, theirs_branch)
    _record("sk_branch_weights", dtype, diff)
    torch.testing.assert_close(ours_branch.double(), theirs_branch.double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(ours_branch.sum(1), torch.ones(BATCH, channels), atol=1e-6, rtol=0)
    assert (ours_branch - 0.5).abs().max() > 1e-2, "branch weights stuck at 1/K: a vacuous comparison"

    _assert_every_tensor_matters(theirs, x, out, ATOL[dtype])


# -- Coordinate attention ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_name)
@pytest.mark.parametrize("channels", [16, 64, 256, 512, 1024])
def test_coord_matches_timm(channels: int, dtype: torch.dtype) -> None:
    gen = _generator(7, channels)
    ours = _randomise(attnviz.create_attention("coord", channels), gen)
    mid = ours.conv1.out_channels
    assert mid == max(8, channels // 32)  # the authors' width
    theirs = CoordAttn(channels, rd_channels=mid, bias=True)
    assert isinstance(theirs.act, nn.Hardswish) and isinstance(ours.act, nn.Hardswish)
    _prepare(ours, theirs, dtype)
    x = _input(dtype, channels, gen)
    out = _compare("coord", ours, theirs, x, dtype)
    _assert_not_identity(out, x)
    gate = out / x  # (B, C, H, W) = g_h * g_w, separable but varying along both axes
    assert gate.std(dim=2).max() > 1e-2, "the gate must vary along H"
    assert gate.std(dim=3).max() > 1e-2, "the gate must vary along W"
    _assert_every_tensor_matters(theirs, x, out, ATOL[dtype])


# -- report --------------------------------------------------------------------------------------------------------
def test_write_parity_report() -> None:
    """Last test: the recorded differences are finite and within tolerance; written as JSON if asked."""
    for module, per_dtype in MAX_ABS_DIFF.items():
        for dtype_name, diff in per_dtype.items():
            assert math.isfinite(diff), (module, dtype_name)
            assert diff <= ATOL[getattr(torch, dtype_name)], (module, dtype_name, diff)
    path = os.environ.get("ATTNVIZ_PARITY_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(MAX_ABS_DIFF, fh, indent=2, sort_keys=True)
            fh.write("\n")
