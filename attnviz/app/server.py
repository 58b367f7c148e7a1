"""``attnviz serve`` (and ``python app.py``): make the first network available, build the page, launch it with the
safe defaults (loopback, no share link, analytics off, bounded queue, upload limits)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any

import gradio as gr

from ..pipeline.core import default_device
from ..pipeline.image import MAX_BYTES
from .config import AppConfig, add_serve_arguments
from .handlers import Handlers
from .layout import build_demo

__all__ = ["config_from_args", "launch", "main", "serve", "serve_from_args", "startup"]


def launch(demo: gr.Blocks, config: AppConfig, handlers: Handlers | None = None, **kwargs: Any) -> gr.Blocks:
    """Queue and launch ``demo`` as ``config`` says: its bind address (loopback unless told otherwise), no share
    link, the upload limit, a bounded queue (one request more is refused at once and the page says the app is
    busy), at most ``config.max_sessions`` sessions' results kept, errors shown to the user."""
    demo.queue(max_size=config.queue_size, default_concurrency_limit=1)
    if handlers is not None:
        handlers.server_name = config.host
    demo.launch(
        server_name=config.host,
        server_port=config.port,
        share=False,
        show_error=True,
        max_file_size=MAX_BYTES,
        state_session_capacity=config.max_sessions,
        footer_links=["gradio", "settings"],
        **kwargs,
    )
    return demo


def startup(config: AppConfig) -> AppConfig:
    """The configuration the page opens with: unless offline (or a network was asked for), the ImageNet attention
    network ``config.startup_network``, from the Hugging Face cache or downloaded now with progress in the terminal;
    when that cannot happen (offline, no network within a few seconds), the demo network, and the page says why.
    This is the only connection the app makes by itself."""
    from ..sources.timm import TIMM_ATTENTION, build_timm_model, timm_availability

    name = config.startup_network
    if name is None or config.model != AppConfig.model or config.served:
        return config  # the user chose what to open on
    demo_line = "the page opened on the **demo network** (8 categories, trained by attnviz)"
    if config.offline:
        from ..sources.hub import hf_cached_file

        if hf_cached_file(f"timm/{name}", "model.safetensors") is None:
            note = f"Offline: {demo_line}; {name} (ImageNet) is not in the Hugging Face cache."
            return dataclasses.replace(config, note=note)
    else:
        ok, reason = timm_availability(name)  # the cache, else one short probe of the hub
        if not ok:
            return dataclasses.replace(config, note=f"{demo_line}: {name} (ImageNet) is unavailable ({reason}).")
        print(f"attnviz: making {name} (ImageNet) available ({reason})", file=sys.stderr, flush=True)
    try:
        build_timm_model(name, pretrained=True)  # downloads once (progress bar), then reads the cache
    except ValueError as e:
        return dataclasses.replace(config, note=f"{demo_line}: {name} could not be loaded ({e}).")
    attention = TIMM_ATTENTION.get(name)
    note = f"Opened on **{name}**, pretrained on ImageNet (1000 classes), with its own attention ({attention})."
    return dataclasses.replace(config, model=name, attention=None, weights="imagenet", note=note)


def serve(config: AppConfig, **launch_kwargs: Any) -> gr.Blocks:
    """Start the app for ``config`` (after :func:`startup`)."""
    if config.offline:  # also for code that reads the environment (huggingface_hub, torch.hub through attnviz)
        os.environ["ATTNVIZ_OFFLINE"] = "1"
        os.environ["HF_HUB_OFFLINE"] = "1"
    config = startup(dataclasses.replace(config, device=config.device or default_device()))
    handlers = Handlers(config)
    return launch(build_demo(config, handlers), config, handlers, **launch_kwargs)


def config_from_args(args: argparse.Namespace) -> AppConfig:
    """The configuration the command line asks for (on top of the environment's)."""
    overrides: dict[str, Any] = {"host": args.host}
    port = args.port or int(os.environ.get("GRADIO_SERVER_PORT", 7860))
    overrides["port"] = port
    for key in ("device", "size", "weights", "labels"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.model is not None:
        overrides["model"] = args.model
        overrides["served"] = args.model
    if args.attention is not None:
        overrides["attention"] = None if args.attention == "none" else args.attention
    if args.offline:
        overrides["offline"] = True
    return AppConfig.from_env(**overrides)


def serve_from_args(args: argparse.Namespace) -> int:
    """``attnviz serve [...]`` and ``python app.py [...]``, once parsed (options: :func:`add_serve_arguments`)."""
    serve(config_from_args(args))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python app.py [...]``: the same as ``attnviz serve [...]``."""
    parser = argparse.ArgumentParser(prog="app.py", description="attnviz web app")
    add_serve_arguments(parser)
    return serve_from_args(parser.parse_args(argv))
