"""The timm zoo sweep (issue 20, part 4): one network per timm family with attention, random weights, each at its own
default input size, batch 1, plus controls without attention. The measure is bench/zoo.py's (shared); the table is
printed (``pytest -s tests/test_zoo.py``) and ``python bench/zoo.py`` writes it to bench/ZOO.md.

Asserted here is what holds today and must keep holding: logits bit-identical with and without the recorder, no hook
or function mode left, 0 maps for the controls, one token map per block for ViT/DeiT/registers/EVA-02, and the
families read whole (class attention, cross-covariance, N x M attention, grids read from the shapes). What is not
yet read is in the table, not asserted.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.slow

timm = pytest.importorskip("timm")


def _zoo() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "bench" / "zoo.py"
    spec = importlib.util.spec_from_file_location("attnviz_bench_zoo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


zoo = _zoo()
ALL = [(f, n, False) for f, n in zoo.FAMILIES] + [(f, n, True) for f, n in zoo.CONTROLS]
#: families whose every block is one token attention (N = prefix + grid): one token map per block
TOKEN_FAMILIES = {"vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "vit_little_patch16_reg4_gap_256"}
TOKEN_FAMILIES |= {"eva02_tiny_patch14_224"}
#: families read whole today, with the kinds they must give: CaiT's class attention (token, one query) after its
#: self-attention blocks; XCiT's cross-covariance attention (channel_pairwise) and class attention
READ_WHOLE = {
    "cait_xxs24_224": {"token": 2},
    "xcit_nano_12_p16_224": {"channel_pairwise": 12, "token": 2},
    "convit_tiny": {"token": 2},
}
#: queries and keys on different grids (N x M) and token grids no feature map shows (tests/test_pooled.py): every
#: attention module of these is one token map, nothing else (PVT-v2's and MViT-v2's single-head first stage is not a
#: spatial gate, CrossViT's grids are its patch grids, not a dropout's (1, 401))
READ_WHOLE_TOKENS = {"pvt_v2_b0": 8, "mvitv2_tiny": 10, "levit_128s": 11, "crossvit_tiny_240": 21}
#: windowed and partitioned attention (tests/test_partitions.py): one window map per attention module, every one read:
#: Swin's and SwinV2's shifted windows, MaxViT's block and grid attention (besides its MBConv SE gates), NesT's blocks,
#: MobileViT's unfolded patches, GCViT's local and global-query windows
READ_WHOLE_WINDOWS = {
    "swin_tiny_patch4_window7_224": 12,
    "swinv2_tiny_window8_256": 12,
    "maxvit_rmlp_pico_rw_256": 22,
    "nest_tiny": 12,
    "mobilevit_xxs": 9,  # its unfolded 2 x 2 patches: 4 dilated grids (discovery, exact token match)
    "gcvit_xxtiny": 12,  # local and global blocks (global: the context map's tokens query every window)
}


@pytest.fixture(scope="module")
def rows() -> dict[str, object]:
    available = set(timm.list_models())
    return {n: zoo.measure(f, n, c) for f, n, c in ALL if n in available}


def test_attention_modules_definition() -> None:
    """The sweep's own count (independent of attnviz): a plain softmax attention and an SDPA one are counted at
    their module, a bare nn.Softmax at its parent, and a network without either has none."""

    class Explicit(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x @ x.transpose(-2, -1)).softmax(-1) @ x

    class Fused(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.scaled_dot_product_attention(x, x, x)

    class WithModule(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sm = nn.Softmax(dim=-1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.sm(x @ x.transpose(-2, -1)) @ x

    net = nn.Sequential(Explicit(), nn.ReLU(), Fused(), WithModule(), nn.Linear(8, 8))
    assert zoo.attention_modules(net, torch.randn(1, 5, 8)) == ["0", "2", "3"]
    assert zoo.attention_modules(nn.Sequential(nn.Linear(8, 8), nn.GELU()), torch.randn(1, 5, 8)) == []
    assert zoo.hooks_left(net) == 0


@pytest.mark.parametrize(("family", "name", "control"), ALL, ids=[n for _, n, _ in ALL])
def test_zoo_network(rows: dict[str, object], family: str, name: str, control: bool) -> None:
    if name not in rows:
        pytest.skip(f"timm {timm.__version__} has no {name}")
    row = rows[name]
    assert row.identical, f"{name}: logits differ with the recorder"
    assert row.hooks == 0, f"{name}: {row.hooks} hook(s) or function mode(s) left"
    if control:
        assert row.present == [] and row.maps == 0 and row.unclassified == 0, row
        return
    assert row.present, f"{name}: the sweep saw no attention module"
    if name in TOKEN_FAMILIES:
        blocks = [p for p in row.present if p.startswith("blocks.")]
        assert row.token_maps == row.maps == len(blocks) == len(row.present), row
        assert row.found == row.present and row.unclassified == 0
    if name in READ_WHOLE:  # every attention module read, as the kinds given
        assert row.found == row.present and row.unclassified == 0, row.reasons
        assert all(row.kinds.get(k, 0) >= n for k, n in READ_WHOLE[name].items()), row.kinds
    if name in READ_WHOLE_TOKENS:  # one token map per attention module, every one read, no other kind
        assert row.found == row.present and row.unclassified == 0, row.reasons
        assert row.kinds == {"token": READ_WHOLE_TOKENS[name]} == {"token": len(row.present)}, row.kinds
    if name in READ_WHOLE_WINDOWS:  # one window map per attention module, every one read
        assert row.found == row.present and row.unclassified == 0, row.reasons
        assert row.kinds.get("window") == READ_WHOLE_WINDOWS[name] == len(row.present), row.kinds
        assert set(row.kinds) <= {"window", "channel"}, row.kinds
    if name == "convit_tiny":  # its per-head gating sigmoid(gating_param) is a constant, not channel gates
        assert "channel" not in row.kinds


def test_zoo_table(rows: dict[str, object], tmp_path: Path) -> None:
    ordered = [rows[n] for _, n, _ in ALL if n in rows]
    print("\n" + zoo.text(ordered))
    zoo.write(ordered, tmp_path / "ZOO.md")
    written = (tmp_path / "ZOO.md").read_text()
    assert all(f"`{r.model}`" in written for r in ordered)
