"""What the page says about a result in words: the status line, the checkpoint's measured scores, what the demo
network knows, and a comparison side's name."""

from __future__ import annotations

from ..pipeline.core import Result
from ..sources.demo import demo_categories

__all__ = ["demo_note", "is_demo", "measured_line", "side_label", "status_text"]


def measured_line(summary: dict) -> str:
    """The checkpoint's held-out scores from its model card: accuracy and, per stage, how often the map's peak
    falls on the object (pointing game), so users see which stages localise and which do not."""
    stages = ", ".join(f"{k.replace('stage', 'stage ')} {100 * v:.0f} %" for k, v in summary["stage_pointing"].items())
    text = f"measured on held-out scenes: top-1 {100 * summary['accuracy']:.0f} %"
    if stages:
        text += f" · map peak on the object (pointing game): {stages}"
        if summary.get("average_pointing") is not None:
            text += f"; stage average {100 * summary['average_pointing']:.0f} %"
        if summary.get("centre_prior") is not None:
            text += f" (centre prior {100 * summary['centre_prior']:.0f} %)"
    if summary.get("real_photos_accuracy") is not None:
        text += f" · real photos pasted on textures: top-1 {100 * summary['real_photos_accuracy']:.0f} %"
    return text


def is_demo(result: Result) -> bool:
    """Whether ``result`` came from the shipped demo network (8 categories)."""
    return str(result.model.get("weights_source", "")).startswith("demo")


def demo_note(result: Result) -> str:
    """What the demo network knows, said next to its predictions (its 8 categories); '' for other networks."""
    if not is_demo(result):
        return ""
    names = demo_categories()
    return (
        f"**demo network: {len(names)} categories** ({', '.join(names)}), trained by attnviz on cut-and-paste "
        "scenes; a photo of anything else still gets one of these."
    )


def side_label(result: Result) -> str:
    """A comparison side's name: network, attention, weights."""
    m = result.model
    return f"{m['arch']} · {m['attention'] or 'no attention'} · {m['weights']}"


def status_text(result: Result, extra: list[str]) -> str:
    """The status line: warnings, the network, its weights, device and input size, the request's timings, the
    checkpoint's measured scores and notes (``extra``: the handler's own, e.g. the channel gate's range)."""
    timing = " · ".join(f"{k} {v:.0f} ms" for k, v in result.timings.items())
    lines = []
    if result.warning:
        lines.append(f"⚠️ **{result.warning}**")
    if result.capture_warning:
        lines.append(f"⚠️ **{result.capture_warning}**")
    m = result.model
    lines.append(
        f"{m['arch']} + {m['attention'] or 'no attention'} · weights: {m['weights_source']} · "
        f"device: {result.settings['device']} · input {result.input_size[0]}×{result.input_size[1]}"
    )
    lines.append(timing)
    if m.get("measured"):
        lines.append(measured_line(m["measured"]))
    lines += [f"note: {n}" for n in result.notes + extra]
    return "\n\n".join(lines)
