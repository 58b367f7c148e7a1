"""The Dataset tab reads a stats folder typed into the page: what it answers must not depend on, or name, any file
outside that folder (a crafted summary.json would otherwise probe the server's disk)."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from attnviz.app import AppConfig, Handlers


def _stats_folder(folder: Path, listed: list[str]) -> Path:
    """A finished-looking stats folder: one figure and one table inside, plus figures named ``listed``."""
    (folder / "figures").mkdir(parents=True)
    (folder / "tables").mkdir()
    Image.new("RGB", (120, 80), (200, 30, 30)).save(folder / "figures" / "inside.png")
    (folder / "tables" / "blocks.csv").write_text("block,mean\nlayer1,0.5\n")
    summary = {
        "settings": {"model": "resnet18", "attention": "se", "data": "scenes"},
        "images": 6,
        "figures": [{"title": "inside", "file": "figures/inside.png"}]
        + [{"title": f"listed {i}", "file": name} for i, name in enumerate(listed)],
        "tables": {"blocks": {"csv": "tables/blocks.csv", "parquet": "tables/blocks.parquet", "rows": 1}},
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def _answer(app: Handlers, folder: Path) -> tuple[str, list[str]]:
    """(headline text or error message, figure titles) of the Dataset tab for ``folder``."""
    try:
        text, figures, _, _ = app.open_report(str(folder))
    except gr.Error as e:
        return str(e), []
    return text.replace(str(folder.resolve()), "FOLDER"), [title for _, title in figures]


def test_outside_files_neither_change_nor_appear_in_the_answer(tmp_path: Path) -> None:
    """An outside file that exists and one that does not get the same answer, which names neither; files inside
    are shown; a link inside that leads out is not."""
    app = Handlers(AppConfig(device="cpu", offline=True))
    secret = tmp_path / "secret.png"
    Image.new("RGB", (40, 40)).save(secret)
    absent = tmp_path / "definitely-not-here.png"
    answers = {}
    for name, target in (("exists", secret), ("absent", absent)):
        listed = [str(target), f"../{target.name}", f"figures/../../{target.name}", "/root/definitely-not-here"]
        folder = _stats_folder(tmp_path / name, listed)
        (folder / "figures" / "link.png").symlink_to(target)
        summary = json.loads((folder / "summary.json").read_text())
        summary["figures"].append({"title": "a link out", "file": "figures/link.png"})
        (folder / "summary.json").write_text(json.dumps(summary))
        answers[name] = _answer(app, folder)
    text, titles = answers["exists"]
    assert answers["absent"] == answers["exists"], answers
    assert titles == ["inside"], answers
    assert "definitely-not-here" not in text and "secret" not in text and "/root" not in text, text
    assert "5 file(s) listed in summary.json lie outside this folder" in text, text


@pytest.mark.parametrize("name", ["/etc/hostname", "../../../../etc/hostname", "C:\\Windows\\win.ini", "a\0b"])
def test_a_name_leading_out_is_never_echoed(tmp_path: Path, name: str) -> None:
    """One crafted entry, whatever its form: the folder still opens, and the name is not in the answer."""
    app = Handlers(AppConfig(device="cpu", offline=True))
    text, titles = _answer(app, _stats_folder(tmp_path / "stats", [name]))
    assert titles == ["inside"] and name not in text and "hostname" not in text, text
