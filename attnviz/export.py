"""Write everything a Result shows to files: overlays with colorbars, charts, raw maps (.npy) and a JSON
sidecar; as a folder (the CLI) or a zip (the app). File names come from module paths, sanitised."""

from __future__ import annotations

import dataclasses
import io
import json
import platform
import zipfile
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .capture.kinds import detail_image
from .capture.maps import AttentionMap
from .capture.views import View, build_views, head_view, spatial_views, token_heads
from .pipeline.core import Result
from .render import encode_png, figure_png
from .render.naming import safe_name

__all__ = ["DisplaySettings", "export_files", "export_zip", "rendered", "write_folder"]

DisplaySettings = dict[str, Any]  # cmap, alpha, norm, topk, query, head, rollout
#: what result.json's ``settings.display`` records of them (a rerun of ``render`` with other values renders again)
DISPLAY_KEYS = ("cmap", "alpha", "norm", "topk", "query", "head", "rollout")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("attnviz", "torch", "torchvision", "numpy", "pillow", "matplotlib", "gradio"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def export_files(result: Result, settings: DisplaySettings) -> Iterator[tuple[str, bytes]]:
    """Yield (relative path, bytes) for every file of an export.

    ``settings``: ``cmap``, ``alpha``, ``norm``, ``topk`` (None for all channels), ``query`` ((x, y) fractions);
    optional ``head`` (the head token and window views show where they kept it, :func:`attnviz.capture.views.head_view`;
    ``None``: the head mean) and ``rollout`` (``{"fusion": ..., "discard_ratio": ...}``, default head mean with
    nothing discarded; ``None`` or ``False``: no rollout view); optional ``view``: a named spatial view
    (:data:`attnviz.capture.kinds.VIEW_NAMES`: ``"gate-weighted"`` for channel maps; ``None``: each kind's default).
    """
    cmap, alpha, norm = settings["cmap"], settings["alpha"], settings["norm"]
    rollout = settings.get("rollout", {})
    head = settings.get("head")
    views = build_views(
        result,
        settings.get("query"),
        rollout=rollout is not None and rollout is not False,
        fusion=(rollout or {}).get("fusion", "mean"),
        discard_ratio=(rollout or {}).get("discard_ratio", 0.0),
        view=settings.get("view"),
    )
    chosen = [_with_head(v, head) for v in views]  # token and window views: the chosen head where they have it
    views, heads = [v for v, _ in chosen], [h for _, h in chosen]
    image = np.asarray(result.image)
    files: list[str] = []

    def emit(path: str, data: bytes) -> tuple[str, bytes]:
        files.append(path)
        return path, data

    yield emit("image.png", encode_png(image))
    shown, normed, ranges = spatial_views(views, norm)
    for i, (v, m01, vr) in enumerate(zip(shown, normed, ranges, strict=True)):
        name = f"{i:02d}_{safe_name(v.block)}_{v.kind}.png"
        yield emit(f"overlays/{name}", figure_png(image, m01, cmap, alpha, v.title, vr, v.spatial_label))
    maps: list[AttentionMap | None] = [*result.maps, *[None] * (len(views) - len(result.maps))]
    for i, (v, m) in enumerate(zip(views, maps, strict=True)):  # one view per map, in order, then the rollout
        stem = f"{i:02d}_{safe_name(v.block)}_{v.kind}"
        yield emit(f"maps/{stem}.npy", _npy(v.data))
        if m is not None and m.raw is not None:  # a full-size or grouped gate: its map is a mean
            yield emit(f"maps/{stem}.full.npy", _npy(m.raw[0].numpy()))
        if m is not None and m.rows is not None:  # a token map kept as its head mean: the prefix rows per head
            yield emit(f"maps/{stem}.rows.npy", _npy(m.rows[0].numpy()))
        drawing = detail_image(v, settings.get("topk"))  # the page's detail drawing (attnviz.capture.kinds)
        if drawing is not None:
            yield emit(f"charts/{stem}.png", encode_png(drawing))
    for block, act in result.activations.items():
        yield emit(f"activations/{safe_name(block)}.npy", _npy(act))
    checks = getattr(result, "checks", None)  # attnviz.checks.check_result (render --checks) fills it
    if checks is not None:
        from .checks import check_files

        for path, data in check_files(result, settings):
            yield emit(path, data)
    sidecar = {
        "model": result.model,
        "settings": {
            **result.settings,
            "display": {k: settings.get(k) for k in DISPLAY_KEYS},
            **({"view": settings["view"]} if settings.get("view") else {}),
        },
        "query": settings.get("query"),
        "head": head,
        "rollout": None if rollout is None or rollout is False else {"fusion": "mean", "discard_ratio": 0.0, **rollout},
        "image": {"size": list(result.image.size), "input_size": list(result.input_size), "notes": result.notes},
        "predictions": [{"label": label, "probability": p} for label, p in result.predictions],
        "maps": [
            {
                "name": v.key,
                "block": v.block,
                "stage": v.stage,
                "kind": v.kind,
                "shape": list(v.data.shape),
                "view": v.spatial_label,
                **({"head": h} if h is not None else {}),
                "found_by": "rollout" if m is None else m.how,
                "computed_as": v.title if m is None else m.layout,
                **({"kept": m.kept} if m is not None and m.kept else {}),
                **(
                    {"grid": list(v.grid), "prefix": int(v.data.shape[-1]) - v.grid[0] * v.grid[1]}
                    if v.kind == "token" and v.grid
                    else {}
                ),
                **({"window": _layout(v)} if v.window is not None else {}),
                # queries on another grid than the keys (N x M): the queries' grid and prefix
                **(
                    {"query_grid": list(v.qgrid), "query_prefix": int(v.data.shape[-2]) - v.qgrid[0] * v.qgrid[1]}
                    if v.kind == "token" and v.qgrid
                    else {}
                ),
            }
            for v, m, h in zip(views, maps, heads, strict=True)
        ],
        "timings_ms": result.timings,
        "warning": result.warning,
        "capture_warning": result.capture_warning,
        "unclassified": [{"site": n, "shape": list(s), "why": w} for n, s, w in result.unclassified],
        "skipped": [{"site": n, "shape": list(s), "why": w} for n, s, w in result.skipped],
        "versions": _versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": list(files),
    }
    if checks is not None:
        sidecar.update(checks.json())
    yield "result.json", json.dumps(sidecar, indent=2).encode()


def _with_head(view: View, head: int | None) -> tuple[View, int | str | None]:
    """``view`` showing ``head`` where it can (:func:`attnviz.capture.views.head_view`), and what its overlay shows:
    the head, ``"mean"`` (the head mean of a view with heads), or ``None`` (a view without heads to choose)."""
    if token_heads(view) == 0:
        return view, None
    one = head_view(view, head)
    return one, head if one.spatial is not view.spatial else "mean"


def _layout(view: View) -> dict[str, Any]:
    """A window map's :class:`~attnviz.capture.windows.WindowLayout` as JSON: grid, window, shift, pad_first, and
    the windows per image."""
    layout = view.window
    assert layout is not None
    return {
        **{k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(layout).items()},
        "count": layout.count,
    }


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def export_zip(result: Result, settings: DisplaySettings, path: str | Path) -> Path:
    """Write the export as one zip file at ``path``."""
    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in export_files(result, settings):
            zf.writestr(name, data)
    return path


def write_folder(result: Result, settings: DisplaySettings, out: str | Path) -> list[Path]:
    """Write the export into the folder ``out`` (created); returns the files written."""
    out = Path(out)
    (out / "result.json").unlink(missing_ok=True)  # a previous export's: the folder is unfinished until the end
    written = []
    for name, data in export_files(result, settings):  # result.json last: without it (or cut short), unfinished
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written.append(target)
    return written


def rendered(folder: str | Path, expect: dict[str, Any], checks: bool = False) -> bool:
    """Whether ``folder`` holds a complete export of the run described by ``expect``, so a rerun can skip it:
    its result.json (written last) parses, every file it lists is there, its ``settings`` agree with ``expect`` on
    each key given (e.g. arch, attention, weights, size, display), and with ``checks`` it holds the checks."""
    try:
        sidecar = json.loads((Path(folder) / "result.json").read_text())
        settings, files = sidecar["settings"], sidecar["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not isinstance(settings, dict) or not isinstance(files, list) or (checks and "checks" not in sidecar):
        return False
    if any(settings.get(k) != v for k, v in expect.items()):
        return False
    return all(isinstance(f, str) and (Path(folder) / f).is_file() for f in files)
