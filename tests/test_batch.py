"""attnviz.batch.analyze_many: one result per input in order, the same as analyze() alone, errors in place."""

from __future__ import annotations

import pickle

import pytest
import torch

from attnviz import analyze
from attnviz.analyze import ModelCache
from attnviz.batch import analyze_many
from attnviz.image import ImageError
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
