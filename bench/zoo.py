"""The timm zoo, measured: one network per timm family with attention (and controls without), what attnviz finds.

    python bench/zoo.py [--out bench/ZOO.md] [--only vit cait ...]

Each network is built with random weights (``pretrained=False``) and run at its own default input size
(``pretrained_cfg["input_size"]``), batch 1, on the CPU: a bare forward, then two recorded forwards (the discovery
pass, then the cached sites' hooks). For each it reports the attention modules present and those with maps
(:func:`attention_modules`), the maps and their kinds, the unclassified weights, whether the logits are
bit-identical (``torch.equal``) with and without the recorder, whether any hook or function mode is left, and the
time of the whole measure (build + 4 forwards). ``tests/test_zoo.py`` runs the same :func:`measure` and asserts
what must hold; this script writes the table (markdown) to ``bench/ZOO.md``.

*Attention module* (the sweep's definition, independent of attnviz's discovery): the innermost registered module
during whose forward a softmax (``F.softmax``, ``torch.softmax``, ``Tensor.softmax``) or a fused attention call
(``F.scaled_dot_product_attention``) runs; a bare ``nn.Softmax`` module counts as its parent. It is *found* when a
map or an unclassified weight is named at or under its path (``found`` counts maps only; ``unclassified`` the rest).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode

from attnviz import AttentionRecorder

#: (family, timm model): the smallest network of each timm family with attention, at its default input size
FAMILIES: tuple[tuple[str, str], ...] = (
    ("vit", "vit_tiny_patch16_224"),
    ("deit (distilled)", "deit_tiny_distilled_patch16_224"),
    ("vit + registers", "vit_little_patch16_reg4_gap_256"),
    ("eva02", "eva02_tiny_patch14_224"),
    ("cait", "cait_xxs24_224"),
    ("xcit", "xcit_nano_12_p16_224"),
    ("levit", "levit_128s"),
    ("crossvit", "crossvit_tiny_240"),
    ("pvt_v2", "pvt_v2_b0"),
    ("mvitv2", "mvitv2_tiny"),
    ("coatnet", "coatnet_nano_rw_224"),
    ("maxvit", "maxvit_rmlp_pico_rw_256"),
    ("mobilevit", "mobilevit_xxs"),
    ("convit", "convit_tiny"),
    ("nest", "nest_tiny"),
    ("tiny_vit", "tiny_vit_5m_224"),
    ("gcvit", "gcvit_xxtiny"),
    ("swin", "swin_tiny_patch4_window7_224"),
    ("swinv2", "swinv2_tiny_window8_256"),
)
#: networks without attention: they must give 0 maps
CONTROLS: tuple[tuple[str, str], ...] = (
    ("convnext (control)", "convnext_atto"),
    ("poolformer (control)", "poolformerv2_s12"),
    ("resnet (control)", "resnet18"),
)

_SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax, torch.special.softmax}
_FUSED = {F.scaled_dot_product_attention}


class _Calls(TorchFunctionMode):
    """Calls ``on_call`` for every softmax and fused attention call (nested calls inside them are not seen)."""

    def __init__(self, on_call: Callable[[], None]) -> None:
        super().__init__()
        self.on_call = on_call

    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None) -> Any:
        try:
            hit = func in _SOFTMAX or func in _FUSED
        except TypeError:  # an unhashable callable
            hit = False
        if hit:
            self.on_call()
        return func(*args, **(kwargs or {}))


def attention_modules(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Paths of the modules that compute attention in one forward of ``model`` on ``x`` (the module docstring's
    definition), in the order first seen."""
    paths = {id(m): name for name, m in model.named_modules()}
    stack: list[nn.Module] = []
    found: dict[str, None] = {}

    def pre(module: nn.Module, args: tuple) -> None:
        stack.append(module)

    def post(module: nn.Module, args: tuple, out: Any) -> None:
        if stack and stack[-1] is module:
            stack.pop()

    def on_call() -> None:
        named = [m for m in stack if id(m) in paths]
        if named and isinstance(named[-1], nn.Softmax):
            named = named[:-1]
        if named:
            found[paths[id(named[-1])]] = None

    handles = [register_module_forward_pre_hook(pre), register_module_forward_hook(post)]
    try:
        with torch.no_grad(), _Calls(on_call):
            model(x)
    finally:
        for h in handles:
            h.remove()
    return list(found)


def hooks_left(model: nn.Module) -> int:
    """Forward hooks of the model's modules, global module hooks and torch function modes still installed."""
    own = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    glob = len(_module._global_forward_hooks) + len(_module._global_forward_pre_hooks)
    return own + glob + torch._C._len_torch_function_stack()


def _under(name: str, path: str) -> bool:
    return path == "" or name == path or name.startswith(path + ".")


@dataclass
class Row:
    """What the sweep measured for one network."""

    family: str
    model: str
    size: tuple[int, int]
    control: bool
    present: list[str] = field(default_factory=list)
    found: list[str] = field(default_factory=list)
    maps: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    token_maps: int = 0
    unclassified: int = 0
    reasons: list[str] = field(default_factory=list)
    identical: bool = False
    hooks: int = 0
    seconds: float = 0.0
    map_names: list[str] = field(default_factory=list)

    def cells(self) -> list[str]:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items())) or "-"
        return [
            self.family,
            f"`{self.model}`",
            f"{self.size[0]}x{self.size[1]}",
            f"{len(self.found)}/{len(self.present)}",
            str(self.maps),
            kinds,
            str(self.unclassified),
            "yes" if self.identical else "**no**",
            str(self.hooks),
            f"{self.seconds:.1f}",
        ]


COLUMNS = ["family", "model", "input", "found/present", "maps", "kinds", "unclassified", "logits equal", "hooks", "s"]


def measure(family: str, name: str, control: bool = False) -> Row:
    """Build ``name`` (random weights) at its default input size and measure what the recorder finds."""
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    size = tuple(model.pretrained_cfg["input_size"][-2:])
    x = torch.randn(1, 3, *size)
    row = Row(family, name, size, control)  # type: ignore[arg-type]
    with torch.no_grad():
        bare = model(x)
        row.present = attention_modules(model, x)
        same = True
        maps, unclassified = [], []
        for _ in range(2):  # the discovery pass, then the cached sites' hooks
            with AttentionRecorder(model) as rec:
                out = model(x)
            same = same and torch.equal(out, bare)
            maps, unclassified = rec.maps, rec.unclassified
    row.seconds = time.perf_counter() - t0
    row.identical = same
    row.hooks = hooks_left(model)
    row.maps = len(maps)
    row.map_names = [m.name for m in maps]
    row.kinds = dict(Counter(m.kind for m in maps))
    row.token_maps = row.kinds.get("token", 0)
    row.unclassified = len(unclassified)
    row.reasons = [f"{n}: {why}" for n, _, why in unclassified]  # the reason starts with the shape
    row.found = [p for p in row.present if any(_under(m.name, p) for m in maps)]
    return row


def markdown(rows: list[Row]) -> str:
    """The table, as markdown."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def text(rows: list[Row]) -> str:
    """The table as aligned plain text (what the test prints)."""
    cells = [COLUMNS] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(len(COLUMNS))) for c in cells)


def write(rows: list[Row], path: Path) -> None:
    """``bench/ZOO.md``: the table, the definitions, and the unclassified weights' reasons."""
    head = [
        "# The timm zoo, measured (bench/zoo.py, tests/test_zoo.py)",
        "",
        f"timm {timm.__version__}, torch {torch.__version__}, CPU ({torch.get_num_threads()} threads), float32,"
        " batch 1, random weights, each network at its own default input size.",
        "*found/present*: attention modules (innermost modules calling softmax or"
        " `F.scaled_dot_product_attention`) with at least one map under their path / all of them.",
        "*s*: build + bare forward + presence forward + two recorded forwards (discovery, cached).",
        "",
    ]
    tail = ["", "## Unclassified (first 3 per network)", ""]
    for r in rows:
        if r.reasons:
            tail.append(f"- {r.family} (`{r.model}`, {r.unclassified}):")
            tail += [f"  - {why}" for why in r.reasons[:3]]
    path.write_text("\n".join(head) + "\n" + markdown(rows) + "\n" + "\n".join(tail) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("ZOO.md"))
    ap.add_argument("--only", nargs="*", default=None, help="families or model names to run")
    args = ap.parse_args()
    chosen = [(f, n, False) for f, n in FAMILIES] + [(f, n, True) for f, n in CONTROLS]
    if args.only:
        chosen = [c for c in chosen if any(o in (c[0], c[1]) for o in args.only)]
    rows = []
    for family, name, control in chosen:
        rows.append(measure(family, name, control))
        print(text(rows[-1:]).splitlines()[-1], flush=True)
    print(text(rows))
    write(rows, args.out)


if __name__ == "__main__":
    main()
