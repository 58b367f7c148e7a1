"""bench/_common.command: the reproducing command stored in model cards leaves output paths out."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "attnviz_bench_common", Path(__file__).resolve().parents[1] / "bench" / "_common.py"
)
_common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_common)


@pytest.mark.parametrize("json_arg", [["--json", "/tmp/a.json"], ["--json=/tmp/a.json"]])
def test_command_leaves_out_omitted_options_and_their_values(monkeypatch, json_arg):
    argv = ["bench/photo_pointing.py", "--placements", "40", *json_arg, "--write-cards"]
    monkeypatch.setattr(sys, "argv", argv)
    assert _common.command(omit=("--json",)).endswith("photo_pointing.py --placements 40 --write-cards")
    assert "/tmp/a.json" in _common.command()  # kept unless omitted
