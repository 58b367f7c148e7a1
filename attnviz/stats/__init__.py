"""Dataset-level attention statistics (``attnviz stats``), sharded across torchrun ranks.

* :func:`run_stats` (:mod:`attnviz.stats.run`) runs a network over a dataset, writes tables, figures, a report;
* :func:`read_report` (:mod:`attnviz.stats.report`) opens a finished output folder (what a viewer shows);
* :mod:`attnviz.stats.localisation` is the pointing game and energy in mask that ``attnviz eval`` uses too.
"""

from __future__ import annotations

from typing import Any

__all__ = ["read_report", "run_stats"]


def __getattr__(name: str) -> Any:  # lazy: ``attnviz.train.evaluate`` imports the localisation module alone
    if name == "run_stats":
        from .run import run_stats

        return run_stats
    if name == "read_report":
        from .report import read_report

        return read_report
    raise AttributeError(f"module 'attnviz.stats' has no attribute {name!r}")
