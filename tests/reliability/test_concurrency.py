"""Concurrency: many clients at once each get their own result; no hook is left behind; a full queue refuses more
requests at once with a clear message instead of hanging."""

from __future__ import annotations

import importlib
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import handle_file
from gradio_client.utils import QueueError
from PIL import Image

import attnviz.app.handlers as handlers
from attnviz.capture.hooks import model_lock
from tests.conftest import serve_app
from tests.reliability.conftest import FIGURES, MODEL, analyze_api, check_ok, hook_count, new_client

pipeline = importlib.import_module("attnviz.pipeline.core")
ASSETS = Path(__file__).parents[2] / "assets"
ATTENTIONS = ["cbam", "se", "mhsa", "da"]  # at most the model cache's size: no model is rebuilt meanwhile
CLIENTS, REQUESTS = 16, 10


def _images(folder: Path) -> list[Path]:
    """The example photos, small (the property does not depend on their size)."""
    paths = []
    for src in sorted(ASSETS.glob("*.jpg")):
        im = Image.open(src).convert("RGB")
        im.thumbnail((96, 96))
        paths.append(folder / f"{src.stem}.png")
        im.save(paths[-1])
    return paths


def _wait(condition: Any, what: str, timeout: float = 120.0) -> None:
    """Wait until ``condition()`` holds (polling); fail naming ``what`` after ``timeout`` seconds."""
    event = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        event.wait(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow
def test_16_clients_get_their_own_results(served: tuple[str, Any], tmp_path: Path) -> None:
    url, _ = served
    combos = [(image, attention) for image in _images(tmp_path) for attention in ATTENTIONS]
    alone = new_client(url)
    reference = {combo: check_ok(analyze_api(alone, *combo)) for combo in combos}  # each request made alone

    def session(k: int) -> list[tuple[tuple[Path, str], dict]]:
        client = new_client(url)
        plan = [combos[(k + 7 * i) % len(combos)] for i in range(REQUESTS)]  # mixes images and attention types
        return [(combo, check_ok(analyze_api(client, *combo))) for combo in plan]

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = [a for session_answers in pool.map(session, range(CLIENTS)) for a in session_answers]
    assert len(answers) == CLIENTS * REQUESTS
    wrong = [(combo[0].name, combo[1]) for combo, fingerprint in answers if fingerprint != reference[combo]]
    assert not wrong, f"{len(wrong)} answers differ from the same request made alone: {wrong[:5]}"
    models = pipeline.DEFAULT_CACHE.models()
    assert {m.attention for m in models} >= set(ATTENTIONS)
    for model in models:
        assert hook_count(model) == 0
        lock = model_lock(model)
        assert lock.acquire(blocking=False)
        lock.release()
    FIGURES["concurrency"] = (
        f"{CLIENTS} clients x {REQUESTS} requests ({len(combos)} image/attention mixes): {len(answers)} answered, "
        f"each equal to the same request made alone; 0 hooks left on {len(models)} cached models"
    )


def test_a_full_queue_refuses_at_once_with_a_busy_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One request runs (held on a gate), two wait (queue_size=2): the next is refused at once, and the page's
    message for that refusal says the app is busy. Once the gate opens, all three are answered."""
    image = _images(tmp_path)[0]
    entered, gate = threading.Event(), threading.Event()
    analyze = handlers.analyze

    def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        gate.wait(120)
        return analyze(*args, **kwargs)

    monkeypatch.setattr(handlers, "analyze", held)
    with serve_app(config={"queue_size": 2, "max_sessions": 2}) as (url, demo):
        clients = [new_client(url) for _ in range(5)]
        jobs = [clients[0].submit(handle_file(str(image)), "spatial", *MODEL, api_name="/analyze")]
        _wait(entered.is_set, "the first request to start")
        jobs += [c.submit(handle_file(str(image)), "spatial", *MODEL, api_name="/analyze") for c in clients[1:3]]
        _wait(lambda: len(demo._queue) == 2, "two requests to wait in the queue")
        refused = clients[3].submit(handle_file(str(image)), "spatial", *MODEL, api_name="/analyze")
        with pytest.raises(QueueError, match="Queue is full! Please try again"):
            refused.result(timeout=60)  # refused at once: a TimeoutError here would mean it hangs
        raw = httpx.post(
            f"{url}gradio_api/queue/join",
            json={"data": [None, "spatial"], "fn_index": 0, "session_hash": "raw", "event_data": None},
            timeout=60,
        )
        assert raw.status_code == 503 and "Queue is full. Max size is 2" in raw.json()["detail"], raw.text
        page = httpx.get(url, timeout=60).text
        scripts = re.findall(r'src="([^"]+\.js)"', page)
        bundle = "".join(httpx.get(httpx.URL(url).join(s), timeout=60).text for s in scripts)
        assert "This application is currently busy. Please try again." in bundle  # what the page shows on 503
        gate.set()
        for job in jobs:
            check_ok(job.result(timeout=120))
        check_ok(analyze_api(clients[4], image, "spatial"))  # served again once the queue has room
        assert len(demo.state_holder.session_data) <= 2  # results kept for at most max_sessions sessions
