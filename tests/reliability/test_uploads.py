"""Hostile and odd uploads, through the real server (gradio_client) and the CLI: each one gets a correct result or a
clear message, and a normal request right after it still succeeds."""

from __future__ import annotations

import json
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

import attnviz
from attnviz.capture.views import build_views, spatial_views
from attnviz.cli.main import main
from attnviz.pipeline.core import ModelCache
from attnviz.pipeline.image import decode_image
from tests.images import bad_files, exif_upright_png, odd_images, photo
from tests.reliability.conftest import FIGURES, MODEL, RENDER, STATUS, analyze_api, check_ok, write

ODD = odd_images()
BAD = bad_files()
#: What the status line (app) or result.json (CLI) must say was done to these odd images.
NOTES = {
    "gray16.png": "16-bit image scaled to 8 bits",
    "cmyk.jpg": "CMYK converted to RGB",
    "palette_transparent.png": "transparency composited on white",
    "animated.gif": "first frame of 3",
    "exif_rotated.jpg": "rotated by its EXIF orientation (6)",
}
SAME_CONTENT = ("predictions", "gallery", "big", "chart")  # fingerprint keys that depend on the pixels alone


def _normal(folder: Path) -> Path:
    path = folder / "normal.jpg"
    photo().save(path, quality=90)
    return path


def test_hostile_and_odd_uploads_through_the_server(client: Client, tmp_path: Path) -> None:
    normal = _normal(tmp_path)
    results: dict[str, dict[str, Any]] = {}
    messages: dict[str, str] = {}
    normal_ok = 0
    for name, data in [*ODD.items(), *((n, d) for n, (d, _) in BAD.items())]:
        path = write(tmp_path, name, data)
        if name in ODD:
            out = analyze_api(client, path, "spatial")
            results[name] = check_ok(out)
            shown = decode_image(data).image.size
            assert {Image.open(item["image"]["path"]).size for item in out[2]} == {shown}, name  # maps cover it
            if name in NOTES:
                assert f"note: {NOTES[name]}" in out[STATUS], out[STATUS]
        else:
            with pytest.raises(AppError) as err:
                analyze_api(client, path, "spatial")
            messages[name] = str(err.value)
            assert messages[name].startswith("Cannot use this image: "), messages[name]
            assert re.search(BAD[name][1], messages[name]), messages[name]
        check_ok(analyze_api(client, normal, "se"))  # the server still serves
        normal_ok += 1
    # The EXIF-rotated photo's maps and overlays are those of the same pixels stored upright: they line up.
    upright = check_ok(analyze_api(client, write(tmp_path, "upright.png", exif_upright_png()), "spatial"))
    assert {k: results["exif_rotated.jpg"][k] for k in SAME_CONTENT} == {k: upright[k] for k in SAME_CONTENT}
    FIGURES["uploads, server"] = (
        f"{len(ODD) + len(BAD)} inputs: {len(results)} correct results, {len(messages)} clear messages; "
        f"{normal_ok} normal requests, one after each, all answered"
    )


def test_hostile_and_odd_uploads_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    normal = _normal(tmp_path).read_bytes()
    inputs: list[Path] = []
    for name, data in [*ODD.items(), ("upright.png", exif_upright_png()), *((n, d) for n, (d, _) in BAD.items())]:
        inputs += [write(src, name, data), write(src, f"after_{name.replace('.', '_')}.jpg", normal)]
    code = main(["render", *map(str, inputs), *RENDER, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1  # some inputs were skipped
    for name, (_, match) in BAD.items():
        line = re.search(rf"{re.escape(name)}: skipped: (.*)", captured.err)
        assert line and re.search(match, line.group(1)), captured.err
    assert f"{len(inputs) - len(BAD)} of {len(inputs)} images rendered" in captured.out
    for path in inputs:
        if path.name.startswith("after_"):
            assert (out / path.stem / "result.json").is_file(), path.name  # the normal image after each one
    for name, data in ODD.items():
        sidecar = json.loads((out / Path(name).stem / "result.json").read_text())
        assert sidecar["image"]["size"] == list(decode_image(data).image.size)
        if name in NOTES:
            assert NOTES[name] in sidecar["image"]["notes"]
    rotated, upright = (sorted((out / stem / "maps").glob("*.npy")) for stem in ("exif_rotated", "upright"))
    assert len(rotated) == len(upright) > 0
    for a, b in zip(rotated, upright, strict=True):
        np.testing.assert_array_equal(np.load(a), np.load(b))
    FIGURES["uploads, CLI"] = (
        f"{len(ODD) + len(BAD)} inputs: {len(ODD)} rendered, {len(BAD)} skipped with a message; "
        f"the normal image after each one rendered ({len(inputs) // 2})"
    )


@pytest.mark.parametrize("attention", attnviz.list_attentions())
def test_constant_black_image_gives_finite_maps(attention: str) -> None:
    """All-black input: zero variance everywhere (SimAM, normalisation), equal logits; nothing may become NaN."""
    result = attnviz.analyze(ODD["all_black.png"], attention=attention, size=64, device="cpu", cache=ModelCache(1))
    assert all(np.isfinite(p) for _, p in result.predictions)
    assert all(torch.isfinite(m.data).all() for m in result.maps)
    for norm in ("map", "stage", "network", "absolute"):
        _, normed, ranges = spatial_views(build_views(result, None), norm)
        assert all(np.isfinite(m).all() for m in normed) and np.isfinite(ranges).all()


def test_upload_names_cannot_escape_the_upload_folder(served: tuple[str, Any], client: Client) -> None:
    """A multipart upload whose file name climbs out of Gradio's folder is stored inside it, and can be analyzed."""
    from gradio.utils import get_upload_folder

    url, _ = served
    target = Path(tempfile.gettempdir()) / f"attnviz_escape_{uuid.uuid4().hex}.jpg"
    name = "../" * 12 + str(target).lstrip("/")
    data = (Path(__file__).parents[2] / "assets" / "chelsea_cat.jpg").read_bytes()
    response = httpx.post(f"{url}gradio_api/upload", files=[("files", (name, data, "image/jpeg"))], timeout=60)
    assert response.status_code == 200, response.text
    (stored,) = response.json()
    assert not target.exists()
    assert Path(stored).resolve().is_relative_to(Path(get_upload_folder()).resolve()), stored
    check_ok(client.predict({"path": stored, "meta": {"_type": "gradio.FileData"}}, "se", *MODEL, api_name="/analyze"))
