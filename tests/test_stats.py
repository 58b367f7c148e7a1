"""attnviz stats: exact statistics against a direct computation, sharding under torchrun (stats and render),
resume after an interruption, bad data, read_report, and ``attnviz eval``'s shared localisation code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from attnviz import AttentionRecorder
from attnviz.capture.maps import AttentionMap
from attnviz.cli.main import main as cli
from attnviz.data import SceneConfig, SceneDataset
from attnviz.pipeline.image import decode_image
from attnviz.stats import read_report
from attnviz.stats.accumulate import accumulate, finalize, merge, new_partial
from attnviz.stats.data import chunks, list_data, shard
from attnviz.stats.localisation import TIE, aggregate, block_maps, centre_prior, score_maps

ROOT = Path(__file__).resolve().parent.parent
MODEL = ["--arch", "resnet18", "--attention", "se", "--weights", "random", "--size", "32", "--workers", "0"]


@pytest.fixture(scope="module")
def scenes(scene_root, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """images/<class>/*.png (18 scenes of 3 classes, 32 px) and masks/<class>/*.png beside them."""
    out = tmp_path_factory.mktemp("stats_scenes")
    ds = SceneDataset(scene_root, "test", 18, config=SceneConfig(size=32))
    for i in range(len(ds)):
        s = ds.scene(i)
        for sub, arr in (("images", s.image), ("masks", s.mask.astype(np.uint8) * 255)):
            (out / sub / ds.classes[s.label]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(out / sub / ds.classes[s.label] / f"{i:03d}.png")
    return out


def _stats(scenes: Path, out: Path, *extra: str) -> int:
    args = ["stats", str(scenes / "images"), "--masks", str(scenes / "masks"), *MODEL, "--out", str(out)]
    return cli([*args, "--batch-size", "4", "--chunk-size", "5", *extra])


def _tables(out: Path) -> dict[str, pd.DataFrame]:
    return {n: pd.read_parquet(out / "tables" / f"{n}.parquet") for n in ("blocks", "stages", "localisation", "views")}


def _map(name: str, data: list[list[float]]) -> AttentionMap:
    return AttentionMap(name, "channel", torch.tensor(data))


def test_accumulate_is_exact_by_hand() -> None:
    """Two classes, two images each, 3-channel gates: means, spread, correlation, between-class share by hand."""
    gates = [[0.2, 0.5, 0.9], [0.4, 0.5, 0.7], [0.9, 0.5, 0.1], [0.7, 0.5, 0.3]]
    labels = torch.tensor([0, 0, 1, 1])
    p = new_partial()
    accumulate(p, [_map("layer1.0.se.tap", gates[:3])], {}, labels[:3])  # two batches, one partial
    accumulate(p, [_map("layer1.0.se.tap", gates[3:])], {}, labels[3:])
    res = finalize(p, ["a", "b"])
    row = res["blocks"][0]
    g = np.array(gates)
    assert row["mean"] == pytest.approx(g.mean()) and row["std"] == pytest.approx(g.std())
    assert (row["min"], row["max"]) == pytest.approx((0.1, 0.9))
    assert row["near_half"] == pytest.approx(4 / 12) and row["near_one"] == 0  # the four 0.5s
    a, b = g[:2].mean(0), g[2:].mean(0)  # class profiles (0.3, 0.5, 0.8) and (0.8, 0.5, 0.2)
    assert row["profile_correlation"] == pytest.approx(np.corrcoef(a, b)[0, 1])
    mu = g.mean(0)
    between = (2 * (a - mu) ** 2 + 2 * (b - mu) ** 2).sum()
    assert row["between_class_share"] == pytest.approx(between / ((g - mu) ** 2).sum())
    prof = pd.DataFrame(res["profiles"])
    across = prof[prof["class"] == "(mean across classes)"]["mean"].to_numpy()
    assert across == pytest.approx((a + b) / 2)
    assert res["stages"][0]["stage"] == 1 and res["summary"]["stage_profile_correlation"]["stage1"] < 0


def test_merge_adds_sums_and_keeps_extremes() -> None:
    labels = torch.tensor([0, 1])
    one, two, both = new_partial(), new_partial(), new_partial()
    accumulate(one, [_map("s", [[0.1, 0.2]])], {}, labels[:1])
    accumulate(two, [_map("s", [[0.9, 0.3]])], {}, labels[1:])
    accumulate(both, [_map("s", [[0.1, 0.2], [0.9, 0.3]])], {}, labels)
    merged = merge(one, two)
    a, b = finalize(merged, ["x", "y"])["blocks"][0], finalize(both, ["x", "y"])["blocks"][0]
    assert a == pytest.approx(b) and a["min"] == pytest.approx(0.1) and a["max"] == pytest.approx(0.9)
    assert merged["sites"]["s"]["meta"]["stage"] is None  # meta kept, never added


def _near_tie(maps: torch.Tensor) -> bool:
    """Whether a (1, H, W) map has a value within float noise of score_maps' tie threshold (TIE * spread below
    the maximum), where whether it counts as a peak depends on the order of float reductions."""
    flat = maps.reshape(-1).double()
    top, spread = flat.max(), flat.max() - flat.min()
    gap = (top - flat) / spread.clamp(min=1e-12)  # 0 at the maximum
    return bool(((gap > TIE / 3) & (gap < 3 * TIE)).any())


def test_statistics_equal_a_direct_computation(scenes, tmp_path) -> None:
    """The CLI's numbers equal ones computed image by image with the recorder: class means, their correlation,
    the pointing game of every stage and the centre prior (through the score_maps evaluate uses)."""
    out = tmp_path / "out"
    assert _stats(scenes, out) == 0
    blocks = pd.read_csv(out / "tables" / "blocks.csv")
    loc = pd.read_csv(out / "tables" / "localisation.csv").set_index("name")
    listing = list_data(scenes / "images")
    from attnviz.pipeline.core import model_input
    from attnviz.sources.loading import build
    from attnviz.sources.spec import model_request

    model = build(model_request("resnet18", "se", "random")).eval()
    per_class: dict[int, list[np.ndarray]] = {}
    hits: dict[str, list[float]] = {}
    near: dict[str, list[bool]] = {}  # images with a value so close to the tie threshold that float noise decides
    for rel, y in zip(listing.files, listing.labels, strict=True):
        image = decode_image(scenes / "images" / rel).image
        x = model_input(image, model.weights_meta, 32)
        with AttentionRecorder(model, activations=True) as rec, torch.inference_mode():
            model(x)
        site = next(m for m in rec.maps if m.name.startswith("layer4.1"))
        per_class.setdefault(y, []).append(site.data[0].numpy())
        mask = torch.from_numpy(np.asarray(Image.open(scenes / "masks" / rel)) > 0)[None]
        for name, img in aggregate(block_maps(rec), (32, 32)).items():
            hits.setdefault(name, []).append(float(score_maps(img, mask, round(0.05 * 32))[0]))
            near.setdefault(name, []).append(_near_tie(img))
        hits.setdefault("centre prior", []).append(float(score_maps(centre_prior((32, 32))[None], mask, 2)[0]))
        near.setdefault("centre prior", []).append(_near_tie(centre_prior((32, 32))[None]))
    means = np.stack([np.mean(v, 0) for _, v in sorted(per_class.items())])
    r = np.corrcoef(means)
    expected = r[np.triu_indices(3, 1)].mean()
    row = blocks[blocks["site"] == site.name].iloc[0]
    assert row["images"] == 18 and row["profile_correlation"] == pytest.approx(expected, abs=1e-5)
    prof = pd.read_csv(out / "tables" / "profiles.csv")
    got = prof[(prof["site"] == site.name) & (prof["class"] == listing.classes[0])]["mean"].to_numpy()
    assert got == pytest.approx(means[0], abs=1e-5)
    for name in ("stage1", "stage2", "average", "centre prior"):  # stage 4 is 1 x 1 at 32 px: flat, ties
        # equal, except that an image whose map has a value at the tie threshold (batched and single-image
        # convolutions differ in the last bits) may score a different share of tied peaks: at most 1 each
        slack = sum(near[name]) / len(near[name])
        assert abs(loc.loc[name, "pointing"] - np.mean(hits[name])) <= slack + 1e-6, (name, slack)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 18 and summary["scored_images"] == 18 and summary["unreadable"] == 0
    report = (out / "report.md").read_text()
    assert "![Class-wise gate profiles, stage 4](figures/profiles_stage4.png)" in report
    assert "Pointing game / energy in mask over 18 images" in report


def test_resume_after_an_interruption_gives_the_same_result(scenes, tmp_path, monkeypatch, capsys) -> None:
    from attnviz.stats import run

    full = tmp_path / "full"
    assert _stats(scenes, full) == 0
    out = tmp_path / "resumed"
    saved = run._save_chunk
    calls = []

    def interrupted(path: Path, partial: dict) -> None:
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C after two chunks were kept
        calls.append(path)
        saved(path, partial)

    monkeypatch.setattr(run, "_save_chunk", interrupted)
    assert _stats(scenes, out) == 130  # Ctrl-C: one line, exit 130, the finished chunks kept
    monkeypatch.setattr(run, "_save_chunk", saved)
    assert sorted(p.name for p in (out / "shards").glob("chunk-*.pt")) == ["chunk-000000.pt", "chunk-000001.pt"]
    capsys.readouterr()
    assert _stats(scenes, out) == 0
    assert "2 of 4 chunks already done" in capsys.readouterr().out
    a, b = _tables(full), _tables(out)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    assert json.loads((out / "summary.json").read_text())["run"]["processed_now"] == 8  # chunks 2 and 3 only
    # other settings into the same folder are refused, --restart starts over
    assert _stats(scenes, out, "--limit", "6") == 2
    assert "holds chunks of another run (different fingerprint, images)" in capsys.readouterr().err
    assert _stats(scenes, out, "--limit", "6", "--restart") == 0


def test_bad_data_is_counted_and_listed(scenes, tmp_path, capsys) -> None:
    data = tmp_path / "data"
    masks = tmp_path / "masks"
    for cls in ("disc", "square"):
        (data / cls).mkdir(parents=True)
        (masks / cls).mkdir(parents=True)
    (data / "empty_class").mkdir()
    src = sorted((scenes / "images" / "disc").glob("*.png"))[:3]
    for i, f in enumerate(src):
        (data / "disc" / f"{i}.png").write_bytes(f.read_bytes())
        (masks / "disc" / f"{i}.png").write_bytes((scenes / "masks" / "disc" / f.name).read_bytes())
    (data / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    (data / "square" / "text.jpg").write_text("hello")
    Image.new("L", (10, 10)).save(masks / "disc" / "1.png")  # the image is 32 x 32
    (masks / "disc" / "2.png").unlink()  # no mask
    out = tmp_path / "out"
    args = ["stats", str(data), "--masks", str(masks), *MODEL, "--out", str(out), "--chunk-size", "2"]
    assert cli(args) == 0
    problems = pd.read_csv(out / "tables" / "problems.csv")
    by_file = dict(zip(problems["file"], problems["problem"], strict=True))
    assert by_file["square/broken.png"].startswith("unreadable") and by_file["square/text.jpg"].startswith("unreadable")
    assert by_file["disc/1.png"] == "mask is 10x10, the image 32x32"
    assert by_file["disc/2.png"] == "no mask"
    assert by_file["empty_class"] == "empty class: no image files"
    s = json.loads((out / "summary.json").read_text())
    assert (s["images"], s["unreadable"], s["mask_problems"], s["scored_images"]) == (3, 2, 2, 1)
    assert s["empty_classes"] == ["empty_class"]
    classes = pd.read_csv(out / "tables" / "classes.csv").set_index("class")
    assert classes.loc["disc", "images"] == 3 and classes.loc["empty_class", "images"] == 0
    assert "unreadable: 2; mask problems: 2; empty classes: empty_class" in (out / "report.md").read_text()
    assert cli(["stats", str(tmp_path / "missing"), *MODEL, "--out", str(out)]) == 2
    assert "is neither a folder nor a file list" in capsys.readouterr().err


def test_file_list_and_coco_boxes(scenes, tmp_path) -> None:
    files = sorted((scenes / "images").rglob("*.png"))[:4]
    lst = tmp_path / "list.csv"
    lst.write_text("path,label\n" + "".join(f"{f},{f.parent.name}\n" for f in files))
    coco = {
        "images": [{"id": i, "file_name": str(f), "width": 32, "height": 32} for i, f in enumerate(files)],
        "annotations": [{"image_id": i, "bbox": [8, 8, 16, 16]} for i in range(3)],  # the last has no box
    }
    (tmp_path / "boxes.json").write_text(json.dumps(coco))
    listing = list_data(lst)
    assert len(listing.files) == 4 and listing.classes == sorted({f.parent.name for f in files})
    out = tmp_path / "out"
    assert cli(["stats", str(lst), "--boxes", str(tmp_path / "boxes.json"), *MODEL, "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["scored_images"] == 4  # a box-less image is a mask of nothing: scored (misses), not a problem
    assert s["mask_share"] == pytest.approx(3 * 0.25 / 4)


def test_read_report_lists_figures_tables_and_headline(scenes, tmp_path) -> None:
    out = tmp_path / "out"
    assert _stats(scenes, out, "--limit", "9") == 0
    r = read_report(out)
    assert r["headline"]["images"] == 9 and set(r["headline"]["stage_profile_correlation"]) == {
        f"stage{k}" for k in range(1, 5)
    }
    titles = [f["title"] for f in r["figures"]]
    assert "Class-wise gate profiles, stage 1" in titles and "Dataset-mean spatial view per block" in titles
    assert all(Path(f["path"]).is_file() for f in r["figures"])
    assert set(r["tables"]) >= {"blocks", "profiles", "localisation", "problems"}
    assert pd.read_parquet(r["tables"]["blocks"]["parquet"]).shape[0] == r["tables"]["blocks"]["rows"] == 8
    (out / "figures" / "histograms.png").unlink()
    with pytest.raises(ValueError, match=r"missing: .*histograms\.png"):
        read_report(out)
    with pytest.raises(ValueError, match=r"no summary\.json"):
        read_report(tmp_path)


def test_shard_and_chunks_cover_everything_once() -> None:
    items = list(range(11))
    parts = [shard(items, r, 3) for r in range(3)]
    assert sorted(i for part in parts for i in part) == items and parts[1] == [1, 4, 7, 10]
    assert [list(c) for c in chunks(5, 2)] == [[0, 1], [2, 3], [4]]


def _run(args: list[str], cwd: Path, ranks: int) -> subprocess.CompletedProcess:
    """``python -m attnviz ARGS``, under torchrun with ``ranks`` gloo processes when ``ranks`` > 1, one thread each."""
    cmd = [sys.executable, "-m", "attnviz"]
    if ranks > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks), *cmd[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def test_torchrun_two_ranks_equal_one_process_and_render_each_image_once(scenes, tmp_path) -> None:
    """2 gloo ranks on the CPU: the same tables as one process; render writes every image's folder exactly once.

    Both runs use one thread per process, so each chunk's partial is computed the same way: the tables agree to
    the last bits (also the pointing game, whose argmax a thread count's rounding could tip)."""
    args = ["stats", str(scenes / "images"), "--masks", str(scenes / "masks"), *MODEL, "--batch-size", "4"]
    args += ["--chunk-size", "5", "--device", "cpu"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun rank (OMP_NUM_THREADS=1)
    try:
        assert cli([*args, "--out", str(tmp_path / "single")]) == 0
    finally:
        torch.set_num_threads(threads)
    proc = _run([*args, "--out", str(tmp_path / "multi")], tmp_path, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("report:") == 1  # rank 0 writes
    summary = json.loads((tmp_path / "multi" / "summary.json").read_text())
    assert summary["run"]["world_size"] == 2 and summary["run"]["processed_now"] == 18
    a, b = _tables(tmp_path / "single"), _tables(tmp_path / "multi")
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], rtol=1e-9)
    # render: the union of the ranks' folders is the single run's, each written by one rank
    images = scenes / "images" / "disc"
    assert cli(["render", str(images), "--out", str(tmp_path / "r1"), "--attention", "se", "--workers", "0"]) == 0
    proc = _run(
        ["render", str(images), "--out", str(tmp_path / "r2"), "--attention", "se", "--workers", "0"], tmp_path, 2
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = [line.split(" -> ")[1].split("/ (")[0] for line in proc.stdout.splitlines() if " -> " in line]
    assert len(written) == len(set(written)) == len(list(images.glob("*.png")))
    files = {p.relative_to(tmp_path / "r1") for p in (tmp_path / "r1").rglob("*") if p.is_file()}
    assert files == {p.relative_to(tmp_path / "r2") for p in (tmp_path / "r2").rglob("*") if p.is_file()}


def test_pointing_game_by_hand() -> None:
    """A spatial gate peaking top-left in both images; the object is top-left in the first image only."""
    data = torch.zeros(2, 4, 4)
    data[:, 0, 0] = 1.0
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, :2, :2] = True  # under the peak (upsampled 4 -> 8: pixels (0..1, 0..1) are the maximum)
    masks[1, 6:, 6:] = True
    p = new_partial()
    m = AttentionMap("layer1.0.attn.sa.tap", "spatial", data, size=(4, 4))
    accumulate(p, [m], {}, torch.tensor([0, 0]), masks=masks, has_mask=torch.tensor([True, True]))
    loc = {r["name"]: r for r in finalize(p, ["a"])["localisation"]}
    assert loc["layer1.0"]["pointing"] == loc["stage1"]["pointing"] == loc["average"]["pointing"] == 0.5
    assert loc["centre prior"]["pointing"] == 0.0  # the centre is in neither mask
    assert p["scored"] == 2 and p["mask_share"] == pytest.approx(2 * 4 / 64)
