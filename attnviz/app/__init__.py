"""attnviz's web app: upload an image, pick a network and an attention type, see each block's own weights.

    attnviz serve [--host 127.0.0.1] [--port 7860] [--device cpu|cuda] [--model SPEC --weights W --labels L]
                  [--offline]

One file, one job: ``config`` (AppConfig and the serve options), ``layout`` (build_demo: components and wiring),
``handlers`` (the events, calling the library), ``components`` (Gradio components tuned for attnviz), ``files`` (the
export store), ``server`` (start-up network, launch, ``python app.py``).

Only ``config`` is imported with the package: the names that need gradio load on first use, so the command line
reads the serve options without loading gradio.
"""

import importlib
import os
from typing import TYPE_CHECKING, Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry, no checks

from .config import AppConfig

if TYPE_CHECKING:
    from .handlers import Handlers
    from .layout import build_demo
    from .server import launch, main, serve

__all__ = ["AppConfig", "Handlers", "build_demo", "launch", "main", "serve"]

_GRADIO = {"Handlers": "handlers", "build_demo": "layout", "launch": "server", "main": "server", "serve": "server"}


def __getattr__(name: str) -> Any:
    """``Handlers``, ``build_demo``, ``launch``, ``main``, ``serve``: imported (with gradio) on first use."""
    if name in _GRADIO:
        return getattr(importlib.import_module(f".{_GRADIO[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
