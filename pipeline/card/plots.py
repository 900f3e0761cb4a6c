"""PNG plots for the data card: score and length histograms, stage composition.

matplotlib is imported inside the functions (pipeline/ stays importable without it) and used
through its object API on the Agg canvas, so no global backend or pyplot state is touched and
plots can be drawn from worker threads. The inputs are already-counted data (values with
their counts), never rows, so plotting costs nothing however large the shard set.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from embedcurate.pipeline.atomic import atomic_path

# Weighted samples: (values, counts), both 1-D and the same length.
Points = tuple[np.ndarray, np.ndarray]

FIGSIZE = (6.4, 3.6)
DPI = 100
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def _new_figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _save(figure: Any, path: Path) -> Path:
    # No "Software" metadata: the same figures give the same bytes across matplotlib versions.
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})
    return path


def _bin_edges(series: Mapping[str, Points], num_bins: int, log_scale: bool) -> np.ndarray:
    low = min(float(values.min()) for values, _ in series.values())
    high = max(float(values.max()) for values, _ in series.values())
    if log_scale:
        return np.geomspace(max(low, 1.0), max(high, 2.0), num_bins + 1)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, num_bins + 1)


def plot_histograms(
    series: Mapping[str, Points],
    path: str | Path,
    *,
    title: str,
    xlabel: str,
    num_bins: int = 50,
    log_scale: bool = False,
) -> Path | None:
    """Overlaid weighted histograms, one per named series; None when there is nothing to draw."""
    series = {name: points for name, points in series.items() if len(points[0])}
    if not series:
        return None
    figure, axes = _new_figure()
    edges = _bin_edges(series, num_bins, log_scale)
    for color, (name, (values, counts)) in zip(COLORS, series.items(), strict=False):
        total = int(counts.sum())
        axes.hist(
            np.clip(values, edges[0], edges[-1]),
            bins=edges,
            weights=counts,
            histtype="stepfilled",
            alpha=0.45,
            color=color,
            edgecolor=color,
            label=f"{name} (n={total:,})",
        )
    if log_scale:
        axes.set_xscale("log")
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("rows" if len(series) == 1 else "count")
    axes.legend(loc="best", fontsize="small")
    return _save(figure, Path(path))


def plot_composition(
    by_group: Mapping[str, Mapping[str, int]],
    path: str | Path,
    *,
    title: str,
    group_label: str = "stage",
) -> Path | None:
    """Horizontal stacked bars: one bar per group (stage), one segment per part (task type)."""
    groups = [group for group, parts in by_group.items() if sum(parts.values())]
    if not groups:
        return None
    parts = sorted({part for group in groups for part in by_group[group]})
    figure, axes = _new_figure()
    left = np.zeros(len(groups))
    positions = np.arange(len(groups))
    for index, part in enumerate(parts):
        widths = np.array([by_group[group].get(part, 0) for group in groups], dtype=float)
        axes.barh(
            positions, widths, left=left, color=COLORS[index % len(COLORS)], label=part, height=0.6
        )
        left += widths
    axes.set_yticks(positions, [f"{group_label} {group}" for group in groups])
    axes.invert_yaxis()
    axes.set_xlabel("rows")
    axes.set_title(title)
    axes.legend(loc="best", fontsize="small")
    return _save(figure, Path(path))


VERDICT_COLORS = {"negative": COLORS[0], "positive": COLORS[1], "unsure": "#999999"}


def plot_judge_scores(points: Mapping[str, list[Any]], path: str | Path) -> Path | None:
    """Judge score against teacher rank, one dot per judged negative, coloured by verdict.

    False negatives concentrate at the hardest ranks; the plot shows where, and whether the
    judge's scores separate (a cross-encoder's do; an LLM's are 0 or 1).
    """
    ranks = np.asarray(points["ranks"], dtype=float)
    if not len(ranks):
        return None
    scores = np.asarray(points["scores"], dtype=float)
    verdicts = np.asarray(points["verdicts"])
    figure, axes = _new_figure()
    jitter = np.random.default_rng(0).uniform(-0.2, 0.2, len(ranks))  # ranks are integers
    for verdict, color in VERDICT_COLORS.items():
        chosen = verdicts == verdict
        if chosen.any():
            axes.scatter(
                ranks[chosen] + jitter[chosen],
                scores[chosen],
                s=8,
                alpha=0.6,
                color=color,
                label=f"{verdict} ({int(chosen.sum())})",
            )
    axes.set_title("Judge score against teacher rank of each judged negative")
    axes.set_xlabel("teacher rank (0 = hardest)")
    axes.set_ylabel("judge score")
    axes.legend(loc="best", fontsize="small")
    return _save(figure, Path(path))
