"""Shared fixtures: the devices to run on (CPU always, CUDA when one is present) and a seeded RNG."""

from __future__ import annotations

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def app_url() -> str:
    """The real Gradio app, served on a free loopback port for the whole session."""
    import os
    import socket

    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import app

    app.DEVICE = "cpu"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = app.launch(app.build_demo(), "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()
