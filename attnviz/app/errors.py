"""User errors: a message for the page and one line in the server log (no traceback: the user can fix them; Gradio
still prints full tracebacks for every other exception, the app's own faults)."""

from __future__ import annotations

import logging

import gradio as gr

__all__ = ["log", "user_error"]

log = logging.getLogger("attnviz.app")


def user_error(message: str) -> gr.Error:
    """A ``gr.Error`` showing ``message`` on the page, logged here as one warning line without a traceback.

    Usage: ``raise user_error("Upload an image first.") from None``.
    """
    log.warning("user error: %s", " ".join(message.split()))
    return gr.Error(message, print_exception=False)
