"""analyze() on every attention type, views and exports: the pipeline the app and CLI share."""

from __future__ import annotations

import gc
import importlib
import io
import json
import weakref
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import attnviz
from attnviz.capture.views import build_views
from attnviz.export import export_zip, safe_name, write_folder
from attnviz.pipeline import AnalyzeError, ModelCache, analyze
from attnviz.sources.loading import build
from attnviz.sources.spec import model_request
from tests.images import ASSET

NAMES = attnviz.list_attentions()
analyze_mod = importlib.import_module("attnviz.pipeline.core")  # the module (attnviz.analyze is the function)
CACHE = ModelCache(maxsize=2)
DISPLAY = {"cmap": "turbo", "alpha": 0.5, "norm": "map", "topk": 16, "query": None}


@pytest.mark.parametrize("name", [*NAMES, None])
def test_analyze_every_type(name: str | None) -> None:
    r = analyze(ASSET, attention=name, arch="resnet18", device="cpu", size=96, cache=CACHE)
    spec = attnviz.blocks.get_attention(name) if name else None
    assert r.image.size == (451, 300) and r.input_size == (144, 96)  # aspect kept, no crop
    assert len(r.predictions) == 5 and all(0 <= p <= 1 for _, p in r.predictions)
    assert [p for _, p in r.predictions] == sorted((p for _, p in r.predictions), reverse=True)
    assert set(r.timings) == {"decode", "preprocess", "forward", "capture"}
    assert r.warning.startswith("untrained")
    if spec is None:
        assert r.maps == [] and r.activations == {}
        return
    assert {m.kind for m in r.maps} == set(spec.kinds)
    assert all(m.data.shape[0] == 1 for m in r.maps)
    views = build_views(r)
    assert len(views) == len(r.maps)
    spatial = [v for v in views if v.spatial is not None]
    assert spatial, f"{name}: no spatial view"
    for v in spatial:
        assert v.spatial.ndim == 2 and np.isfinite(v.spatial).all()


def test_channel_only_blocks_show_gate_effect_and_the_gate_weighted_activation_by_name() -> None:
    r = analyze(ASSET, attention="se", arch="resnet18", device="cpu", size=64, cache=CACHE)
    v = build_views(r)[0]
    assert v.kind == "channel" and v.spatial_label == "gate effect vs uniform gating"
    out, inp = r.activations["layer1.0.attn#io"]  # (2, h, w) float64: the SE module's output and input means
    np.testing.assert_allclose(out, r.activations["layer1.0.attn"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(v.spatial, out - v.data.astype(np.float64).mean() * inp, rtol=1e-5, atol=1e-6)
    old = build_views(r, view="gate-weighted")[0]
    assert (
        old.kind == "channel"
        and old.spatial_label == "gate-weighted mean activation (its peaks favour the zero-padded border)"
    )
    np.testing.assert_array_equal(old.spatial, r.activations["layer1.0.attn"])


def test_pairwise_view_follows_the_query() -> None:
    r = analyze(ASSET, attention="mhsa", arch="resnet18", device="cpu", size=128, cache=CACHE)
    m = r.maps[-1]
    h, w = m.size
    top_left = build_views(r, (0.0, 0.0))[-1]
    centre = build_views(r, (0.5, 0.5))[-1]
    np.testing.assert_allclose(top_left.spatial, m.data[0, :, 0].mean(0).view(h, w).numpy(), rtol=1e-6)
    assert not np.allclose(top_left.spatial, centre.spatial)
    assert top_left.spatial.sum() == pytest.approx(1.0, rel=1e-4)  # a head-mean attention row sums to 1


def test_export_zip_contents(tmp_path) -> None:
    r = analyze(ASSET, attention="cbam", arch="resnet18", device="cpu", size=64, cache=CACHE)
    path = export_zip(r, DISPLAY, tmp_path / "out.zip")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        sidecar = json.loads(zf.read("result.json"))
        overlays = [n for n in names if n.startswith("overlays/")]
        assert len(overlays) == 8  # one spatial gate per block
        from PIL import Image

        im = Image.open(io.BytesIO(zf.read(overlays[0])))
        assert im.size[0] > 100 and im.size[1] > 100
        arr = np.load(io.BytesIO(zf.read("maps/01_layer1.0_spatial.npy")))
        np.testing.assert_array_equal(arr, r.maps[1].data[0].numpy())
        assert len([n for n in names if n.startswith("charts/")]) == 8  # one channel chart per block
    assert sidecar["model"]["attention"] == "cbam" and sidecar["settings"]["display"]["cmap"] == "turbo"
    assert sidecar["predictions"][0]["label"] == r.predictions[0][0]
    assert {"torch", "torchvision", "numpy"} <= set(sidecar["versions"])
    assert set(sidecar["files"]) | {"result.json"} == set(names)
    written = write_folder(r, DISPLAY, tmp_path / "folder")
    assert sorted(p.relative_to(tmp_path / "folder").as_posix() for p in written) == sorted(names)


def test_safe_names() -> None:
    assert safe_name("../../etc/passwd") == "_etc_passwd"
    assert safe_name("layer2.1") == "layer2.1"
    assert safe_name("a b/c\\d") == "a_b_c_d"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown attention"):
        analyze(ASSET, attention="nope", device="cpu", cache=CACHE)
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        analyze(ASSET, attention="se", device="tpu", cache=CACHE)


def test_random_models_are_the_same_after_leaving_the_cache() -> None:
    """Untrained models come from a fixed seed: a rebuilt model gives the same maps, and the caller's RNG is
    untouched."""
    image = Image.new("RGB", (64, 48), "orange")
    state = torch.random.get_rng_state()
    a = analyze(image, attention="se", weights="random", cache=ModelCache(1), size=48)
    b = analyze(image, attention="se", weights="random", cache=ModelCache(1), size=48)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(x.data, y.data) for x, y in zip(a.maps, b.maps, strict=True))


def test_random_weights_seed_no_global_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    """A random model is the same twice and leaves every global generator as it was: the CPU one's state is
    unchanged and no device generator (CUDA's) is seeded."""
    seeded = []
    for name in ("manual_seed", "manual_seed_all"):
        monkeypatch.setattr(torch.cuda, name, lambda seed, name=name: seeded.append(name))
    monkeypatch.setattr(torch, "manual_seed", lambda seed: seeded.append("torch.manual_seed"))
    torch.random.default_generator.manual_seed(1234)
    state = torch.get_rng_state()
    a = build(model_request("resnet18", "cbam", "random"))
    b = build(model_request("resnet18", "cbam", "random"))
    assert torch.equal(torch.get_rng_state(), state) and seeded == []
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(a.fc.weight, build_plain_fc()), "the seed must still decide the weights"


def build_plain_fc() -> torch.Tensor:
    """fc weights drawn from the caller's generator (a different stream than the fixed seed's)."""
    return attnviz.build_model("resnet18", "cbam").fc.weight


@pytest.mark.cuda
def test_random_model_on_cuda_leaves_the_cuda_generators_alone() -> None:
    torch.cuda.manual_seed_all(1234)
    before = torch.cuda.get_rng_state_all()
    analyze(Image.new("RGB", (64, 48), "orange"), attention="se", device="cuda", cache=ModelCache(1), size=48)
    after = torch.cuda.get_rng_state_all()
    assert all(torch.equal(x, y) for x, y in zip(before, after, strict=True))


def _inject_oom(model: torch.nn.Module) -> tuple[list[weakref.ref], list]:
    """Every forward of ``model`` ends in an out-of-memory error (as cuDNN raises it); weak references to the
    forward's input and logits."""
    held: list[weakref.ref] = []

    def oom(_m, args, out) -> None:
        held.extend(weakref.ref(t) for t in (*args, out))
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")

    return held, [model.fc.register_forward_hook(oom)]


def test_out_of_memory_frees_the_failed_forward_and_the_next_request_works(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ModelCache(2)
    other = cache.get("resnet18", "se", "random", "cpu")
    model = cache.get("resnet18", "cbam", "random", "cpu")
    held, hooks = _inject_oom(model)
    freed_with: list[int] = []  # tensors of the failed forward alive when the GPU cache was emptied
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed_with.append(sum(r() is not None for r in held)))
    try:
        with pytest.raises(AnalyzeError, match="out of memory") as info:
            analyze(ASSET, attention="cbam", device="cpu", size=64, cache=cache)
    finally:
        for h in hooks:
            h.remove()
    assert len(held) == 2 and freed_with == [0]
    gc.collect()
    assert info.value.__context__ is None and all(r() is None for r in held)  # the error keeps no frame alive
    assert cache.models() == [model] and other not in cache.models()  # the other model dropped
    assert len(analyze(ASSET, attention="cbam", device="cpu", size=64, cache=cache).maps) > 0


def test_out_of_memory_while_loading_frees_the_half_built_model(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ModelCache(2)
    other = cache.get("resnet18", "se", "random", "cpu")
    built: list[weakref.ref] = []
    import attnviz.sources.loading as loading_mod

    real = loading_mod.load_model

    def build_then_oom(*args, **kwargs):
        model = real(*args, **kwargs)
        built.append(weakref.ref(model))
        raise RuntimeError(f"CUDA out of memory while moving {type(model).__name__} (injected)")

    monkeypatch.setattr(loading_mod, "load_model", build_then_oom)
    alive: list[bool] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: alive.append(built[0]() is not None))
    with pytest.raises(AnalyzeError, match="cannot load resnet18 with cbam: the GPU ran out of memory"):
        analyze(ASSET, attention="cbam", device="cpu", size=64, cache=cache)
    assert alive == [False] and other not in cache.models() and cache.models() == []


def _owns_its_memory(t: torch.Tensor) -> bool:
    """A CPU tensor in pageable memory holding only its own bytes (not a view into a shared or pinned buffer)."""
    return t.device.type == "cpu" and not t.is_pinned() and t.untyped_storage().nbytes() == t.numel() * t.itemsize


def test_to_cpu_gives_each_tensor_its_own_pageable_memory(device: torch.device) -> None:
    from attnviz.capture.maps import to_cpu

    tensors = [
        torch.rand(2, 3, device=device),
        torch.rand(4, 5, 6, device=device).transpose(0, 2),
        torch.rand(7),
        torch.rand(3, device=device, dtype=torch.float64),  # an activation's input/output beside float32 maps
        torch.rand(2, 2, device=device),
    ]
    out = to_cpu(tensors)
    assert all(_owns_its_memory(t) for t in out)
    assert all(a.dtype == b.dtype and torch.equal(a, b.cpu()) for a, b in zip(out, tensors, strict=True))
    assert [tuple(t.shape) for t in out] == [(2, 3), (6, 5, 4), (7,), (3,), (2, 2)]


@pytest.mark.parametrize("name", ["cbam", "da", "ea"])
def test_results_hold_no_pinned_or_shared_buffer(name: str, device: torch.device) -> None:
    """A result the app keeps for a session holds its maps in memory of their own (on CUDA they were views into
    one pinned buffer per result)."""
    r = analyze(ASSET, attention=name, arch="resnet18", device=device.type, size=64, cache=ModelCache(1))
    assert r.maps and all(_owns_its_memory(m.data) and m.data.dtype == torch.float32 for m in r.maps)
