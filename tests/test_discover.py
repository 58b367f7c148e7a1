"""Discovery: attention sites in networks attnviz did not build (tests/user_nets.py), found by one instrumented pass
and then recorded through cheap hooks, with the recorder's guarantees (identical logits, no hooks left, flags
restored, threads kept apart)."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn
from torch.nn.modules import module as nn_module

from attnviz import AttentionRecorder
from attnviz.capture.structure import module_paths
from tests.user_nets import (
    USER_NETS,
    FiveD,
    HSwish,
    Net,
    SoftmaxHead,
    Swish,
    SwishMethod,
    SwishModule,
    swish_resnet,
)

B = 2


def _x(seed: int = 0, b: int = B) -> torch.Tensor:
    return torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _net(key: str) -> nn.Module:
    torch.manual_seed(0)
    return Net(USER_NETS[key][0]()).eval()


def _hooks(model: nn.Module) -> int:
    """Module hooks on every module (plain-list ones too), global module hooks, torch function modes."""
    mods = [m for _, m in module_paths(model).values()]
    local = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in mods)
    glob = len(nn_module._global_forward_hooks) + len(nn_module._global_forward_pre_hooks)
    return local + glob + torch._C._len_torch_function_stack()


def _summary(rec: AttentionRecorder) -> list[tuple[str, str, tuple[int, ...], str]]:
    return [(m.name, m.kind, tuple(m.data.shape[1:]), m.how) for m in rec.maps]


@pytest.mark.parametrize("key", list(USER_NETS))
def test_user_style_networks_kinds_shapes_names(key: str) -> None:
    model = _net(key)
    x = _x()
    with torch.no_grad():
        bare = model(x)
        with AttentionRecorder(model) as rec:  # the discovery pass
            first = model(x)
        assert _hooks(model) == 0
        with AttentionRecorder(model) as rec2:  # cached: recorded through hooks, no discovery
            second = model(x)
    assert torch.equal(first, bare) and torch.equal(second, bare)  # bit-identical logits
    expected = [(n, k, s, h) for n, k, s, h in USER_NETS[key][1]]
    assert _summary(rec) == expected, rec.unclassified
    assert _summary(rec2) == expected
    for a, b in zip(rec.maps, rec2.maps, strict=True):
        torch.testing.assert_close(a.data, b.data, rtol=0, atol=0)
        assert a.data.dtype == torch.float32 and a.data.device.type == "cpu" and a.stage == 1 and a.block == "layer1.0"
    assert not rec.unclassified and not rec2.unclassified


def test_values_are_the_gates_the_modules_used() -> None:
    """The SE gate recorded is the one that scaled the features: out = x * gate."""
    model = _net("se_sigmoid_attr")
    x = _x(1)
    seen = {}
    h1 = model.layer1[0].attn.register_forward_hook(lambda m, a, o: seen.update(x=a[0].clone(), out=o.clone()))
    with torch.no_grad(), AttentionRecorder(model) as rec:
        model(x)
    h1.remove()
    (m,) = rec.maps
    torch.testing.assert_close(seen["out"], seen["x"] * m.data[:, :, None, None], rtol=1e-6, atol=1e-6)
    # softmax weights of the branch kind sum to 1 over K; pairwise rows sum to 1
    for key, kind, dim in (("sk_softmax_dim0", "branch", 1), ("dual_hard_coded", "pairwise", -1)):
        with torch.no_grad(), AttentionRecorder(_net(key)) as rec:
            _net(key)  # a model built inside is not recorded
        model = _net(key)
        with torch.no_grad(), AttentionRecorder(model) as rec:
            model(x)
        m = next(m for m in rec.maps if m.kind == kind)
        torch.testing.assert_close(m.data.sum(dim), torch.ones_like(m.data.sum(dim)), rtol=0, atol=1e-5)


def test_full_size_and_grouped_gates_keep_the_full_tensor() -> None:
    model = _net("sge_grouped")
    with torch.no_grad(), AttentionRecorder(model) as rec:
        model(_x())
    (m,) = rec.maps
    assert m.raw is not None and tuple(m.raw.shape) == (B, 4, 16, 16)
    torch.testing.assert_close(m.data, m.raw.mean(1))
    assert "grouped" in m.layout


def test_coordinate_gates_pair_into_their_product() -> None:
    model = _net("coord_axis_gates")
    got = {}
    attn = model.layer1[0].attn
    handles = [
        attn.conv_h.register_forward_hook(lambda m, a, o: got.update(h=o.clone())),
        attn.conv_w.register_forward_hook(lambda m, a, o: got.update(w=o.clone())),
    ]
    with torch.no_grad(), AttentionRecorder(model) as rec:
        model(_x())
    for h in handles:
        h.remove()
    (m,) = rec.maps
    expect = (got["h"].sigmoid() * got["w"].sigmoid()).mean(1)  # (B, C, H, 1) * (B, C, 1, W) -> channel mean
    torch.testing.assert_close(m.data, expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("act", [Swish, SwishModule, HSwish, SwishMethod, nn.SiLU, nn.GELU, nn.Hardswish, nn.ReLU])
def test_activations_are_not_attention(act: type[nn.Module]) -> None:
    """A plain ResNet and ResNets whose ReLUs are Swish (x * sigmoid(x) in every spelling), h-swish, SiLU or GELU
    give zero maps; the x * sigmoid(x) gates are listed as skipped activations."""
    model = swish_resnet(act).eval()
    with torch.no_grad(), AttentionRecorder(model) as rec:
        model(torch.randn(1, 3, 64, 64))
    assert rec.maps == [] and rec.unclassified == []
    written_as_gate = act in (Swish, SwishModule, HSwish, SwishMethod)
    assert bool(rec.skipped) == written_as_gate
    assert all("activation" in why for _, _, why in rec.skipped)


def test_classifier_softmax_is_not_attention() -> None:
    model = SoftmaxHead().eval()
    with torch.no_grad(), AttentionRecorder(model) as rec:
        model(_x())
    assert rec.maps == [] and [(n, why) for n, _, why in rec.skipped] == [
        ("softmax", "the model's output (the classifier's softmax)")
    ]


def test_unclassified_weights_are_listed_with_shape_and_reason() -> None:
    model = Net(FiveD()).eval()
    with torch.no_grad(), AttentionRecorder(model) as rec:
        model(_x())
    assert rec.maps == []
    ((name, shape, why),) = rec.unclassified
    assert name == "layer1.0.attn.sigmoid()" and shape == (B, 2, 8, 2, 1) and "5-d gate" in why


def test_no_hooks_left_when_the_forward_raises_in_discovery_and_after() -> None:
    model = _net("cbam_blog")
    with pytest.raises(RuntimeError), AttentionRecorder(model):
        model(torch.randn(1, 5, 32, 32))  # the stem raises during the discovery pass
    assert _hooks(model) == 0

    class Boom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ValueError("inside an attention module")

    with torch.no_grad(), AttentionRecorder(model):
        model(_x())  # discovered and cached
    sa = model.layer1[0].attn.sa
    sa.conv1 = Boom()  # the site's owner raises mid-forward, after its mode was pushed
    with pytest.raises(ValueError, match="inside an attention"), AttentionRecorder(model):
        model(_x())
    assert _hooks(model) == 0


def test_flags_restored_and_eval_mode() -> None:
    model = _net("psa_plain_lists").train()
    model.layer1.eval()
    before = [m.training for _, m in module_paths(model).values()]
    with AttentionRecorder(model, eval_mode=True), torch.no_grad():
        assert not any(m.training for _, m in module_paths(model).values())
        model(_x())
    assert [m.training for _, m in module_paths(model).values()] == before


def test_declared_overridden_and_excluded_sites() -> None:
    model = _net("cbam_blog")
    x = _x()
    with torch.no_grad(), AttentionRecorder(model, sites={"layer*.attn.ca": "channel"}, exclude=["*.sa"]) as rec:
        model(x)
    # the declared module is the site (what discovery found inside it is not reported twice); sa is excluded
    assert _summary(rec) == [("layer1.0.attn.ca", "channel", (16,), "declared")]
    with torch.no_grad(), AttentionRecorder(model) as found:
        model(x)
    torch.testing.assert_close(rec.maps[0].data, found.maps[0].data, rtol=0, atol=0)
    # override a found site's kind: the (B, 1, H, W) gate declared as "spatial" stays spatial; a kind that cannot
    # hold it is reported, not dropped
    with torch.no_grad(), AttentionRecorder(model, sites={"*.sa": "pairwise"}) as rec:
        model(x)
    assert [m.name for m in rec.maps] == ["layer1.0.attn.ca.sigmoid"]
    assert [n for n, _, _ in rec.unclassified] == ["layer1.0.attn.sa"]
    with pytest.raises(ValueError, match="matches no module"):
        AttentionRecorder(model, sites={"layer9.*": "spatial"})
    with pytest.raises(ValueError, match="unknown kinds"):
        AttentionRecorder(model, sites={"layer1.0.attn.sa": "heat"})


def test_threads_record_only_their_own_forwards() -> None:
    """Two models recorded at once in two threads, and a third thread running one of them unrecorded."""
    models = {"a": _net("se_sigmoid_attr"), "b": _net("cbam_blog")}
    with torch.no_grad():  # discover once so both threads take the hook path too
        for m in models.values():
            with AttentionRecorder(m):
                m(_x())
    start = threading.Barrier(3)
    results: dict[str, list] = {}

    def record(key: str, discover_again: bool) -> None:
        model = models[key]
        with torch.no_grad(), AttentionRecorder(model) as rec:
            start.wait()
            for i in range(20):
                model(_x(i, 1))
        results[key] = [(m.name, tuple(m.data.shape)) for m in rec.maps]

    def unrecorded() -> None:
        start.wait()
        with torch.no_grad():
            for _ in range(20):
                models["a"].layer1(torch.randn(1, 16, 16, 16))  # hooked modules run outside the recorder's thread

    threads = [threading.Thread(target=record, args=("a", False)), threading.Thread(target=record, args=("b", False))]
    threads.append(threading.Thread(target=unrecorded))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["a"] == [("layer1.0.attn.sigmoid", (1, 16))] * 20
    assert results["b"] == [("layer1.0.attn.ca.sigmoid", (1, 16)), ("layer1.0.attn.sa", (1, 16, 16))] * 20
    for m in models.values():
        assert _hooks(m) == 0


def test_discovery_is_cached_and_redone_when_the_model_changes() -> None:
    model = _net("se_sigmoid_attr")
    with torch.no_grad(), AttentionRecorder(model) as rec:
        model(_x())
    assert rec.discovery is not None
    again = AttentionRecorder(model)
    assert again.discovery is not None and not again._discover  # cached: no second discovery pass
    assert [s.owner for s in again.discovery.sites] == [s.owner for s in rec.discovery.sites]
    model.layer1.append(nn.Identity())  # a changed module tree is discovered again
    assert AttentionRecorder(model).discovery is None


REF = (2, 8, 4, 6)  # (B, C, H, W): C = 8, N = 24


@pytest.mark.parametrize(
    ("shape", "op", "dim", "kind", "canonical_shape"),
    [
        ((2, 8, 1, 1), "sigmoid", None, "channel", (2, 8)),
        ((2, 1, 8), "sigmoid", None, "channel", (2, 8)),
        ((2, 8, 1), "sigmoid", None, "channel", (2, 8)),
        ((2, 8), "sigmoid", None, "channel", (2, 8)),
        ((2, 1, 4, 6), "sigmoid", None, "spatial", (2, 4, 6)),
        ((2, 4, 6), "sigmoid", None, "spatial", (2, 4, 6)),
        ((2, 24), "sigmoid", None, "spatial", (2, 4, 6)),
        ((2, 1, 24), "softmax", 2, "spatial", (2, 4, 6)),  # GCNet's context softmax over positions
        ((2, 8, 4, 6), "sigmoid", None, "spatial", (2, 4, 6)),  # full-size: channel mean
        ((6, 1, 4, 6), "sigmoid", None, "spatial", (2, 4, 6)),  # (B*G, 1, H, W), G = 3
        ((2, 8, 4, 1), "sigmoid", None, "axis", (2, 8, 4, 1)),
        ((3, 2, 8, 1, 1), "softmax", 0, "branch", (2, 3, 8)),
        ((2, 3, 8, 1, 1), "softmax", 1, "branch", (2, 3, 8)),
        ((2, 24, 24), "softmax", 2, "pairwise", (2, 1, 24, 24)),
        ((8, 24, 24), "softmax", 2, "pairwise", (2, 4, 24, 24)),  # (B*heads, N, N)
        ((2, 8, 8), "softmax", 2, "channel_pairwise", (2, 8, 8)),
        ((2, 24, 5), "softmax", 1, "memory", (2, 5, 4, 6)),  # External Attention: (B, N, S) over N
        ((2, 5, 24), "softmax", 2, "memory", (2, 5, 4, 6)),
    ],
)
def test_layouts_map_onto_kinds(shape, op, dim, kind, canonical_shape) -> None:
    from attnviz.capture.sites import canonical

    t = torch.rand(shape)
    c = canonical(t, batch=2, ref=REF, op=op, dim=dim)
    assert not isinstance(c, str), c
    assert (c.kind, tuple(c.data.shape)) == (kind, canonical_shape)


@pytest.mark.parametrize(
    ("shape", "op", "dim", "why"),
    [
        ((2, 3, 49, 49), "softmax", 3, "M = 49, neither C nor H*W"),  # window attention of another grid
        ((3, 8), "sigmoid", None, "not the batch"),
        ((2, 2, 4, 2, 1), "sigmoid", None, "5-d gate"),
    ],
)
def test_layouts_that_fit_no_kind_say_why(shape, op, dim, why) -> None:
    from attnviz.capture.sites import canonical

    reason = canonical(torch.rand(shape), batch=2, ref=REF, op=op, dim=dim)
    assert isinstance(reason, str) and why in reason


def test_recorded_models_can_be_freed() -> None:
    """The per-model caches (structure, discovery) never keep a model alive: an app that builds and drops models
    does not grow. Covered: a discovered site owned by the model itself, an adapted model, a tapped one."""
    import gc
    import weakref

    import attnviz
    from tests.user_nets import SoftmaxHead

    class RootGate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return y * torch.sigmoid(y.mean((2, 3), keepdim=True))  # a function site owned by the root

    timm = pytest.importorskip("timm")
    makers = [RootGate, SoftmaxHead, lambda: timm.layers.SEModule(3), lambda: attnviz.build_model("resnet18", "se")]
    for make in makers:
        model = make().eval()
        for _ in range(2):  # discovered, then from the caches
            with torch.no_grad(), AttentionRecorder(model) as rec:
                model(_x(b=1))
        ref = weakref.ref(model)
        del model, rec
        gc.collect()
        assert ref() is None, make
