"""attnviz's web app: upload an image, pick a network and an attention type, see each block's own weights.

    attnviz serve [--host 127.0.0.1] [--port 7860] [--device cpu|cuda] [--model SPEC --weights W --labels L]
                  [--offline]

One file, one job: ``config`` (AppConfig), ``layout`` (build_demo: components and wiring), ``handlers`` (the
events, calling the library), ``components`` (Gradio components tuned for attnviz), ``files`` (the export store),
``server`` (start-up network, launch, the command line).
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry, no checks

from .config import AppConfig
from .handlers import Handlers
from .layout import build_demo
from .server import launch, main, serve

__all__ = ["AppConfig", "Handlers", "build_demo", "launch", "main", "serve"]
