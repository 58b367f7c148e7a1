"""Shared fixtures: the devices to run on (CPU always, CUDA when one is present) and a seeded RNG."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import torch

#: Device parameters: the same assertions on the CPU everywhere and on CUDA where there is a GPU. The "cuda"
#: one carries the ``cuda`` mark (``pytest -m cuda`` selects it) and is skipped without a GPU.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: none here")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def free_port() -> int:
    """A TCP port free on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_app(**launch_kwargs: Any) -> Iterator[tuple[str, Any]]:
    """The real Gradio app (``attnviz.app``: offline, CPU, the demo network first) on a free loopback port, launched
    with ``launch_kwargs``: yields (url, demo). ``config`` in ``launch_kwargs`` replaces fields of the configuration."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import dataclasses
    import tempfile
    from pathlib import Path

    from attnviz.app import AppConfig, Handlers, build_demo, launch

    exports = Path(tempfile.mkdtemp(prefix="attnviz-test-exports-"))
    config = AppConfig(device="cpu", offline=True, port=free_port(), export_root=exports)
    config = dataclasses.replace(config, **launch_kwargs.pop("config", {}))
    handlers = Handlers(config)
    demo = launch(build_demo(config, handlers), config, handlers, prevent_thread_lock=True, quiet=True, **launch_kwargs)
    demo.handlers = handlers  # tests read its configuration and export store
    port = config.port
    try:
        yield f"http://127.0.0.1:{port}/", demo
    finally:
        demo.close()


@pytest.fixture(scope="session")
def app_server() -> Iterator[tuple[str, Any]]:
    """The real Gradio app, served on a free loopback port for the whole session: (url, demo)."""
    with serve_app() as server:
        yield server


@pytest.fixture(scope="session")
def app_url(app_server: tuple[str, Any]) -> str:
    return app_server[0]


def draw_cutouts(root, classes: dict[str, tuple[str, str]], n: int = 12, seed: int = 0) -> None:
    """``root/objects/<class>/<name><i>.png``: ``n`` drawn RGBA cut-outs per class, ``classes`` mapping each class to
    (file-name stem, shape: ellipse, rectangle or polygon). The split is a hash of the file name; the stems disc,
    square and triangle with 12 instances put instances of each class in train, val and test."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for cls, (name, shape) in classes.items():
        (root / "objects" / cls).mkdir(parents=True)
        for i in range(n):
            im = Image.new("RGBA", (48, 40), (0, 0, 0, 0))
            colour = (*(int(v) for v in rng.integers(0, 256, size=3)), 255)
            draw = ImageDraw.Draw(im)
            if shape == "polygon":
                draw.polygon([(2, 38), (24, 2), (46, 38)], fill=colour)
            else:
                getattr(draw, shape)((2, 2, 45, 37), fill=colour)
            im.save(root / "objects" / cls / f"{name}{i}.png")


@pytest.fixture(scope="session")
def cutouts():
    """:func:`draw_cutouts`, for tests that need cut-outs of other class names."""
    return draw_cutouts


@pytest.fixture(scope="session")
def scene_root(tmp_path_factory: pytest.TempPathFactory):
    """A small objects/ + distractors/ folder of drawn RGBA cut-outs (3 shape classes, 12 instances each)."""
    from PIL import Image, ImageDraw

    root = tmp_path_factory.mktemp("scenes")
    draw_cutouts(
        root, {"disc": ("disc", "ellipse"), "square": ("square", "rectangle"), "triangle": ("triangle", "polygon")}
    )
    (root / "distractors").mkdir()
    for i in range(3):
        im = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
        ImageDraw.Draw(im).line((0, 0, 19, 19), fill=(255, 255, 255, 255), width=3)
        im.save(root / "distractors" / f"line{i}.png")
    return root
