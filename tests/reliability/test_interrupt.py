"""Ctrl-C and reruns of the batch commands: an interrupted ``render`` or ``stats`` says one line and exits 130 (no
traceback, no writer process left), and ``render`` into a folder it already filled skips the finished images."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attnviz.cli.main import main as cli

ROOT = Path(__file__).parents[2]
RENDER = ["--model", "resnet18", "--attention", "mhsa", "--weights", "random", "--size", "48", "--device", "cpu"]
INTERRUPTED = re.compile(r"^attnviz render: interrupted; (\d+) of (\d+) images written to ")


def _images(folder: Path, n: int, classes: int = 1, side: int = 64) -> Path:
    """``n`` small noise images per class (``classes`` subfolders when more than one)."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        sub = folder / f"class{c}" if classes > 1 else folder
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(sub / f"img{i:03d}.png")
    return folder


def _terminal_signals() -> None:
    """In the child: SIGINT and SIGQUIT as a terminal's foreground job has them. A shell starts background jobs
    with both ignored, and an ignored disposition is inherited, so a suite run with ``&`` would otherwise test a
    process that cannot be interrupted at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def _start(args: list[str]) -> subprocess.Popen:
    """``python -m attnviz ARGS`` in its own process group (Ctrl-C in a terminal goes to the whole group)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    return subprocess.Popen(
        [sys.executable, "-m", "attnviz", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_terminal_signals,
    )


def _ctrl_c(proc: subprocess.Popen) -> tuple[int, str, str]:
    """SIGINT to the process group, as a terminal's Ctrl-C sends it; (exit code, stdout, stderr)."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc.returncode, out, err


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _complete(out: Path) -> set[str]:
    """The image folders in ``out`` whose result.json lists only files that are there."""
    done = set()
    for sidecar in out.glob("*/result.json"):
        files = json.loads(sidecar.read_text())["files"]
        if all((sidecar.parent / f).is_file() for f in files):
            done.add(sidecar.parent.name)
    return done


def test_ctrl_c_during_render_says_one_line_and_a_rerun_resumes(tmp_path: Path) -> None:
    images, out = _images(tmp_path / "images", 24), tmp_path / "out"
    proc = _start(["render", str(images), "--out", str(out), *RENDER, "--workers", "2"])
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the first image written: the model runs, the writer processes too
    assert first.startswith("[1/24]"), first + proc.communicate()[1]
    code, _, err = _ctrl_c(proc)
    assert code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = err.strip().splitlines()
    match = INTERRUPTED.match(lines[-1])
    assert match and int(match[2]) == 24, err
    written = int(match[1])
    assert 1 <= written < 24 and len(_complete(out)) == written, (err, sorted(_complete(out)))
    deadline = time.monotonic() + 10
    while _group_alive(proc.pid) and time.monotonic() < deadline:  # the writer processes are gone with it
        time.sleep(0.1)
    assert not _group_alive(proc.pid)

    rerun = subprocess.run(
        [sys.executable, "-m", "attnviz", "render", str(images), "--out", str(out), *RENDER, "--workers", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"{written} of 24 images already rendered in {out}/: skipped" in rerun.stderr, rerun.stderr
    assert f"{24 - written} of {24 - written} images rendered" in rerun.stdout, rerun.stdout
    assert len(_complete(out)) == 24


def test_ctrl_c_during_stats_says_one_line(tmp_path: Path) -> None:
    data, out = _images(tmp_path / "data", 60, classes=2, side=48), tmp_path / "out"
    args = ["--arch", "resnet18", "--attention", "se", "--weights", "random", "--size", "48", "--device", "cpu"]
    proc = _start(["stats", str(data), *args, "--out", str(out), "--chunk-size", "2", "--batch-size", "2"])
    deadline = time.monotonic() + 300
    while not list((out / "shards").glob("chunk-*.pt")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "stats finished before it could be interrupted"
    code, _, err = _ctrl_c(proc)
    assert code == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1].startswith("attnviz stats: interrupted; finished chunks are kept in "), err


def test_render_skips_complete_folders_and_overwrite_redoes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder counts as done when its result.json parses and lists only files that are there, and it was made
    with the same model and display settings; ``--overwrite`` renders everything again."""
    images, out = _images(tmp_path / "images", 4), tmp_path / "out"
    base = ["render", str(images), "--out", str(out), *RENDER, "--workers", "0"]
    assert cli(base) == 0
    assert _complete(out) == {"img000", "img001", "img002", "img003"}
    (out / "img001" / "result.json").write_text('{"files": [')  # cut short
    next((out / "img002" / "overlays").glob("*.png")).unlink()  # a listed file gone
    stamp = (out / "img000" / "result.json").stat().st_mtime_ns
    capsys.readouterr()

    assert cli(base) == 0
    std = capsys.readouterr()
    assert f"2 of 4 images already rendered in {out}/: skipped" in std.err, std.err
    assert "2 of 2 images rendered" in std.out and "img001" in std.out and "img002" in std.out, std.out
    assert (out / "img000" / "result.json").stat().st_mtime_ns == stamp
    assert len(_complete(out)) == 4

    assert cli([*base, "--overwrite"]) == 0
    std = capsys.readouterr()
    assert "already rendered" not in std.err and "4 of 4 images rendered" in std.out, std
    assert (out / "img000" / "result.json").stat().st_mtime_ns != stamp

    assert cli([*base, "--cmap", "viridis"]) == 0  # another run's settings: nothing is skipped
    std = capsys.readouterr()
    assert "already rendered" not in std.err and "4 of 4 images rendered" in std.out, std
