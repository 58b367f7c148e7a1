"""What ``attnviz stats`` writes, and :func:`read_report` to open it again (for the app's Dataset view).

OUT/
  summary.json                     headline numbers, the run's settings, the file lists below
  report.md                        the figures embedded, the headline numbers stated
  tables/{blocks,stages,profiles,histograms,views,localisation,classes,problems}.{parquet,csv}
  figures/profiles_stage{K}.png    class-wise gate profiles per block of a stage (Hu et al., CVPR 2018, sec. 7.2)
  figures/histograms.png           gate-value histogram per attention site
  figures/mean_maps.png            the dataset-mean spatial view of every block (centre bias, peak spread)
  shards/                          finished chunks (resume); safe to delete once the report is written
"""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import pandas as pd

from .accumulate import finalize
from .data import Listing

__all__ = ["read_report", "write_report"]

TABLES = ("blocks", "stages", "profiles", "histograms", "views", "localisation", "faithfulness", "classes", "problems")
MAX_CLASSES_PLOTTED = 8


def _frame(rows: list[dict], columns: list[str] | None = None) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns) if rows or columns else pd.DataFrame()


def write_report(out: Path, partial: dict, listing: Listing, manifest: dict, run: dict) -> dict[str, Any]:
    """Write tables, figures, ``report.md`` and ``summary.json`` under ``out``; return the summary."""
    res = finalize(partial, listing.classes)
    res["problems"] = [
        {"index": i, "file": listing.files[i], "problem": p} for i, p in sorted(partial["problems"], key=lambda t: t[0])
    ]
    res["problems"] += [
        {"index": None, "file": c, "problem": "empty class: no image files"} for c in listing.empty_classes
    ]
    tables_dir, figures_dir = out / "tables", out / "figures"
    tables_dir.mkdir(parents=True, exist_ok=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    columns = {"problems": ["index", "file", "problem"]}
    tables = {}
    for name in TABLES:
        df = _frame(res[name], columns.get(name))
        df.to_csv(tables_dir / f"{name}.csv", index=False)
        df.to_parquet(tables_dir / f"{name}.parquet", index=False)
        tables[name] = {"csv": f"tables/{name}.csv", "parquet": f"tables/{name}.parquet", "rows": len(df)}
    figures = _figures(res, figures_dir)
    summary = {
        **res["summary"],
        "unreadable": sum(1 for p in res["problems"] if p["problem"].startswith("unreadable")),
        "mask_problems": sum(
            1 for p in res["problems"] if p["index"] is not None and not p["problem"].startswith("unreadable")
        ),
        "empty_classes": list(listing.empty_classes),
        "settings": manifest,
        "run": run,
        "tables": tables,
        "figures": figures,
        "report": "report.md",
    }
    (out / "report.md").write_text(_markdown(summary, res))
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_jsonable) + "\n")
    return summary


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    raise TypeError(f"not JSON serialisable: {type(v)}")


def _figures(res: dict, folder: Path) -> list[dict[str, str]]:
    from matplotlib.figure import Figure

    figures = []
    blocks = pd.DataFrame(res["blocks"])
    profiles = pd.DataFrame(res["profiles"])
    if not profiles.empty:
        for stage in sorted(profiles["stage"].dropna().unique()):
            sites = list(dict.fromkeys(profiles.loc[profiles["stage"] == stage, "site"]))
            fig = Figure(figsize=(10, 2.2 * len(sites)), layout="constrained")
            for k, site in enumerate(sites):
                ax = fig.add_subplot(len(sites), 1, k + 1)
                p = profiles[profiles["site"] == site]
                names = [c for c in dict.fromkeys(p["class"]) if c != "(mean across classes)"]
                for c in names[:MAX_CLASSES_PLOTTED]:
                    q = p[p["class"] == c]
                    ax.plot(q["channel"], q["mean"], lw=0.8, label=c)
                q = p[p["class"] == "(mean across classes)"]
                ax.plot(q["channel"], q["mean"], lw=1.4, color="black", label="mean across classes")
                row = blocks[blocks["site"] == site].iloc[0]
                corr = row["profile_correlation"]
                ax.set_title(f"{site}: class profile correlation {_num(corr)}", fontsize=9)
                ax.set_ylabel("mean gate")
                ax.set_xlim(0, max(1, len(q) - 1))
            ax.set_xlabel("channel index")
            ax.legend(fontsize=7, ncol=5, loc="lower right")
            name = f"profiles_stage{int(stage)}.png"
            fig.savefig(folder / name, dpi=110)
            figures.append({"file": f"figures/{name}", "title": f"Class-wise gate profiles, stage {int(stage)}"})
    hists = pd.DataFrame(res["histograms"])
    if not hists.empty:
        sites = list(dict.fromkeys(hists["site"]))
        cols = min(4, len(sites))
        rows = math.ceil(len(sites) / cols)
        fig = Figure(figsize=(3.2 * cols, 2.3 * rows), layout="constrained")
        for k, site in enumerate(sites):
            ax = fig.add_subplot(rows, cols, k + 1)
            h = hists[hists["site"] == site]
            ax.bar(h["lo"], h["count"] / max(1, h["count"].sum()), width=h["hi"] - h["lo"], align="edge")
            ax.set_title(site, fontsize=7)
            ax.set_xlim(0, 1)
            ax.tick_params(labelsize=6)
        fig.savefig(folder / "histograms.png", dpi=110)
        figures.append({"file": "figures/histograms.png", "title": "Gate values per site (share of values per bin)"})
    if res["mean_maps"]:
        names = list(res["mean_maps"])
        views = {v["block"]: v for v in res["views"]}
        cols = min(6, len(names))
        rows = math.ceil(len(names) / cols)
        fig = Figure(figsize=(2.2 * cols, 2.3 * rows), layout="constrained")
        for k, name in enumerate(names):
            ax = fig.add_subplot(rows, cols, k + 1)
            m = res["mean_maps"][name]
            ax.imshow(m, cmap="turbo", extent=(0, 1, 1, 0))
            v = views[name]
            if not math.isnan(v["peak_x"]):
                ax.plot([v["peak_x"]], [v["peak_y"]], "w+", ms=8)
            ax.set_title(f"{name}\ncentre {_num(v['centre_mass'])}, spread {_num(v['peak_spread'])}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.savefig(folder / "mean_maps.png", dpi=110)
        figures.append({"file": "figures/mean_maps.png", "title": "Dataset-mean spatial view per block"})
    return figures


def _num(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:.1f} %" if pct else f"{v:.3f}"


def _markdown(summary: dict, res: dict) -> str:
    s, run = summary["settings"], summary["run"]
    model = s["model"] + (f" + {s['attention']}" if s["attention"] else "")
    lines = [
        "# Attention statistics",
        "",
        f"{model} ({run['model_weights']}) on `{s['data']}`: {summary['images']} images in {summary['classes']} "
        f"classes, short side {s['size']} px{' (square)' if s['square'] else ''}; {run['world_size']} process(es) "
        f"on {run['device']}.",
        "",
        "## Headline numbers",
        "",
        f"* Images analysed: {summary['images']}; unreadable: {summary['unreadable']}; "
        f"mask problems: {summary['mask_problems']}; empty classes: {', '.join(summary['empty_classes']) or 'none'}.",
    ]
    if summary["accuracy"] is not None:
        lines.append(f"* Top-1 accuracy: {_num(summary['accuracy'], True)}.")
    lines += [f"* ⚠️ {note}." for note in run.get("notes", [])]
    if res["stages"]:
        parts = [
            f"stage {r['stage']} {_num(r['profile_correlation'])} "
            f"(between-class share {_num(r['between_class_share'])})"
            for r in res["stages"]
        ]
        lines.append(
            "* Class specificity of the channel gates (mean pairwise correlation of the class-wise mean gate "
            "profiles; 1 = the same profile for every class, lower = class-specific; Hu et al., CVPR 2018, "
            "section 7.2): " + "; ".join(parts) + "."
        )
    border = summary.get("border_peaks") or {}
    if border:
        parts = [f"{k} {_num(v['rate'], True)} (ring {_num(v['ring'], True)})" for k, v in border.items()]
        lines.append(
            "* Border peaks (the share of views whose maximum lies on the feature map's outer ring, block mean; "
            "in brackets the ring's share of the positions, where a shuffled map peaks; far above it, the view "
            "shows zero padding more than the image, bench/borders.py): " + "; ".join(parts) + "."
        )
    loc = summary["localisation"]
    if loc:
        parts = [f"{k} {_num(v['pointing'], True)} / {_num(v['energy'], True)}" for k, v in loc.items()]
        lines.append(
            f"* Pointing game / energy in mask over {summary['scored_images']} images with ground truth (mask "
            f"share {_num(summary['mask_share'], True)}): " + "; ".join(parts) + "."
        )
    faith = summary.get("faithfulness") or {}
    if faith:
        parts = [f"{k} {v['mean']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]" for k, v in faith.items()]
        lines.append(
            f"* Faithfulness over {max(v['images'] for v in faith.values())} images (deletion AUC and ROAD MoRF: "
            "lower = more faithful; insertion AUC and ROAD LeRF: higher; mean over blocks, 95 % bootstrap interval "
            "over images; per stage in tables/faithfulness.csv): " + "; ".join(parts) + "."
        )
    lines += ["", "## Figures", ""]
    for f in summary["figures"]:
        lines += [f"### {f['title']}", "", f"![{f['title']}]({f['file']})", ""]
    lines += ["## Per stage", "", "| stage | sites | profile correlation | between-class share |", "|---|---|---|---|"]
    lines += [
        f"| {r['stage']} | {r['sites']} | {_num(r['profile_correlation'])} | {_num(r['between_class_share'])} |"
        for r in res["stages"]
    ]
    lines += [
        "",
        "## Per site",
        "",
        "| site | kind | mean | std | near 0.5 | near 1 | flat maps | entropy | profile corr. |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {b['site']} | {b['kind']} | {_num(b['mean'])} | {_num(b['std'])} | {_num(b['near_half'], True)} | "
        f"{_num(b['near_one'], True)} | {_num(b['flat_maps'], True)} | {_num(b['entropy'])} | "
        f"{_num(b['profile_correlation'])} |"
        for b in res["blocks"]
    ]
    if res["problems"]:
        lines += ["", f"## Problems ({len(res['problems'])}; all in tables/problems.csv)", ""]
        lines += [f"* `{p['file']}`: {p['problem']}" for p in res["problems"][:50]]
    lines += ["", "Tables: " + ", ".join(f"`{t['csv']}`" for t in summary["tables"].values()) + " (and .parquet).", ""]
    return "\n".join(lines)


def read_report(folder: str | Path) -> dict[str, Any]:
    """What a finished ``attnviz stats`` folder holds, for a viewer (the app's Dataset tab): no model is run.

    Returns:
        ``{"folder", "title", "headline": {...}, "figures": [{"title", "path"}], "tables": {name: {"csv",
        "parquet", "rows"}}, "report": path, "outside": n}``, paths absolute. Files listed in summary.json are
        kept only when their names lead below ``folder`` (relative, no ``..``, no link out): the others (``outside``
        counts them) are dropped before anything looks at the disk, so the answer never depends on, or names, a
        file outside the folder.

    Raises:
        ValueError: ``folder`` is not a finished stats folder (no ``summary.json``, or files it lists missing).
    """
    folder = Path(folder)
    path = folder / "summary.json"
    if not path.is_file():
        raise ValueError(f"{folder} is not a finished `attnviz stats` folder: no summary.json")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    listed_figures = summary.get("figures", [])
    listed_tables = summary.get("tables", {})
    figures = [{"title": f["title"], "path": str(folder / f["file"])} for f in listed_figures if _below(f["file"])]
    tables = {
        k: {**v, "csv": str(folder / v["csv"]), "parquet": str(folder / v["parquet"])}
        for k, v in listed_tables.items()
        if _below(v["csv"]) and _below(v["parquet"])
    }
    root = folder.resolve()  # links inside the folder that lead out of it are dropped too (checked on inside paths)
    figures = [f for f in figures if Path(f["path"]).resolve().is_relative_to(root)]
    tables = {
        k: t for k, t in tables.items() if all(Path(t[f]).resolve().is_relative_to(root) for f in ("csv", "parquet"))
    }
    outside = len(listed_figures) + len(listed_tables) - len(figures) - len(tables)
    missing = [p for p in [f["path"] for f in figures] + [t["csv"] for t in tables.values()] if not Path(p).is_file()]
    if missing:
        raise ValueError(f"{folder}: files listed in summary.json are missing: {', '.join(missing)}")
    keys = (
        "images",
        "classes",
        "unreadable",
        "mask_problems",
        "empty_classes",
        "accuracy",
        "scored_images",
        "mask_share",
        "stage_profile_correlation",
        "stage_between_class_share",
        "localisation",
    )
    s = summary.get("settings", {})
    return {
        "folder": str(folder),
        "title": f"{s.get('model')}{' + ' + s['attention'] if s.get('attention') else ''} on {s.get('data')}",
        "headline": {k: summary.get(k) for k in keys},
        "run": summary.get("run", {}),
        "figures": figures,
        "tables": tables,
        "report": str(folder / summary.get("report", "report.md")),
        "outside": outside,
    }


def _below(name: Any) -> bool:
    """Whether ``name`` (a file name from summary.json) leads below its folder by path arithmetic alone: a relative
    path without ``..``, drive or NUL; nothing on disk is looked at."""
    if not isinstance(name, str) or not name or "\0" in name:
        return False
    path, windows = PurePosixPath(name), PureWindowsPath(name)
    return not (path.is_absolute() or windows.anchor or ".." in path.parts or ".." in windows.parts)
