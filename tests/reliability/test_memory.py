"""Memory given back: a model that leaves the cache is freed at once, and switching networks and attention types
over and over does not grow the process (the cache keeps at most four models)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from attnviz.app import AppConfig, Handlers
from attnviz.pipeline import ModelCache, analyze
from attnviz.pipeline.core import cached_model
from tests.reliability.conftest import FIGURES, SIZE

ASSET = Path(__file__).parents[2] / "assets" / "rocket.jpg"
ATTENTIONS = ["se", "cbam", "eca", "mhsa"]
BIG, SMALL = "resnet50", "resnet18"
GROWTH = 0.10  # the bound: after a warm-up pass, more passes grow resident memory by at most 10 %


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    """The cyclic garbage collector off: what frees a model must be the cache, not a collection that happened to
    run (a full one can be minutes away in a server)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_automatic_gc")
@pytest.mark.parametrize(("arch", "attention"), [(SMALL, "se"), (SMALL, "mhsa"), ("torchvision:resnet18", None)])
def test_an_evicted_model_is_freed(arch: str, attention: str | None) -> None:
    """A model analysed once and then pushed out of the cache is gone (no reference, no cycle keeps it)."""
    cache = ModelCache(maxsize=1)
    ref = weakref.ref(cached_model(arch, attention, "random", "cpu", cache))
    result = analyze(ASSET, attention=attention, arch=arch, weights="random", device="cpu", size=SIZE, cache=cache)
    assert result.predictions and ref() is not None
    cached_model(SMALL, "eca", "random", "cpu", cache)  # evicts it
    assert ref() is None, f"{arch} + {attention} is still alive after leaving the cache"
    del result


@pytest.mark.slow
def test_switching_networks_gives_memory_back() -> None:
    """The app's /analyze handler switching between four attention types on a ResNet-50 and on a ResNet-18, three
    times: each pass ends with the four ResNet-18s cached (every ResNet-50 evicted). Their memory goes back to the
    OS: the process stays within one ResNet-50 of where it was with only the ResNet-18s, and after the first pass
    more passes grow it by at most 10 %."""
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    cache = ModelCache(maxsize=4)
    app = Handlers(AppConfig(device="cpu", size=SIZE, offline=True), cache=cache)

    def switch(arch: str) -> None:
        for attention in ATTENTIONS:
            state, predictions, *_ = app.run_analysis(str(ASSET), attention, arch, "random")
            assert len(predictions) == 5
        del state

    def rss() -> float:
        gc.collect()
        return proc.memory_info().rss / 2**20

    switch(SMALL)
    small = rss()  # the four small models cached
    switch(BIG)
    big = sum(p.numel() * p.element_size() for p in cache.models()[-1].parameters()) / 2**20
    switch(SMALL)
    warm = rss()
    for _ in range(2):
        switch(BIG)
        switch(SMALL)
    after = rss()
    line = (
        f"{3 * 2 * len(ATTENTIONS)} switches ({BIG}/{SMALL} x {len(ATTENTIONS)} attention types): resident memory "
        f"{small:.0f} MiB with the small models cached, {warm:.0f} MiB after the first pass, {after:.0f} MiB after "
        f"two more ({100 * (after - warm) / warm:+.1f} %; bound {100 * GROWTH:.0f} %); one {BIG} is {big:.0f} MiB"
    )
    FIGURES["model switches"] = line
    assert after <= warm * (1 + GROWTH), line
    assert max(warm, after) - small < big, line
