"""attnviz.pipeline.run.analyze_many: one result per input in order, the same as analyze() alone, errors in place."""

from __future__ import annotations

import gc
import pickle
import weakref

import pytest
import torch

import attnviz.pipeline.run as batch_mod
from attnviz import analyze
from attnviz.blocks.tap import Tap
from attnviz.pipeline.core import ModelCache
from attnviz.pipeline.image import ImageError
from attnviz.pipeline.run import analyze_many
from tests.images import ASSET, photo, png_bomb


def _same(a, b, exact: bool, device: str) -> None:
    assert a.input_size == b.input_size and a.model == b.model and a.settings == b.settings and a.notes == b.notes
    assert [(m.name, m.kind, m.size) for m in a.maps] == [(m.name, m.kind, m.size) for m in b.maps]
    if exact:  # (untrained: near-uniform probabilities, so a batch's rounding may reorder the top-5)
        assert a.predictions == b.predictions
    # bfloat16 on CUDA, whose kernels also depend on the batch size
    loose = {"atol": 3e-2, "rtol": 3e-2} if device == "cuda" else {"atol": 1e-5, "rtol": 1e-4}
    tol = {"atol": 0.0, "rtol": 0.0} if exact else loose
    for ma, mb in zip(a.maps, b.maps, strict=True):
        torch.testing.assert_close(ma.data, mb.data, **tol)
    assert a.activations.keys() == b.activations.keys()
    for k in a.activations:
        torch.testing.assert_close(torch.from_numpy(a.activations[k]), torch.from_numpy(b.activations[k]), **tol)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_results_in_order_match_analyze(batch_size: int, device: torch.device) -> None:
    cache = ModelCache(1)
    kw = {"attention": "cbam", "arch": "resnet18", "device": device.type, "size": 64, "cache": cache}
    wide = photo((120, 64))
    inputs = [ASSET, ASSET, b"not an image", wide, ASSET, png_bomb(), wide, wide, ASSET]
    out = list(analyze_many(inputs, batch_size=batch_size, **kw))
    assert len(out) == len(inputs)
    assert isinstance(out[2], ImageError) and "not an image" in str(out[2])
    assert isinstance(out[5], ImageError) and "pixels" in str(out[5])
    alone = {id(src): analyze(src, **kw) for src in (ASSET, wide)}
    exact = batch_size == 1 and device.type == "cpu"  # a batch may change the summation order; a GPU its kernels
    for src, res in zip(inputs, out, strict=True):
        if not isinstance(res, Exception):
            _same(res, alone[id(src)], exact, device.type)


def test_results_own_their_maps() -> None:
    """A result is not a view into its batch: pickling one (to a worker process) carries only its own maps."""
    kw = {"attention": "se", "arch": "resnet18", "device": "cpu", "size": 64}
    one, *_ = analyze_many([ASSET] * 4, batch_size=4, **kw)
    for m in one.maps:
        assert m.data.shape[0] == 1 and m.data.untyped_storage().nbytes() == m.data.numel() * 4
    alone = pickle.dumps(analyze(ASSET, **kw))
    assert len(pickle.dumps(one)) < 1.2 * len(alone)


def test_bad_settings_fail_before_reading_images() -> None:
    def never():
        raise AssertionError("an image was read")
        yield  # pragma: no cover

    with pytest.raises(ValueError, match="unknown"):
        next(analyze_many(never(), attention="nope", device="cpu"))
    with pytest.raises(ValueError, match="batch_size"):
        next(analyze_many([ASSET], attention="se", batch_size=0))


def test_channels_last_models_give_the_same_maps() -> None:
    """CUDA models run in channels_last (ModelCache): every attention type's maps are those of the NCHW model."""
    import attnviz
    from attnviz import AttentionRecorder

    x = torch.randn(2, 3, 64, 96)
    for name in attnviz.list_attentions():
        model = attnviz.build_model("resnet18", name).eval()
        runs = []
        for fmt in (torch.contiguous_format, torch.channels_last):
            model = model.to(memory_format=fmt)
            with AttentionRecorder(model, activations=True) as rec, torch.inference_mode():
                model(x.contiguous(memory_format=fmt))
            runs.append((rec.maps, rec.activations))
        (maps, acts), (maps_cl, acts_cl) = runs
        assert [m.name for m in maps] == [m.name for m in maps_cl], name
        for a, b in zip(maps, maps_cl, strict=True):
            torch.testing.assert_close(a.data, b.data, atol=5e-4, rtol=1e-3, msg=lambda m, n=name: f"{n}: {m}")
        for k in acts:
            torch.testing.assert_close(acts[k], acts_cl[k], atol=5e-4, rtol=1e-3)


def _inject_oom(model: torch.nn.Module, when) -> list[torch.utils.hooks.RemovableHandle]:
    """An out-of-memory error as cuDNN raises it (a plain RuntimeError) at the end of ``model``'s forward when
    ``when(batch)``; weak references to what the forward held: its input, every tap's output and the logits."""
    held: list[weakref.ref] = []

    def keep(_m, args, out) -> None:
        held.extend(weakref.ref(t) for t in (*args, out) if isinstance(t, torch.Tensor))
        if _m is model.fc and when(out.shape[0]):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")

    hooks = [m.register_forward_hook(keep) for m in [*(m for m in model.modules() if isinstance(m, Tap)), model.fc]]
    model.held = held
    return hooks


def test_oom_retry_runs_after_the_failed_batch_is_released(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch that runs out of GPU memory is retried image by image only once everything it held (input, maps
    the recorder had pending, logits, the traceback's frames) is gone, so freeing the cache frees its memory."""
    cache = ModelCache(2)
    model = cache.get("resnet18", "cbam", "random", "cpu")
    other = cache.get("resnet18", "se", "random", "cpu")
    recorders: list[weakref.ref] = []
    real = batch_mod.AttentionRecorder

    def spy(*args, **kwargs):
        rec = real(*args, **kwargs)
        recorders.append(weakref.ref(rec))
        return rec

    monkeypatch.setattr(batch_mod, "AttentionRecorder", spy)
    hooks = _inject_oom(model, lambda n: n > 1)
    alive_at_retry: list[int] = []
    freed_with: list[int] = []

    def at_retry(_m, args) -> None:
        if args[0].shape[0] == 1 and not alive_at_retry:
            gc.collect()
            alive_at_retry.append(sum(r() is not None for r in [*model.held, *recorders[:1]]))

    hooks.append(model.register_forward_pre_hook(at_retry))
    failed_input = []
    hooks.append(model.register_forward_pre_hook(lambda _m, a: failed_input.append(weakref.ref(a[0])) or None))
    monkeypatch.setattr(
        torch.cuda, "empty_cache", lambda: freed_with.append(sum(r() is not None for r in failed_input[:1]))
    )
    try:
        out = list(analyze_many([ASSET] * 3, attention="cbam", device="cpu", size=64, batch_size=3, cache=cache))
    finally:
        for h in hooks:
            h.remove()
    assert [type(r).__name__ for r in out] == ["Result"] * 3  # each image alone after the batch failed
    assert len(model.held) > 10 and len(recorders) == 4
    assert alive_at_retry == [0], f"{alive_at_retry[0]} tensors of the failed batch alive when the retry ran"
    assert freed_with[:1] == [0], "the cache was emptied while the failed batch's input was alive"
    assert cache.models() == [model] and other not in cache.models()  # the other model is dropped on OOM


def test_an_image_that_runs_out_of_memory_alone_is_an_error_in_its_place() -> None:
    cache = ModelCache(1)
    model = cache.get("resnet18", "se", "random", "cpu")
    hooks = _inject_oom(model, lambda n: True)
    try:
        out = list(analyze_many([ASSET, b"junk", ASSET], attention="se", device="cpu", size=64, cache=cache))
    finally:
        for h in hooks:
            h.remove()
    assert [type(r).__name__ for r in out] == ["AnalyzeError", "ImageError", "AnalyzeError"]
    assert "out of memory" in str(out[0])


def test_decoding_in_threads_or_inline_gives_the_same_results() -> None:
    """decode_workers=0 (the CPU default: decoded in the calling thread) and 2 (threads, CUDA's default) are the
    same pipeline; only where decoding runs differs."""
    images = [ASSET, photo(), ASSET]
    cache = ModelCache(1)
    inline = list(analyze_many(images, attention="se", weights="random", device="cpu", cache=cache, decode_workers=0))
    threads = list(analyze_many(images, attention="se", weights="random", device="cpu", cache=cache, decode_workers=2))
    for a, b in zip(inline, threads, strict=True):
        _same(a, b, exact=True, device="cpu")
    with pytest.raises(ValueError, match="decode_workers >= 0"):
        list(analyze_many(images, attention="se", device="cpu", decode_workers=-1))
