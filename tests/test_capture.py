"""AttentionRecorder: hooks only taps, removes every hook, keeps logits bit-identical, restores flags."""

from __future__ import annotations

import gc
import threading

import pytest
import torch
from torch import nn

import attnviz
from attnviz.blocks import Tap, get_attention
from attnviz.sources.own import attention_modules

NAMES = attnviz.list_attentions()


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture(scope="module")
def r18_cbam() -> nn.Module:
    return attnviz.build_model("resnet18", "cbam")


def test_logits_identical_and_no_hooks_left(r18_cbam: nn.Module, device: torch.device) -> None:
    model = r18_cbam.to(device)
    x = torch.randn(2, 3, 64, 80, device=device)
    with torch.no_grad():
        ref = model(x)
        with attnviz.AttentionRecorder(model) as rec:
            assert _hook_count(model) == 16 + 2  # one per tap (8 blocks x channel, spatial) + the root's pre/post
            out = model(x)
    assert torch.equal(out, ref)
    assert _hook_count(model) == 0
    assert len(rec.maps) == 16
    model.cpu()


def test_hooks_removed_when_forward_raises(r18_cbam: nn.Module) -> None:
    with pytest.raises(RuntimeError), attnviz.AttentionRecorder(r18_cbam):
        r18_cbam(torch.randn(1, 5, 32, 32))  # wrong channel count: the stem conv raises
    assert _hook_count(r18_cbam) == 0
    with pytest.raises(KeyError), attnviz.AttentionRecorder(r18_cbam):
        raise KeyError("body raised")
    assert _hook_count(r18_cbam) == 0
    # the model still works and can be recorded again
    with attnviz.AttentionRecorder(r18_cbam) as rec, torch.no_grad():
        r18_cbam(torch.randn(1, 3, 32, 32))
    assert len(rec.maps) == 16


def test_train_eval_flags_restored(r18_cbam: nn.Module) -> None:
    model = r18_cbam.train()
    model.layer2.eval()  # a mixed state must come back exactly
    before = [m.training for m in model.modules()]
    with attnviz.AttentionRecorder(model, eval_mode=True):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before
    with pytest.raises(ValueError), attnviz.AttentionRecorder(model, eval_mode=True):
        raise ValueError
    assert [m.training for m in model.modules()] == before
    model.eval()


def test_unknown_names_and_kinds_are_rejected_before_hooking(r18_cbam: nn.Module) -> None:
    with pytest.raises(ValueError, match=r"not attention maps of this model: \['layer1.0.bn9'\]"):
        attnviz.AttentionRecorder(r18_cbam, names=["layer1.0.bn9"])
    with pytest.raises(ValueError, match="unknown kinds"):
        attnviz.AttentionRecorder(r18_cbam, kinds=["heat"])
    assert _hook_count(r18_cbam) == 0


def test_names_and_kinds_filter(r18_cbam: nn.Module) -> None:
    with attnviz.AttentionRecorder(r18_cbam, kinds=["spatial"]) as rec, torch.no_grad():
        r18_cbam(torch.randn(1, 3, 32, 32))
    assert {m.kind for m in rec.maps} == {"spatial"} and len(rec.maps) == 8
    with attnviz.AttentionRecorder(r18_cbam, names=["layer3.1.attn.channel.tap"]) as rec, torch.no_grad():
        r18_cbam(torch.randn(1, 3, 32, 32))
    (m,) = rec.maps
    assert (m.name, m.block, m.stage, m.kind, tuple(m.data.shape)) == (
        "layer3.1.attn.channel.tap",
        "layer3.1",
        3,
        "channel",
        (1, 256),
    )


def test_stored_maps_are_copies_not_views() -> None:
    # A later in-place op (out += identity, ReLU(inplace)) must not change what was recorded (blog bug 10).
    class Inplace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tap = Tap("channel")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.tap(x)
            return y.mul_(0)

    x = torch.rand(2, 4)
    keep = x.clone()
    with attnviz.AttentionRecorder(Inplace()) as rec:
        rec.model(x)
    torch.testing.assert_close(rec.maps[0].data, keep)


def test_read_only_taps_are_kept_without_a_copy() -> None:
    """A tap whose block promises not to change the weight (DA's large softmaxes) is recorded as is."""

    class Softmax(nn.Module):
        def __init__(self, read_only: bool) -> None:
            super().__init__()
            self.tap = Tap("channel_pairwise", read_only=read_only)
            self.seen: torch.Tensor | None = None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            attn = self.tap(torch.softmax(x, dim=-1))
            self.seen = attn
            return attn @ x

    x = torch.rand(2, 5, 5)
    for read_only in (False, True):
        module = Softmax(read_only)
        with attnviz.AttentionRecorder(module) as rec:
            module(x)
        (m,) = rec.maps
        torch.testing.assert_close(m.data, torch.softmax(x, dim=-1))
        assert (m.data.data_ptr() == module.seen.data_ptr()) is read_only
    assert "read_only=True" in repr(Tap("pairwise", read_only=True))


def _expected_shape(name: str, kind: str, inp: torch.Size) -> tuple[int, ...]:
    """The canonical shape of a map of ``kind`` from block ``name`` fed a (B, C, H, W) input."""
    b, c, h, w = inp
    name = get_attention(name).variant_of or name  # sk_pre, epsa_pre: the maps of sk, epsa
    k = {"sk": 2, "epsa": 4}.get(name, 1)
    return {
        "channel": (b, c),
        "spatial": (b, h, w),
        "branch": (b, k, c // k if name == "epsa" else c),
        "pairwise": (b, 4 if name == "mhsa" else 1, h * w, h * w),
        "channel_pairwise": (b, c, c),
        "memory": (b, 64, h, w),
    }[kind]


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("name", NAMES)
def test_every_block_of_a_model_yields_its_maps(arch: str, name: str) -> None:
    spec = get_attention(name)
    model = attnviz.build_model(arch, name)
    blocks = attention_modules(model)
    inputs: dict[str, torch.Size] = {}
    handles = [
        mod.register_forward_pre_hook(lambda m, a, p=path: inputs.__setitem__(p, a[0].shape))
        for path, mod in blocks.items()
    ]
    x = torch.randn(2, 3, 72, 104)  # non-square
    with attnviz.AttentionRecorder(model) as rec, torch.inference_mode():
        model(x)
    for h in handles:
        h.remove()
    n_blocks = sum(1 if spec.placement == "stage" else len(getattr(model, f"layer{s}")) for s in spec.stages)
    assert len(blocks) == n_blocks
    maps = rec.maps
    assert len(maps) == n_blocks * len(spec.kinds)
    assert tuple(m.kind for m in maps) == spec.kinds * n_blocks  # forward order, block by block
    for m in maps:
        owner = next(p for p in blocks if m.name.startswith(p + "."))
        assert m.block == (owner if spec.placement == "stage" else owner.rsplit(".", 1)[0])
        assert m.stage in spec.stages and m.block.startswith(f"layer{m.stage}.")
        assert tuple(m.data.shape) == _expected_shape(name, m.kind, inputs[owner]), m.name
        if m.kind in ("spatial", "memory", "pairwise"):
            assert m.size == tuple(inputs[owner][2:])


def test_batch_maps_equal_single_image_maps() -> None:
    model = attnviz.build_model("resnet18", "da")
    with torch.no_grad():  # non-zero gains so the maps feed the logits
        for m in model.modules():
            if hasattr(m, "alpha"):
                m.alpha.fill_(0.5)
    x = torch.randn(3, 3, 64, 64)
    with attnviz.AttentionRecorder(model) as rec, torch.no_grad():
        model(x)
    batch = rec.maps
    for i in range(3):
        with attnviz.AttentionRecorder(model) as rec, torch.no_grad():
            model(x[i : i + 1])
        for mb, ms in zip(batch, rec.maps, strict=True):
            assert mb.name == ms.name
            torch.testing.assert_close(mb.data[i : i + 1], ms.data, atol=1e-5, rtol=1e-4)


def test_concurrent_recorders_on_one_model_are_serialised() -> None:
    model = attnviz.build_model("resnet18", "se")
    results: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                with attnviz.AttentionRecorder(model) as rec, torch.no_grad():
                    model(torch.randn(1, 3, 32, 32))
                results.append(len(rec.maps))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert results == [8] * 20  # each recorder saw exactly its own forward
    assert _hook_count(model) == 0


def test_recorder_not_reentrant_and_remove_idempotent(r18_cbam: nn.Module) -> None:
    rec = attnviz.AttentionRecorder(r18_cbam)
    with rec, pytest.raises(RuntimeError, match="already active"):
        rec.__enter__()
    rec.remove()
    rec.remove()
    assert _hook_count(r18_cbam) == 0


@pytest.mark.slow
def test_memory_stable_over_100_recorded_forwards() -> None:
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    model = attnviz.build_model("resnet18", "cbam")
    x = torch.randn(2, 3, 64, 64)

    def run(n: int) -> None:
        for _ in range(n):
            with attnviz.AttentionRecorder(model) as rec, torch.inference_mode():
                model(x)
            maps = rec.maps
            assert len(maps) == 16
        del rec, maps

    run(10)  # warm up allocator caches
    gc.collect()
    before = proc.memory_info().rss
    run(100)
    gc.collect()
    grown = (proc.memory_info().rss - before) / 2**20
    # one forward's maps are well under 1 MiB; 100 leaked forwards of activations would be hundreds
    assert grown < 20, f"resident memory grew by {grown:.1f} MiB over 100 recorded forwards"
    assert _hook_count(model) == 0


def test_one_kind_table_covers_every_kind_and_lays_taps_out() -> None:
    from attnviz.blocks import KINDS
    from attnviz.capture.kinds import KIND_SPECS
    from attnviz.checks import OFF

    assert tuple(KIND_SPECS) == KINDS and tuple(OFF) == KINDS
    as_tapped = {
        "channel": (2, 5, 1, 1),
        "spatial": (2, 1, 4, 4),
        "branch": (2, 3, 5, 1, 1),
        "pairwise": (2, 1, 16, 16),
        "channel_pairwise": (2, 5, 5),
        "memory": (2, 6, 4, 4),
    }
    for kind, shape in as_tapped.items():
        assert KIND_SPECS[kind].canonical(torch.rand(shape)).dim() == KIND_SPECS[kind].ndim
    with pytest.raises(ValueError, match="'pairwise' tap expects a 4-d tensor"):
        KIND_SPECS["pairwise"].canonical(torch.rand(2, 16, 16))


class _InlineGate(nn.Module):
    """An SE-like gate computed by a function call inside the forward (a function site)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x.mean((2, 3), keepdim=True))


def test_site_hook_engine_reads_replaces_and_always_removes() -> None:
    from attnviz.capture.hooks import SiteHooks, model_lock
    from attnviz.capture.sites import Site

    model = nn.Sequential(nn.Conv2d(3, 4, 1), _InlineGate())
    site = Site("1.sigmoid()", "function", model[1], ordinal=0, op="sigmoid")
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        feats, ref = model[0](x), model(x)

    def run(on_site, other_thread: bool = False) -> torch.Tensor:
        hooks = SiteHooks(model, on_site=on_site)
        hooks.open()
        try:
            hooks.sites([site])
            if other_thread:  # the model is locked, and another thread's forward sees no callback
                got: list = []
                t = threading.Thread(target=lambda: got.append(model_lock(model).acquire(blocking=False)))
                t.start()
                t.join()
                assert got == [False]
            with torch.no_grad():
                return model(x)
        finally:
            hooks.close()

    seen: list = []
    out = run(lambda s, w, op, dim: seen.append((s.name, op, tuple(w.shape))), other_thread=True)
    assert seen == [("1.sigmoid()", "sigmoid", (2, 4, 1, 1))] and torch.equal(out, ref)  # read: nothing changes
    assert torch.equal(run(lambda s, w, op, dim: torch.ones_like(w)), feats)  # replaced by 1: the gate passes all

    def boom(s, w, op, dim) -> None:
        raise KeyError("callback raised inside the owner's forward")

    with pytest.raises(KeyError):
        run(boom)
    assert _hook_count(model) == 0 and torch._C._len_torch_function_stack() == 0
    assert model_lock(model).acquire(blocking=False)  # unlocked again
    model_lock(model).release()
