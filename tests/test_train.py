"""Training end to end on tiny data: attnviz train (CLI, resume, DDP through torchrun), delta checkpoints,
model cards, and the checkpoint loading back into build_model and analyze."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from attnviz import analyze, build_model
from attnviz.cli.main import main as cli
from attnviz.data import SceneConfig, SceneDataset
from attnviz.pipeline.distributed import backend_for, resolve_device
from attnviz.sources.checkpoint import read_card, read_checkpoint, save_checkpoint, tensors_sha256
from attnviz.sources.weights import load_backbone_state_dict
from attnviz.train.loop import TrainConfig, delta_keys, fit, freeze_for_attention

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def image_folder(scene_root, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder-style directory of 36 generated scenes (3 classes)."""
    out = tmp_path_factory.mktemp("folder")
    ds = SceneDataset(scene_root, "train", 36, config=SceneConfig(size=40))
    for i in range(len(ds)):
        s = ds.scene(i)
        (out / ds.classes[s.label]).mkdir(exist_ok=True)
        Image.fromarray(s.image).save(out / ds.classes[s.label] / f"{i}.png")
    return out


ARGS = ["--arch", "resnet18", "--attention", "cbam", "--weights", "none", "--size", "32", "--batch-size", "8"]


def test_train_cli_checkpoint_loads_in_build_model_and_analyze(image_folder, tmp_path, capsys) -> None:
    out = tmp_path / "cbam.safetensors"
    assert cli(["train", "--data", str(image_folder), *ARGS, "--epochs", "2", "--workers", "0", "--out", str(out)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card == read_card(out)  # the same card in the header and beside it
    assert (
        card["arch"] == "resnet18" and card["attention"] == "cbam" and card["classes"] == ["disc", "square", "triangle"]
    )
    assert [h["epoch"] for h in card["training"]["history"]] == [1, 2]
    assert card["data"]["train_images"] + card["data"]["val_images"] == 36
    model = build_model("resnet18", "cbam", weights=str(out))
    assert model.fc.out_features == 3 and not model.untrained_attention
    result = analyze(Image.new("RGB", (50, 40), "red"), attention="cbam", arch="resnet18", weights=str(out))
    assert {p[0] for p in result.predictions} <= {"disc", "square", "triangle"}
    assert not result.warning  # trained attention: no "untrained" warning
    with pytest.raises(ValueError, match="is for resnet18 with attention='cbam', not resnet18 with attention='se'"):
        build_model("resnet18", "se", weights=str(out))
    with pytest.raises(ValueError, match=r"is for resnet18 .* not resnet34"):
        build_model("resnet34", "cbam", weights=str(out))

    # resume: a longer schedule continues after epoch 2 instead of starting over
    capsys.readouterr()
    assert (
        cli(
            [
                "train",
                "--data",
                str(image_folder),
                *ARGS,
                "--epochs",
                "3",
                "--workers",
                "0",
                "--out",
                str(out),
                "--resume",
            ]
        )
        == 0
    )
    assert "resumed from cbam.safetensors.last.pt at epoch 2" in capsys.readouterr().out
    assert [h["epoch"] for h in read_card(out)["training"]["history"]] == [1, 2, 3]


def test_train_cli_rejects_bad_data(tmp_path, capsys) -> None:
    assert cli(["train", "--data", str(tmp_path / "missing"), *ARGS, "--out", str(tmp_path / "x")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli(["train", "--data", str(tmp_path / "empty"), *ARGS, "--out", str(tmp_path / "x")]) == 2
    assert "cannot use --data" in capsys.readouterr().err


def test_frozen_backbone_fit_writes_a_delta_that_rebuilds_the_model(scene_root, tmp_path, device) -> None:
    config = SceneConfig(size=32)
    train = SceneDataset(scene_root, "train", 16, config=config)
    val = SceneDataset(scene_root, "val", 8, config=config)
    card = {"arch": "resnet18", "classes": train.classes, "mean": [0.5] * 3, "std": [0.25] * 3, "input_size": 32}
    plain = build_model("resnet18", num_classes=3)
    base = save_checkpoint(tmp_path / "base.safetensors", plain.state_dict(), {**card, "attention": None})

    model = build_model("resnet18", "se", num_classes=3)
    load_backbone_state_dict(model, plain.state_dict())
    conv_before = model.layer1[0].conv1.weight.detach().clone()
    cfg = TrainConfig(epochs=1, batch_size=8, freeze_backbone=True, num_workers=0)
    # device as the CLI passes it ("cuda" without an index on a GPU): the run stays on it
    fit(
        model,
        train,
        val,
        cfg,
        out=tmp_path / "se.safetensors",
        card={**card, "attention": "se"},
        base=base,
        device=device.type,
    )
    assert model.fc.weight.device.type == device.type
    assert torch.equal(model.layer1[0].conv1.weight.detach().cpu(), conv_before)  # frozen
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    modules = dict(model.named_modules())
    kept = (torch.nn.BatchNorm2d, torch.nn.Linear)
    assert all(".attn." in n or isinstance(modules[n.rpartition(".")[0]], kept) for n in trainable)
    assert {n for n in trainable if ".attn." in n} == {n for n, _ in model.named_parameters() if ".attn." in n}

    sd, saved = read_checkpoint(tmp_path / "se.safetensors")
    assert set(sd) == set(delta_keys(model)) and not any("conv" in k and "attn" not in k for k in sd)
    assert saved["base"] == {"file": "base.safetensors", "sha256": tensors_sha256(plain.state_dict())}
    rebuilt = build_model("resnet18", "se", weights=str(tmp_path / "se.safetensors")).to(device)
    model.eval()
    x = torch.rand(2, 3, 32, 32, device=device)  # both models and the input on one device
    with torch.inference_mode():
        assert torch.allclose(rebuilt(x), model.to(memory_format=torch.contiguous_format)(x), atol=1e-5)

    # a base whose weights changed is refused by name
    altered = {k: v.clone() for k, v in plain.state_dict().items()}
    altered["conv1.weight"] += 1
    save_checkpoint(base, altered, {**card, "attention": None})
    with pytest.raises(ValueError, match=r"builds on base\.safetensors, but that file's weights have changed"):
        build_model("resnet18", "se", weights=str(tmp_path / "se.safetensors"))


def test_freeze_for_attention_keeps_attention_norms_and_head() -> None:
    model = build_model("resnet18", "sk", num_classes=4)  # SK replaces conv2: those convs are trained too
    names = set(freeze_for_attention(model))
    assert "layer1.0.conv2.paths.0.conv.weight" in names and "fc.weight" in names and "bn1.weight" in names
    assert "conv1.weight" not in names and "layer1.0.conv1.weight" not in names


def test_card_errors(tmp_path) -> None:
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(tmp_path / "bad.safetensors"), metadata={"attnviz": "{not json"})
    with pytest.raises(ValueError, match="model card that is not valid JSON"):
        read_card(tmp_path / "bad.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match=r"cannot read checkpoint junk\.safetensors"):
        read_card(tmp_path / "junk.safetensors")


@pytest.mark.slow
def test_torchrun_ddp_on_cpu(image_folder, tmp_path) -> None:
    """Two gloo processes through torchrun: one checkpoint, written by rank 0, trained with world size 2.

    ``--device cpu``: gloo even on a GPU host (the backend follows the device), never two ranks on one GPU."""
    out = tmp_path / "ddp.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "attnviz"]
    cmd += ["train", "--data", str(image_folder), *ARGS, "--epochs", "1", "--workers", "0", "--out", str(out)]
    cmd += ["--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = read_card(out)
    assert card["training"]["world_size"] == 2
    assert proc.stdout.count("best checkpoint:") == 2  # every rank finishes; only rank 0 saved
    assert card["training"]["device"].startswith("cpu")


@pytest.mark.cuda
@pytest.mark.slow
def test_torchrun_one_rank_on_cuda_with_nccl(image_folder, tmp_path) -> None:
    """One torchrun rank on its GPU (NCCL, cuda:LOCAL_RANK by default), then the CLI's --device cuda alone."""
    out = tmp_path / "nccl.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "attnviz"]
    cmd += ["train", "--data", str(image_folder), *ARGS, "--epochs", "1", "--workers", "0", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "process group has NOT been destroyed" not in proc.stderr
    assert not read_card(out)["training"]["device"].startswith("cpu")
    single = tmp_path / "single.safetensors"
    args = ["train", "--data", str(image_folder), *ARGS, "--epochs", "1", "--workers", "0", "--device", "cuda"]
    assert cli([*args, "--out", str(single)]) == 0


@pytest.mark.parametrize(
    ("requested", "local_rank", "n_gpus", "local_world", "expected"),
    [
        (None, 0, 0, 1, "cpu"),
        (None, 0, 1, 1, "cuda:0"),
        (None, 1, 2, 2, "cuda:1"),
        ("cuda", 0, 1, 1, "cuda:0"),  # an index always: torch.cuda.set_device needs one
        ("cuda", 3, 4, 4, "cuda:3"),
        (torch.device("cuda"), 0, 2, 1, "cuda:0"),
        ("cuda:1", 0, 2, 1, "cuda:1"),
        ("cpu", 1, 8, 2, "cpu"),  # CPU ranks on a GPU host
        ("cpu", 0, 0, 1, "cpu"),
    ],
)
def test_resolve_device(requested, local_rank: int, n_gpus: int, local_world: int, expected: str) -> None:
    dev = resolve_device(requested, local_rank, n_gpus, local_world)
    assert dev == torch.device(expected) and (dev.type == "cpu" or dev.index is not None)


@pytest.mark.parametrize(
    ("requested", "local_rank", "n_gpus", "local_world", "message"),
    [
        ("cuda", 0, 0, 1, "no CUDA GPU is available"),
        (None, 1, 1, 2, r"2 ranks on this node but 1 GPU\(s\).*--nproc_per_node 1"),  # two ranks, one GPU
        ("cuda", 1, 1, 2, "rank 1 has no GPU of its own"),
        ("cuda:2", 0, 2, 1, "does not exist"),
        ("cuda:0", 0, 2, 2, "all 2 ranks of this node on one GPU"),
        ("gpu", 0, 1, 1, "not 'gpu'"),
        ("meta", 0, 1, 1, "not 'meta'"),
    ],
)
def test_resolve_device_refuses(requested, local_rank: int, n_gpus: int, local_world: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_device(requested, local_rank, n_gpus, local_world)


def test_backend_follows_the_device_not_the_machine() -> None:
    assert backend_for(torch.device("cuda", 0)) == "nccl"
    assert backend_for(torch.device("cpu")) == "gloo"


class _Broken(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):
        raise RuntimeError("broken validation data")


def test_fit_under_torchrun_starts_gloo_for_cpu_and_destroys_the_group(tmp_path, monkeypatch) -> None:
    """torchrun's environment, one process: fit starts the group with the device's backend and ends it, also
    when training fails."""
    import torch.distributed as dist

    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(k, v)
    started = []
    real_init = dist.init_process_group

    def init(backend: str, **kwargs) -> None:  # a group of one in this process, whatever WORLD_SIZE says
        started.append(backend)
        real_init(backend, store=dist.HashStore(), rank=0, world_size=1)

    monkeypatch.setattr(dist, "init_process_group", init)
    data = torch.utils.data.TensorDataset(torch.rand(8, 3, 16, 16), torch.arange(8) % 2)
    card = {"arch": "resnet18", "classes": ["a", "b"], "mean": [0.5] * 3, "std": [0.25] * 3, "input_size": 16}
    cfg = TrainConfig(epochs=1, batch_size=4, num_workers=0)
    model = build_model("resnet18", num_classes=2)
    fit(model, data, data, cfg, out=tmp_path / "a.safetensors", card=card, device="cpu", log=lambda _: None)
    assert started == ["gloo"] and not dist.is_initialized()
    with pytest.raises(RuntimeError, match="broken validation data"):
        fit(model, data, _Broken(), cfg, out=tmp_path / "b.safetensors", card=card, device="cpu", log=lambda _: None)
    assert started == ["gloo", "gloo"] and not dist.is_initialized()
