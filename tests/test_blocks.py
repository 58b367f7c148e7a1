"""Every registered block: shapes, finiteness, gradients, autocast, argument errors (parametrised over the registry)."""

from __future__ import annotations

import pytest
import torch

import attnviz
from attnviz.blocks import get_attention

NAMES = attnviz.list_attentions()
# (C, H, W): square, non-square, odd, tiny; every C divisible by 4 (EPSA scales, MHSA heads).
SHAPES = [(64, 8, 8), (32, 7, 11), (128, 5, 3), (16, 1, 1), (8, 13, 9)]


def test_registry_lists_every_block() -> None:
    expected = ["se", "channel", "spatial", "cbam", "cbam_sc", "eca", "eca_max", "sk", "sk_pre", "da", "epsa"]
    assert [*expected, "epsa_pre", "ea", "mhsa", "coord", "simam"] == NAMES
    for name in NAMES:
        spec = get_attention(name)
        assert spec.name == name and spec.kinds and spec.placement in attnviz.blocks.PLACEMENTS


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown attention 'nope'.*se, channel, spatial, cbam"):
        attnviz.create_attention("nope", 64)


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        attnviz.blocks.register_attention("se", placement="post", kinds=("channel",), paper="x")(torch.nn.Identity)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_channels_raise_value_error(name: str, bad: object) -> None:
    with pytest.raises(ValueError, match="channels must be a positive integer"):
        attnviz.create_attention(name, bad)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("spatial", {"kernel_size": 4}, "kernel_size must be a positive odd integer"),
        ("cbam", {"kernel_size": 0}, "kernel_size must be a positive odd integer"),
        ("eca", {"kernel_size": 2}, "kernel_size must be a positive odd integer"),
        ("epsa", {"kernels": (3, 4, 7, 9)}, "kernels must be a positive odd integer"),
        ("se", {"reduction": 0}, "reduction must be a positive integer"),
        ("ea", {"memory": 0}, "memory must be a positive integer"),
        ("sk", {"stride": 3}, "stride must be 1 or 2"),
        ("simam", {"lam": 0.0}, "lam must be > 0"),
    ],
)
def test_bad_arguments_say_what_to_change(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        attnviz.create_attention(name, 64, **kwargs)


@pytest.mark.parametrize(("name", "channels"), [("epsa", 30), ("mhsa", 30)])
def test_unsplittable_channels_suggest_a_fix(name: str, channels: int) -> None:
    with pytest.raises(ValueError, match=r"cannot be split .* use a multiple of 4 such as 28 or 32"):
        attnviz.create_attention(name, channels)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_shape_preserved_and_finite(name: str, shape: tuple[int, int, int], device: torch.device) -> None:
    block = attnviz.create_attention(name, shape[0]).to(device).eval()
    x = torch.randn(2, *shape, device=device)
    with torch.no_grad():
        y = block(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", [n for n in NAMES if get_attention(n).placement == "conv"])
def test_conv_blocks_carry_stride(name: str) -> None:
    block = attnviz.create_attention(name, 32, stride=2).eval()
    for h, w in [(14, 14), (13, 7)]:
        y = block(torch.randn(1, 32, h, w))
        # the same output size as the 3x3 stride-2 convolution it replaces
        ref = torch.nn.Conv2d(32, 32, 3, 2, 1)(torch.randn(1, 32, h, w))
        assert y.shape == ref.shape


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_a_gradient(name: str, device: torch.device) -> None:
    block = attnviz.create_attention(name, 32).to(device).train()
    # Zero-initialised gains (DA's alpha/beta, EA's last BN weight) block the gradient to everything before
    # them at initialisation, by design; perturb every parameter so each one's gradient must flow.
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(3, 32, 6, 5, device=device, requires_grad=True)
    block(x).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in block.named_parameters():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{name}.{pname} has an all-zero gradient"


AUTOCAST_CASES = [
    ("cpu", torch.bfloat16),
    ("cpu", torch.float16),
    *(pytest.param("cuda", dtype, marks=pytest.mark.cuda) for dtype in (torch.float16, torch.bfloat16)),
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("dev", "dtype"), AUTOCAST_CASES, ids=str)
def test_autocast(name: str, dev: str, dtype: torch.dtype) -> None:
    block = attnviz.create_attention(name, 64).to(dev).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.05 * torch.randn_like(p))
    # post-ReLU-like features with large values (A A^T would overflow float16 if computed in it)
    x = (torch.randn(2, 64, 9, 7, device=dev) * 4).relu()
    with torch.no_grad():
        ref = block(x)
        with torch.autocast(dev, dtype=dtype):
            y = block(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    tol = 0.1 if dtype == torch.bfloat16 else 0.03
    err = (y.float() - ref).abs().max() / ref.abs().max()
    assert err < tol, f"{name} under {dtype}: relative error {err:.3g}"


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_roundtrip_and_to_device(name: str) -> None:
    # Every weight is a registered parameter (blog bug 5: convs in plain lists were never saved or moved).
    a = attnviz.create_attention(name, 32).eval()
    b = attnviz.create_attention(name, 32).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 32, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
    a.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in a.parameters())


@pytest.mark.parametrize("seed", range(4))
def test_dual_attention_maps_under_bfloat16_autocast_match_float32(seed: int, device: torch.device) -> None:
    """DA's position and channel maps are softmaxes of unscaled products: under bfloat16 autocast both are
    computed in float32 (their energies lose too many digits in bfloat16), so they stay within 3e-2 of float32."""
    torch.manual_seed(seed)
    block = attnviz.create_attention("da", 64).to(device).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = (torch.randn(2, 64, 9, 7, device=device) * 4).relu()
    with attnviz.AttentionRecorder(block) as ref, torch.no_grad():
        block(x)
    with attnviz.AttentionRecorder(block) as low, torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        block(x)
    assert [m.kind for m in low.maps] == ["pairwise", "channel_pairwise"]
    for a, b in zip(ref.maps, low.maps, strict=True):
        err = (a.data - b.data).abs().max().item()
        assert err < 3e-2, f"DA {a.kind} map under bfloat16 autocast: max abs error {err:.3g}"
