"""The attnviz command: list, info, render (files and folders, bad files skipped with a message)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attnviz.cli.main import main
from tests.images import ASSET


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "mhsa     conv      4" in out and "Srinivas et al., CVPR 2021 (BoTNet)" in out


def test_every_verb_parses_without_loading_gradio() -> None:
    """The parser reads ``serve``'s options from the app's config without importing gradio (nor the app's pages):
    ``attnviz list`` and every verb's --help stay quick."""
    code = (
        "import sys, contextlib, io\n"
        "from attnviz.cli.main import VERBS, main\n"
        "assert main(['list']) == 0\n"
        "for verb in ['render', 'inspect', 'train', 'eval', 'compare', 'stats', 'serve']:\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main([verb, '--help'])\n"
        "pages = ('attnviz.app.handlers', 'attnviz.app.layout', 'attnviz.app.server')\n"
        "print(len(VERBS), [m for m in sys.modules if m.startswith('gradio') or m in pages])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "9 []"


def test_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--arch", "resnet18", "--attention", "eca", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "resnet18: 11.690 M parameters without attention" in out
    assert "eca" in out and "channel(64,)" in out and "channel(512,)" in out


def test_render_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(ASSET, src / "cat.jpg")
    shutil.copy(ASSET, src / "sub" / "cat.jpg")  # same name twice: must not overwrite
    (src / "notes.png").write_text("not an image")
    code = main(["render", str(src), "--attention", "spatial", "--out", str(tmp_path / "out"), "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1  # one input was skipped
    assert "notes.png: skipped: this file is not an image" in captured.err
    assert "2 of 3 images rendered" in captured.out
    for name in ("cat", "cat_"):
        folder = tmp_path / "out" / name
        sidecar = json.loads((folder / "result.json").read_text())
        assert sidecar["model"]["attention"] == "spatial"
        assert len(list((folder / "overlays").glob("*.png"))) == 8
        assert len(list((folder / "maps").glob("*.npy"))) == 8


def test_render_nothing_found(tmp_path: Path) -> None:
    assert main(["render", str(tmp_path), "--attention", "se", "--out", str(tmp_path / "o")]) == 2
