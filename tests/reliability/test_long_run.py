"""Long runs: memory stays flat over 500 analyze calls; export files and Gradio's copies of files are bounded."""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from attnviz.app import AppConfig, Handlers
from tests.conftest import DEVICES, serve_app
from tests.reliability.conftest import FIGURES, MODEL, SIZE, analyze_api, check_ok, new_client

ASSET = Path(__file__).parents[2] / "assets" / "rocket.jpg"  # 640x427: a result holds about 1 MB
ATTENTIONS = ["cbam", "se", "mhsa", "da"]
CALLS, WARMUP = 500, 25
RSS_BOUND_MIB = 48  # 500 leaked results would be about 500 MiB; allocator noise stays well under this
GPU_BOUND_MIB = 1


def _mib(n: float) -> float:
    return n / 2**20


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_500_analyze_calls_keep_memory_flat(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's /analyze handler (decode, model, capture, every overlay and chart drawn) 500 times in a row."""
    psutil = pytest.importorskip("psutil")
    app = Handlers(AppConfig(device=device, size=SIZE, offline=True))
    proc = psutil.Process()

    def run(n: int) -> None:
        for i in range(n):
            state, predictions, *_ = app.run_analysis(str(ASSET), ATTENTIONS[i % len(ATTENTIONS)], *MODEL)
            assert len(predictions) == 5 and state.result.settings["device"] == device

    run(WARMUP)  # models built, allocator pools filled
    gc.collect()
    rss0 = proc.memory_info().rss
    gpu0 = torch.cuda.memory_allocated() if device == "cuda" else 0
    run(CALLS)
    gc.collect()
    drift = _mib(proc.memory_info().rss - rss0)
    line = f"{CALLS} calls after {WARMUP} to warm up: resident memory {drift:+.1f} MiB (bound {RSS_BOUND_MIB} MiB)"
    assert drift < RSS_BOUND_MIB, line
    if device == "cuda":
        gpu = _mib(torch.cuda.memory_allocated() - gpu0)
        line += f", GPU memory allocated {gpu:+.2f} MiB (bound {GPU_BOUND_MIB} MiB)"
        assert gpu < GPU_BOUND_MIB, line
    FIGURES[f"long run, {device}"] = line


def _du(folder: Path) -> tuple[int, int]:
    """(files, bytes) under ``folder``; files another thread's pruning removes meanwhile are not counted."""
    sizes = []
    for root, _, names in os.walk(folder):  # os.walk skips folders that vanish while it walks
        for name in names:
            try:
                sizes.append(os.stat(os.path.join(root, name)).st_size)
            except FileNotFoundError:
                continue
    return len(sizes), sum(sizes)


def test_export_files_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads are written per request: at most KEEP_EXPORTS folders and about EXPORT_MAX_BYTES stay, oldest
    removed first, also when exports run at the same time; file names stay inside the export folder."""
    root = tmp_path / "exports"
    app = Handlers(AppConfig(device="cpu", size=SIZE, offline=True, export_root=root))
    small = tmp_path / "small.png"
    Image.open(ASSET).resize((160, 107)).save(small)
    state, *_ = app.run_analysis(str(small), "mhsa", *MODEL)

    def make_exports() -> tuple[str, str]:  # what a user downloading both files writes (the zip made anew)
        app.store._zips.clear()
        return app.make_png(state, "turbo", 0.5, "map", None), app.make_zip(state, "turbo", 0.5, "map", "32")

    png, zipped = make_exports()
    one = _du(Path(zipped).parent)[1] + _du(Path(png).parent)[1]
    assert Path(png).parent.parent == root and Path(zipped).parent.parent == root
    worst: dict[str, int] = {"folders": 0, "bytes": 0}

    def export(n: int) -> None:
        for _ in range(n):
            png, zipped = make_exports()
            assert Path(png).is_file() and Path(zipped).is_file()  # the newest export is never removed
            folders = [p for p in root.iterdir() if p.is_dir()]
            worst["folders"] = max(worst["folders"], len(folders))
            worst["bytes"] = max(worst["bytes"], _du(root)[1])

    app.store.keep = 5  # the count bound
    export(8)
    assert worst["folders"] <= 5
    app.store.keep = 64  # the byte bound, with four threads exporting at once
    app.store.max_bytes = 6 * one
    worst.update(folders=0, bytes=0)
    threads = [threading.Thread(target=export, args=(3,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bound = app.store.max_bytes + 4 * one  # the budget, plus the exports written while others prune
    assert worst["bytes"] <= bound, (worst, bound)
    FIGURES["exports"] = (
        f"{1 + 8 + 4 * 3} exports of {one / 1e3:.0f} kB: at most {worst['folders']} folders and "
        f"{worst['bytes'] / 1e6:.2f} MB on disk (bounds: the store's folder count, its byte budget + exports in flight)"
    )


def _files(folder: Path) -> set[Path]:
    return {f for f in folder.rglob("*") if f.is_file()}


def test_gradio_copies_are_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gradio keeps a copy of every upload and output file; they are deleted once ATTNVIZ_CACHE_TTL old, and all
    of them when the server stops (the example photos' copies stay: one each, whatever the traffic)."""
    upload = tmp_path / "upload.png"
    Image.open(ASSET).rotate(90, expand=True).save(upload)  # not one of the examples
    made = {}
    short = 10  # long enough that a loaded machine still reads the upload before Gradio deletes it (1 s was not)
    for ttl in (short, 3600):
        cache = tmp_path / f"gradio-{ttl}"
        monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))  # read when the page is built
        with serve_app(config={"cache_ttl_s": ttl, "size": SIZE}) as (url, demo):
            assert demo.delete_cache == (min(ttl, 600), ttl)
            examples = _files(cache)
            check_ok(analyze_api(new_client(url), upload, "cbam"))
            made[ttl] = _files(cache) - examples
            assert made[ttl]
            if ttl == short:  # Gradio's scheduler runs every `short` seconds: poll for at most 90 s
                _wait_until(lambda c=cache, e=examples: _files(c) <= e, 90)
                assert _files(cache) <= examples, sorted(map(str, _files(cache) - examples))
        assert _files(cache) <= examples, sorted(map(str, _files(cache) - examples))  # all gone at stop
    FIGURES["gradio cache"] = (
        f"one request leaves {len(made[short])} files in Gradio's cache: deleted once ATTNVIZ_CACHE_TTL old "
        f"({short} s here), "
        f"and all of them at stop; the {len(examples)} example copies stay"
    )


def _wait_until(condition: Callable[[], bool], seconds: float) -> None:
    """Poll ``condition`` every 50 ms for at most ``seconds``."""
    pause = threading.Event()
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        pause.wait(0.05)
