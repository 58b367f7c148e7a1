"""The app's configuration: one object, made from the command line or the environment, passed to ``build_demo``.

Nothing here reads or writes global state: the defaults are safe (loopback, bounded queue and caches), and
whether a checkpoint path typed into the page may be read from the server's disk follows from the bind address.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = ["LOOPBACK", "STARTUP_NETWORK", "AppConfig", "add_serve_arguments"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")

#: The ImageNet attention network the app opens on when it may download (or has it cached): GCNet's global
#: context softmax is a spatial map per block, so the first screen shows heatmaps (Cao et al., ICCVW 2019).
STARTUP_NETWORK = "gcresnet50t.ra2_in1k"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


@dataclass(frozen=True)
class AppConfig:
    """Everything the app is configured with.

    Attributes:
        host, port: where to listen (default 127.0.0.1: this machine only).
        device: ``cpu`` or ``cuda`` (``None``: CUDA when available).
        size: short side the model sees (``None``: the weights' own).
        model, attention, weights: the network, attention type and weights selected on the first screen.
        served: a network given with ``--model SPEC`` (a user's file, a timm or torchvision name): listed first.
        labels: class names of the served network.
        offline: never download weights (``--offline``, ``ATTNVIZ_OFFLINE=1``, ``HF_HUB_OFFLINE=1``).
        startup_network: the ImageNet network made available at start unless offline (``None``: none).
        queue_size, max_sessions, cache_ttl_s: request queue, sessions whose result is kept, Gradio's file TTL.
        export_root, keep_exports, export_max_bytes: the export store's folder and bounds.
        note: a line shown on the page under the title (e.g. why the app opened on the demo).
    """

    host: str = "127.0.0.1"
    port: int | None = None
    device: str | None = None
    size: int | None = None
    model: str = "resnet18"
    attention: str | None = "cbam"
    weights: str = "demo"
    served: str | None = None
    labels: str | None = None
    offline: bool = False
    startup_network: str | None = STARTUP_NETWORK
    queue_size: int = 32
    max_sessions: int = 64
    cache_ttl_s: int = 3600
    export_root: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "attnviz-exports")
    keep_exports: int = 64
    export_max_bytes: int = 1 << 30
    note: str = ""

    @classmethod
    def from_env(cls, **overrides: object) -> AppConfig:
        """Defaults, then the ``ATTNVIZ_*`` environment variables, then ``overrides``."""
        on = {"1", "true", "yes", "on"}
        offline = any(os.environ.get(v, "").strip().lower() in on for v in ("ATTNVIZ_OFFLINE", "HF_HUB_OFFLINE"))
        base = cls(
            device=os.environ.get("ATTNVIZ_DEVICE") or None,
            size=_env_int("ATTNVIZ_SIZE", 0) or None,
            offline=offline,
            queue_size=_env_int("ATTNVIZ_QUEUE_SIZE", 32),
            max_sessions=_env_int("ATTNVIZ_MAX_SESSIONS", 64),
            cache_ttl_s=_env_int("ATTNVIZ_CACHE_TTL", 3600),
            export_max_bytes=_env_int("ATTNVIZ_EXPORT_MAX_BYTES", 1 << 30),
        )
        return replace(base, **overrides)  # type: ignore[arg-type]

    @property
    def loopback(self) -> bool:
        """Whether the app is bound to this machine only."""
        return self.host in LOOPBACK

    @property
    def typed_paths(self) -> bool:
        """Whether a checkpoint path typed into the page may be read: only while bound to loopback (the person
        typing is at this machine); the request handler also checks the address the server really listens on."""
        return self.loopback

    def load_options(self, arch: str) -> dict[str, object]:
        """What :func:`attnviz.load_model` gets besides spec and weights for a request on ``arch``."""
        options: dict[str, object] = {"offline": True} if self.offline else {}
        if arch == self.served and self.labels:
            options["labels"] = self.labels
        from ..sources.spec import is_own

        if arch == self.served and self.size and not is_own(arch):
            options["input_size"] = self.size  # --size declares the input size of a network not attnviz's
        return options


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``attnviz serve`` and ``python app.py`` (here, beside the configuration they make, so that the
    command line registers them without importing gradio)."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860 or GRADIO_SERVER_PORT)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: CUDA when available")
    p.add_argument("--size", type=int, default=None, help="short side the model sees (default: the weights')")
    p.add_argument(
        "--model",
        "--arch",
        dest="model",
        default=None,
        help="network shown first: resnet18..resnet101, timm:NAME, torchvision:NAME, path/file.py:fn, pkg.mod:fn",
    )
    p.add_argument("--attention", default=None, help="attention type shown first (default cbam)")
    p.add_argument("--weights", default=None, help="demo | imagenet | random | a checkpoint path")
    p.add_argument("--labels", default=None, help="class names of --model: one per line, or JSON")
    p.add_argument("--offline", action="store_true", help="never download (also ATTNVIZ_OFFLINE=1, HF_HUB_OFFLINE=1)")
