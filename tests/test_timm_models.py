"""timm's pretrained attention networks through attnviz's adapters: maps, exactness of captured maps, offline loading.

No weights are downloaded: pretrained loading is tested in a subprocess whose Hugging Face cache (``HF_HOME``) holds
locally made ``model.safetensors`` files at the hub cache's own layout, with ``HF_HUB_OFFLINE=1`` and every socket
connect refused.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from attnviz import AttentionRecorder
from attnviz.blocks import Tap
from attnviz.capture.adapters import adapter_sites
from attnviz.capture.structure import module_paths

timm = pytest.importorskip("timm")
from attnviz.sources.catalog import TIMM_TRANSFORMERS  # noqa: E402
from attnviz.sources.timm import (  # noqa: E402
    TIMM_MODELS,
    build_timm_model,
    timm_availability,
)

NAMES = [n for n in TIMM_MODELS if n not in TIMM_TRANSFORMERS]  # the convolutional six (transformers: test_catalog)
BATCH = 2

#: largest |module output - output rebuilt from the captured map| per module, float64 (filled by the tests).
RECOMPUTE_DIFF: dict[str, float] = {}


def _size(name: str) -> int:
    return 256 if name.startswith("botnet") else 64  # BoTNet's relative position tables fix its input to 256 px


def _timm_class(module: nn.Module) -> str:
    return type(module).__name__


#: timm class -> (site names in forward order, kinds); for SplitAttn the radix is 2 in resnest50d.
EXPECTED_TAPS = {
    "SEModule": [("gate", "channel")],
    "EcaModule": [("gate", "channel")],
    "SelectiveKernel": [("attn", "branch")],
    "SplitAttn": [("rsoftmax", "branch")],
    "GlobalContext": [("softmax()", "spatial")],  # gcresnet50t fuses by addition: no scale gate
    "BottleneckAttn": [("softmax()", "pairwise")],
}


def timm_attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The adapted attention modules by path (what the recorder's adapters hook)."""
    _, adapted = adapter_sites(module_paths(model))
    return {p: m for p, m in module_paths(model).values() if id(m) in adapted}


EXPECTED_COUNT = {
    "seresnet50.ra2_in1k": 16,
    "ecaresnet50d.miil_in1k": 16,
    "skresnet34.ra_in1k": 16,
    "resnest50d.in1k": 16,
    "gcresnet50t.ra2_in1k": 16,
    "botnet26t_256.c1_in1k": 3,
}


class _Softmaxes(TorchFunctionMode):
    """Every softmax computed inside the mode, the modules' inline ones included, in call order."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: list[Tensor] = []

    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if getattr(func, "__name__", "") == "softmax":  # torch.softmax, F.softmax, Tensor.softmax
            self.outputs.append(out.detach().clone())
        return out


def _gate_inputs(model: nn.Module) -> tuple[dict[str, list[Tensor]], list]:
    """Test-only hooks recording, per attention module, the tensors its map must equal or refer to."""
    seen: dict[str, list[Tensor]] = {}
    handles = []
    for path, m in timm_attention_modules(model).items():
        cls = _timm_class(m)
        sub = {"SEModule": "gate", "EcaModule": "gate", "SelectiveKernel": "attn", "SplitAttn": "rsoftmax"}.get(cls)
        target = m.get_submodule(sub) if sub else m

        def hook(mod: nn.Module, args: tuple, out: Tensor, path: str = path, sub: str | None = sub) -> None:
            x = out if sub else args[0]
            seen.setdefault(path, []).append(x.detach().clone())

        handles.append(target.register_forward_hook(hook))
    return seen, handles


@pytest.mark.parametrize("name", NAMES)
def test_maps_kinds_shapes_keys_and_identical_logits(name: str) -> None:
    model = build_timm_model(name, pretrained=False)
    assert model.arch == name and model.weights_source == "random" and model.untrained_attention is True
    meta = model.weights_meta
    assert len(meta["categories"]) == 1000 and meta["categories"][281] == "tabby"
    assert meta["mean"] == list(model.pretrained_cfg["mean"]) and meta["fixed_input_size"] == name.startswith("bot")

    # adapters add nothing to the model: no taps, the state-dict keys are timm's own, in timm's order
    plain = timm.create_model(name, pretrained=False)
    assert list(model.state_dict()) == list(plain.state_dict())
    assert not any(isinstance(m, Tap) for m in model.modules())

    attn = timm_attention_modules(model)
    assert len(attn) == EXPECTED_COUNT[name]
    x = torch.randn(BATCH, 3, _size(name), _size(name))
    with torch.inference_mode():
        with _Softmaxes() as softmaxes:
            bare = model(x)  # no recorder: the softmaxes are the modules' own
        seen, handles = _gate_inputs(model)
        try:
            with AttentionRecorder(model) as rec:
                logits = model(x)
        finally:
            for h in handles:
                h.remove()
        again = model(x)
    assert torch.equal(bare, logits) and torch.equal(bare, again)  # bit-identical, before and after

    maps = rec.maps
    # every inline softmax the modules computed is, bit for bit, the map of their tap (float32 in, float32 out)
    inline = [m for m in maps if m.kind != "channel"]
    assert len(softmaxes.outputs) == len(inline)
    for m, used in zip(inline, softmaxes.outputs, strict=True):
        assert used.dtype == torch.float32 and torch.equal(used.reshape(m.data.shape), m.data), m.name
    expected_names = [f"{p}.{t}" for p, m in attn.items() for t, _ in EXPECTED_TAPS[_timm_class(m)]]
    assert [m.name for m in maps] == expected_names  # one map per site, forward order
    assert {m.how for m in maps} == {"adapter"}
    for m in maps:
        path, _, site = m.name.rpartition(".softmax()") if m.name.endswith("softmax()") else m.name.rpartition(".")
        site = site or "softmax()"
        module = attn[path]
        cls = _timm_class(module)
        assert m.kind == dict(EXPECTED_TAPS[cls])[site]
        ref = seen[path][0]
        if cls in ("SEModule", "EcaModule"):  # the gate the module multiplied by, (B, C)
            assert m.data.shape == (BATCH, module.fc2.out_channels if cls == "SEModule" else ref.shape[-1])
            assert torch.equal(m.data, ref.reshape(BATCH, -1).float())
            assert ((m.data > 0) & (m.data < 1)).all()
        elif cls == "SelectiveKernel":  # (B, K, C), softmax over the K paths
            assert m.data.shape == (BATCH, module.num_paths, module.out_channels)
            assert torch.equal(m.data, ref.flatten(2))
            torch.testing.assert_close(m.data.sum(1), torch.ones(BATCH, module.out_channels))
        elif cls == "SplitAttn":  # (B, R, C), softmax over the R radix splits
            channels = module.fc1.in_channels
            assert m.data.shape == (BATCH, module.radix, channels)
            assert torch.equal(m.data.flatten(1), ref)  # rsoftmax's output, radix-major
            torch.testing.assert_close(m.data.sum(1), torch.ones(BATCH, channels))
        elif cls == "GlobalContext":  # (B, H, W), softmax over the positions of the module's input
            h, w = ref.shape[-2:]
            assert m.data.shape == (BATCH, h, w) and m.size == (h, w)
            torch.testing.assert_close(m.data.sum((1, 2)), torch.ones(BATCH))
        else:  # BottleneckAttn: (B, heads, N, N) over the input's H x W, rows sum to 1
            h, w = ref.shape[-2:]
            assert m.data.shape == (BATCH, module.num_heads, h * w, h * w) and m.size == (h, w)
            torch.testing.assert_close(m.data.sum(-1), torch.ones(BATCH, module.num_heads, h * w))
        assert torch.isfinite(m.data).all()
    assert not any(mod._forward_hooks or mod._forward_pre_hooks for mod in model.modules())  # the hooks are gone


def test_categories_are_in_timm_class_order() -> None:
    """torchvision's ImageNet names (the labels shown) follow timm's own class order, index for index."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    names = build_timm_model("skresnet34.ra_in1k", pretrained=False).weights_meta["categories"]
    differ = [i for i, n in enumerate(names) if n.lower() not in info.index_to_description(i).lower()]
    assert differ == [134, 639]  # 'crane bird' vs 'crane', 'maillot tank suit' vs 'maillot, tank suit'


def test_captured_not_recomputed() -> None:
    """BoTNet's map is the module's own softmax, caught as it is computed: nothing is run a second time."""
    model = build_timm_model("botnet26t_256.c1_in1k", pretrained=False)
    calls: list[int] = []
    for m in timm_attention_modules(model).values():
        m.pos_embed.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        model(x)
        assert len(calls) == 3  # the modules' own calls
        with AttentionRecorder(model) as rec:
            model(x)
    assert len(calls) == 3 + 3 and len(rec.maps) == 3


def test_other_configurations_of_the_same_modules() -> None:
    """Beyond the six models: GC with a scale gate (spatial + channel), circular ECA, split attention with R = 1
    (a sigmoid: channel); each map rebuilds the module's output."""
    from timm.layers import CecaModule, GlobalContext, SplitAttn

    gc = _randomise(GlobalContext(32, fuse_add=False, fuse_scale=True), 5)
    ceca = _randomise(CecaModule(64), 6)
    splat = _randomise(SplitAttn(16, 32, radix=1, norm_layer=nn.BatchNorm2d), 7)
    for module in (gc, ceca, splat):
        assert list(timm_attention_modules(module)) == [""]
    x = torch.randn(BATCH, 32, 7, 5, dtype=torch.float64)
    out, weights, _ = _run_all(gc, x)
    assert [(n, tuple(w.shape)) for n, w in weights.items()] == [("softmax()", (BATCH, 7, 5)), ("gate", (BATCH, 32))]
    a, gate = weights["softmax()"][:, None], weights["gate"][:, :, None, None]  # (B, 1, H, W), (B, C, 1, 1)
    with torch.no_grad():
        context = (x.flatten(2) * a.flatten(2)).sum(-1).view(BATCH, 32, 1, 1)
        torch.testing.assert_close(gate, torch.sigmoid(gc.mlp_scale(context)), atol=1e-12, rtol=0)
    _check("GlobalContext", out, x * gate, x * gate.flip(1))

    x = torch.randn(BATCH, 64, 6, 6, dtype=torch.float64)
    with torch.no_grad(), AttentionRecorder(ceca) as rec:
        out = ceca(x)
    assert rec.maps[0].kind == "channel" and rec.maps[0].data.shape == (BATCH, 64)
    torch.testing.assert_close(out, x * rec.maps[0].data.double()[..., None, None], atol=1e-6, rtol=1e-6)

    x = torch.randn(BATCH, 16, 6, 6, dtype=torch.float64)
    with torch.no_grad(), AttentionRecorder(splat) as rec:
        splat(x)
    assert rec.maps[0].kind == "channel" and rec.maps[0].data.shape == (BATCH, 32)


def test_models_carry_no_hooks_and_deep_copies_record_on_their_own() -> None:
    """The adapters' hooks live only inside a recorder (handles kept, removed on exit): a built model has none,
    a deep copy records through its own modules, and recording twice leaves nothing behind."""
    model = build_timm_model("skresnet34.ra_in1k", pretrained=False)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0
    twin = copy.deepcopy(model)
    x = torch.randn(1, 3, 64, 64)
    for _ in range(2):
        with torch.inference_mode(), AttentionRecorder(twin) as rec_twin, AttentionRecorder(model) as rec:
            twin(x)
        assert len(rec_twin.maps) == 16 and len(rec.maps) == 0
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in (*model.modules(), *twin.modules())) == 0


# -- the recomputed maps are the ones the modules used ---------------------------------------------------------------
@torch.no_grad()
def _randomise(module: nn.Module, seed: int) -> nn.Module:
    """Every parameter and norm statistic random (GC's last conv is zero at init: it would hide a wrong map)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if p.dim() > 1:
            fan_in = p[0].numel() if p.dim() > 2 else p.shape[-1]
            p.copy_(torch.randn(p.shape, generator=gen) * 1.5 / fan_in**0.5)
        elif name.endswith("weight"):
            p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
        else:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            sub.running_mean.copy_(torch.randn(sub.num_features, generator=gen) * 0.3)
            sub.running_var.copy_(torch.rand(sub.num_features, generator=gen) + 0.5)
    return module.double().eval()


def _run(module: nn.Module, x: Tensor, inner: str | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """The module's output, its (first) captured map and the output of its submodule ``inner``."""
    out, weights, inner_out = _run_all(module, x, inner)
    return out, next(iter(weights.values())), inner_out


def _run_all(module: nn.Module, x: Tensor, inner: str | None = None) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
    """The module's output, every map the recorder captured (kept in float64, canonical shapes), and the output of
    its submodule ``inner`` if given."""
    got: dict[str, Tensor] = {}
    handles = []
    if inner is not None:
        keep = lambda mod, args, out: got.__setitem__("inner", out.detach().clone())  # noqa: E731
        handles.append(module.get_submodule(inner).register_forward_hook(keep))
    try:
        with torch.no_grad(), AttentionRecorder(module, dtype=torch.float64) as rec:
            out = module(x.clone())
    finally:
        for h in handles:
            h.remove()
    weights = {m.name: m.data for m in rec.maps}
    assert all(w.dtype == torch.float64 for w in weights.values())
    return out, weights, got.get("inner")


def _check(label: str, out: Tensor, rebuilt: Tensor, wrong: Tensor) -> None:
    diff = (out - rebuilt).abs().max().item()
    RECOMPUTE_DIFF[label] = max(RECOMPUTE_DIFF.get(label, 0.0), diff)
    assert diff <= 1e-12, (label, diff)
    assert (out - wrong).abs().max().item() > 1e-3, f"{label}: a wrong map would pass too (vacuous test)"


def _module(name: str, path: str, seed: int) -> nn.Module:
    return _randomise(build_timm_model(name, pretrained=False).get_submodule(path), seed)


@pytest.mark.parametrize("path", ["layer1.1.conv1", "layer2.0.conv1"])
def test_sk_output_is_the_paths_weighted_by_the_captured_map(path: str) -> None:
    m = _module("skresnet34.ra_in1k", path, 1)
    x = torch.randn(BATCH, m.in_channels, 11, 9, dtype=torch.float64)
    out, a, _ = _run(m, x)  # a: (B, K, C)
    a = a[..., None, None]
    parts = torch.split(x, m.in_channels // m.num_paths, 1) if m.split_input else [x] * m.num_paths
    paths = torch.stack([p(xi) for p, xi in zip(m.paths, parts, strict=True)], 1)  # (B, K, C, H', W')
    _check("SelectiveKernel", out, (paths * a).sum(1), (paths * a.flip(1)).sum(1))


def test_splat_output_is_the_splits_weighted_by_the_captured_map() -> None:
    m = _module("resnest50d.in1k", "layer2.0.conv2", 2)
    x = torch.randn(BATCH, m.conv.in_channels, 10, 7, dtype=torch.float64)
    out, a, feats = _run(m, x, inner="act0")  # a: (B, R, C); feats: (B, R*C, H, W) after conv, BN, ReLU
    b, rc, h, w = feats.shape
    splits = feats.reshape(b, m.radix, rc // m.radix, h, w)
    a = a.reshape(b, m.radix, -1, 1, 1)
    _check("SplitAttn", out, (splits * a).sum(1), (splits * a.flip(1)).sum(1))


@pytest.mark.parametrize("path", ["stages.1.0.attn", "stages.2.3.attn"])
def test_gc_output_from_the_captured_spatial_softmax(path: str) -> None:
    m = _module("gcresnet50t.ra2_in1k", path, 3)
    c = m.conv_attn.in_channels
    x = torch.randn(BATCH, c, 9, 13, dtype=torch.float64)
    out, a, _ = _run(m, x)  # a: (B, H, W), softmax over H*W
    a = a[:, None]

    def rebuild(attn: Tensor) -> Tensor:
        context = (x.flatten(2) * attn.flatten(2)).sum(-1).view(BATCH, c, 1, 1)  # (B, C, 1, 1)
        y = x * m.gate(m.mlp_scale(context)) if m.mlp_scale is not None else x
        return y + m.mlp_add(context) if m.mlp_add is not None else y

    with torch.no_grad():
        _check("GlobalContext", out, rebuild(a), rebuild(a.flip(-1)))
    torch.testing.assert_close(a.sum((-2, -1)), torch.ones(BATCH, 1, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("path", ["stages.2.1.self_attn", "stages.3.0.self_attn"])
def test_bottleneck_attn_output_is_the_captured_map_times_v(path: str) -> None:
    m = _module("botnet26t_256.c1_in1k", path, 4)
    h, w = m.pos_embed.height, m.pos_embed.width
    x = torch.randn(BATCH, m.qkv.in_channels, h, w, dtype=torch.float64)
    out, a, qkv = _run(m, x, inner="qkv")  # a: (B, heads, N, N)
    heads, n = m.num_heads, h * w
    v = qkv[:, 2 * m.dim_out_qk :].reshape(BATCH, heads, m.dim_head_v, n)  # (B, heads, d_v, N)

    def rebuild(attn: Tensor) -> Tensor:
        y = (attn @ v.transpose(-1, -2)).transpose(-1, -2)  # (B, heads, d_v, N)
        return m.pool(y.reshape(BATCH, m.dim_out_v, h, w))

    with torch.no_grad():
        _check("BottleneckAttn", out, rebuild(a), rebuild(a.transpose(-1, -2)))
        # the relative position logits take part: without them the map is a different one
        q = qkv[:, : m.dim_out_qk].reshape(BATCH * heads, m.dim_head_qk, n).transpose(-1, -2)
        k = qkv[:, m.dim_out_qk : 2 * m.dim_out_qk].reshape(BATCH * heads, m.dim_head_qk, n)
        content_only = ((q @ k) * m.scale).softmax(-1).view(BATCH, heads, n, n)
        assert (content_only - a).abs().max() > 1e-3


def test_recompute_diffs_recorded() -> None:
    """Runs after the tests above (file order): every rebuilt output matched; ``ATTNVIZ_TIMM_REPORT`` gets them."""
    assert set(RECOMPUTE_DIFF) == {"SelectiveKernel", "SplitAttn", "GlobalContext", "BottleneckAttn"}
    path = os.environ.get("ATTNVIZ_TIMM_REPORT")
    if path:
        Path(path).write_text(json.dumps(RECOMPUTE_DIFF, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# -- weights: the Hugging Face cache, offline ------------------------------------------------------------------------
_CHILD = textwrap.dedent(
    """
    import hashlib, json, os, socket, sys, time

    attempts = []
    def refuse(self, address, *args):
        attempts.append(repr(address))
        raise OSError("network disabled by the test")
    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse

    import timm, torch
    from attnviz.capture.adapters import adapter_sites
    from attnviz.capture.structure import module_paths
    from attnviz.sources.timm import TIMM_MODELS, build_timm_model, timm_availability

    def digest(sd):  # the same as _digest in the test module
        return {k: hashlib.sha256(f"{v.dtype}{tuple(v.shape)}".encode() + _bytes(v)).hexdigest() for k, v in sd.items()}

    def _bytes(v):
        return v.reshape(-1).view(torch.uint8).numpy().tobytes()

    config = json.loads(sys.argv[1])
    out = {"phases": []}
    for env in config["phases"]:  # variables read at call time (ATTNVIZ_OFFLINE), set before each phase
        os.environ.update(env)
        models = {}
        for name in config["names"]:
            t0 = time.perf_counter()
            ok, reason = timm_availability(name)
            entry = {"available": ok, "reason": reason, "seconds": time.perf_counter() - t0}
            try:
                model = build_timm_model(name, pretrained=True)
            except ValueError as e:
                entry["error"] = str(e)
            else:
                entry["digest"] = digest(model.state_dict())
                entry["source"] = model.weights_source
                entry["untrained_attention"] = model.untrained_attention
                entry["taps"] = len(adapter_sites(module_paths(model))[0])
            entry["build_seconds"] = time.perf_counter() - t0
            models[name] = entry
        out["phases"].append(models)
    if config.get("timm_hub"):  # timm's own hub loader (hf_hub_download, offline) reads the same file
        out["timm_hub"] = digest(timm.create_model(config["timm_hub"], pretrained=True).state_dict())
    out["attempts"] = attempts
    print(json.dumps(out))
    """
)


def _child(tmp_path: Path, env: dict[str, str], names: list[str], phases: list[dict], timm_hub: str = "") -> dict:
    """Run ``_CHILD`` in a fresh interpreter whose environment is ``env`` (huggingface_hub reads HF_HOME,
    HF_HUB_OFFLINE and HF_ENDPOINT when it is imported), with nothing inherited that would change it."""
    drop = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "ATTNVIZ_OFFLINE", "XDG_CACHE_HOME")
    full = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    full.update(env, OMP_NUM_THREADS="1")
    root = Path(__file__).resolve().parents[1]
    full["PYTHONPATH"] = os.pathsep.join([str(root), full.get("PYTHONPATH", "")])
    config = {"names": names, "phases": phases, "timm_hub": timm_hub}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(config)],
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _digest(sd: dict[str, Tensor]) -> dict[str, str]:
    """key -> sha256 of dtype, shape and bytes (the child process computes the same)."""
    return {
        k: hashlib.sha256(
            f"{v.dtype}{tuple(v.shape)}".encode() + v.reshape(-1).view(torch.uint8).numpy().tobytes()
        ).hexdigest()
        for k, v in sd.items()
    }


def _made_state_dict(name: str, seed: int) -> dict[str, Tensor]:
    """A state dict of ``name``'s exact keys, shapes and dtypes, with values no initialisation would give."""
    torch.manual_seed(seed)
    sd = timm.create_model(name, pretrained=False).state_dict()
    gen = torch.Generator().manual_seed(seed)
    return {
        k: (v + 0.05 * torch.randn(v.shape, generator=gen)).contiguous() if v.is_floating_point() else v + 7
        for k, v in sd.items()
    }


def _place_in_hub_cache(hub: Path, name: str, sd: dict[str, Tensor]) -> Path:
    """``<hub>/models--timm--<name>/snapshots/<commit>/model.safetensors`` + ``refs/main``: huggingface_hub's layout."""
    from safetensors.torch import save_file

    commit = hashlib.sha1(name.encode()).hexdigest()  # 40 hex digits, like a git commit
    repo = hub / f"models--timm--{name}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    save_file(sd, snap / "model.safetensors", metadata={"format": "pt"})
    return snap / "model.safetensors"


def test_pretrained_weights_load_from_the_hub_cache_offline(tmp_path: Path) -> None:
    """All six: locally made files in a temporary HF cache load through huggingface_hub's cache lookup and timm's
    pretrained loader, with no network; timm's own hub loader (offline) reads the very same files."""
    home = tmp_path / "hf"
    made = {}
    for i, name in enumerate(NAMES):
        sd = _made_state_dict(name, 100 + i)
        path = _place_in_hub_cache(home / "hub", name, sd)
        made[name] = (_digest(sd), path)
        del sd
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    out = _child(tmp_path, env, NAMES, [{}], timm_hub="skresnet34.ra_in1k")
    assert out["attempts"] == []  # not one connection was tried
    for name in NAMES:
        entry, (digest, path) = out["phases"][0][name], made[name]
        assert entry["available"] is True and entry["reason"] == f"cached: {path}", entry
        assert "error" not in entry, entry.get("error")
        assert entry["digest"] == digest, f"{name}: the loaded tensors are not the file's"
        assert entry["source"] == f"timm {name} (ImageNet)" and entry["untrained_attention"] is False
        assert entry["taps"] == EXPECTED_COUNT[name]
    assert out["timm_hub"] == made["skresnet34.ra_in1k"][0]


def test_unavailable_weights_are_reported_quickly(tmp_path: Path) -> None:
    """Empty cache: HF_HUB_OFFLINE or ATTNVIZ_OFFLINE -> (False, reason) with no request; a hub that cannot be reached
    -> (False, reason) after one quick probe; build_timm_model raises a ValueError naming the cache folder."""
    home = tmp_path / "hf"
    names = ["seresnet50.ra2_in1k", "botnet26t_256.c1_in1k"]
    phases = [{}, {"ATTNVIZ_OFFLINE": "1"}, {"ATTNVIZ_OFFLINE": "0", "HF_HUB_OFFLINE": "1"}]
    out = _child(tmp_path, {"HF_HOME": str(home), "HF_ENDPOINT": "http://127.0.0.1:9"}, names, phases)
    assert len(out["attempts"]) == 1 and "127.0.0.1" in out["attempts"][0]  # one probe, remembered; none offline
    whys = [
        "and the hub (http://127.0.0.1:9) cannot be reached (OSError: network disabled by the test)",
        "and downloads are off (ATTNVIZ_OFFLINE=1)",
        "and downloads are off (HF_HUB_OFFLINE=1)",
    ]
    for models, why in zip(out["phases"], whys, strict=True):
        for name in names:
            entry = models[name]
            folder = str(home / "hub" / f"models--timm--{name}")
            assert entry["available"] is False, entry
            assert entry["reason"] == f"not in the Hugging Face cache ({folder}) {why}", entry
            assert entry["seconds"] < 5 and entry["build_seconds"] < 10
            assert entry["error"] == f"pretrained weights for {name} are unavailable: {entry['reason']}"


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown timm model 'resnet50'; valid names: seresnet50\.ra2_in1k, "):
        build_timm_model("resnet50")
    with pytest.raises(ValueError, match="unknown timm model"):
        timm_availability("seresnet50")


def test_analyze_runs_timm_networks_with_stages_activations_and_fixed_sizes() -> None:
    """Through attnviz.analyze: ByobNet's stages.S.i blocks map to stages 1..4, every tapped module gives its
    activation view, and BoTNet (256 x 256 only) gets exactly that input whatever the image's shape."""
    from PIL import Image

    from attnviz import analyze

    image = Image.new("RGB", (90, 60), "red")
    r = analyze(image, attention="cbam", arch="gcresnet50t.ra2_in1k", weights="random", size=64)
    assert r.model["attention"] == "gc" and r.warning  # the network's own attention, untrained
    assert sorted({m.stage for m in r.maps}) == [1, 2, 3, 4]
    assert {m.block for m in r.maps} == {k.rpartition(".attn")[0] for k in r.activations}
    r = analyze(image, attention=None, arch="botnet26t_256.c1_in1k", weights="random")
    assert r.input_size == (256, 256) and {m.kind for m in r.maps} == {"pairwise"}
    assert sorted({m.stage for m in r.maps}) == [3, 4]
