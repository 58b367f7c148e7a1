"""The reliability suite's shared pieces: the served app, result fingerprints, hook counts, and the figures the suite
prints at its end (inputs tried and their outcomes, requests served, memory drift, disk use)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client, handle_file
from torch import nn

from tests.conftest import serve_app

SIZE = 64  # short side the served model sees: the properties tested here do not depend on it
#: ``attnviz render`` options: a model with few, cheap overlays, files written in this process (no pool to start).
RENDER = ("--attention", "mhsa", "--device", "cpu", "--workers", "0")
MODEL = ("resnet18", "random")  # arch and weights: nor on trained weights (any weights file may be absent)
FIGURES: dict[str, str] = {}  # name -> one line, printed after the run (see pytest_terminal_summary)
_TIMING = re.compile(r"\d+ ms")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("attnviz reliability figures")
        for name, line in FIGURES.items():
            terminalreporter.write_line(f"{name}: {line}")


@pytest.fixture(scope="package")
def served() -> Iterator[tuple[str, Any]]:
    """The real app on a loopback port, its model at a short side of ``SIZE`` pixels: (url, demo)."""
    with serve_app(config={"size": SIZE}) as server:
        yield server


def new_client(url: str) -> Client:
    """A gradio_client session; files stay on the server (its paths are local here, and name their content)."""
    return Client(url, verbose=False, download_files=False)


@pytest.fixture(scope="package")
def client(served: tuple[str, Any]) -> Client:
    return new_client(served[0])


def analyze_api(client: Client, image: str | Path, attention: str, *model: str) -> tuple:
    """One call of the public ``/analyze`` endpoint: image, attention, arch and weights (default ``MODEL``)."""
    return client.predict(handle_file(str(image)), attention, *(model or MODEL), api_name="/analyze")


#: Where the status line is among the Image tab's outputs (predictions, note, gallery, block, view, chart, detail,
#: status, head choice).
STATUS = 7


def check_ok(out: tuple) -> dict[str, Any]:
    """Assert ``out`` is a complete answer (5 finite predictions, overlays on disk, a status) and return its
    fingerprint: everything it shows except timings. Gradio names each output file by a hash of its content,
    so equal fingerprints mean equal predictions, overlays, charts and details."""
    predictions, _note, gallery, _block, big, chart, detail, status, _head = out
    chart = chart and chart.get("value", chart)  # a chart update carries its table as its value
    confidences = [(c["label"], c["confidence"]) for c in predictions["confidences"]]
    assert len(confidences) == 5 and all(math.isfinite(p) and 0 <= p <= 1 for _, p in confidences), predictions
    assert gallery and all(Path(item["image"]["path"]).stat().st_size > 0 for item in gallery)
    assert "device: cpu" in status and "nan" not in status.lower()
    chart = chart or {"columns": ["weight"], "data": []}
    column = chart["columns"].index("weight")
    assert all(math.isfinite(row[column]) for row in chart["data"]), chart["data"]
    return {
        "predictions": confidences,
        "gallery": [(Path(item["image"]["path"]).parent.name, item["caption"]) for item in gallery],
        "big": big and Path(big["path"]).parent.name,
        "detail": detail and Path(detail["path"]).parent.name,
        "chart": chart["data"],
        "status": [line for line in status.split("\n\n") if not _TIMING.search(line)],
    }


def hook_count(model: nn.Module) -> int:
    """Forward and pre-forward hooks registered anywhere in ``model``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def write(folder: Path, name: str, data: bytes) -> Path:
    """``data`` written to ``folder/name``."""
    path = folder / name
    path.write_bytes(data)
    return path
