"""``attnviz serve``: the web app (:mod:`attnviz.app`), registered without importing gradio until it runs.

attnviz serve [--host 127.0.0.1] [--port N] [--device cpu|cuda] [--model SPEC --weights W --labels L] [--offline]
"""

from __future__ import annotations

import argparse

from ..app.config import add_serve_arguments

__all__ = ["add_serve_parser"]


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``attnviz serve`` on the CLI's subparsers (its options are the app's: :mod:`attnviz.app.config`)."""
    p = sub.add_parser("serve", help="start the web app (http://127.0.0.1:7860)")

    def run(args: argparse.Namespace) -> int:
        from ..app.server import serve_from_args  # gradio loads here, when the app starts, not for every command

        return serve_from_args(args)

    add_serve_arguments(p)
    p.set_defaults(func=run)
