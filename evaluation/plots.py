"""PNG plots of the nightly benchmark: metric trends over runs and X-T slices of the worst videos
(frame strips of the best and worst video: :mod:`evaluation.preview`).

Drawn with matplotlib's object-oriented ``Figure`` API (no pyplot state, no GUI backend, safe in
worker threads) rather than with PIL: date axes, ticks and titles are what make a trend readable,
and PIL would need all of them hand-drawn. Every function returns PNG bytes, so the caller writes
them anywhere through :mod:`infra.storage` (local or s3://).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from evaluation.metrics import METRIC_NAMES, xt_slice

COLUMNS = 3


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def metric_trends_png(summary_rows: Sequence[Mapping[str, Any]], title: str = "") -> bytes:
    """One line per metric over the runs' summary rows (x: run start, UTC), oldest first.

    The metrics are averaged per run over the test videos (Sec. 5.2). Their scales differ by
    orders of magnitude (SCuts around 0.03, OFS in pixels^2, CLIP score around 30), so each metric
    gets its own panel; metrics no run has (no model weights) are left out.
    """
    names = [name for name in METRIC_NAMES if any(row[name] is not None for row in summary_rows)]
    rows = max(1, math.ceil(len(names) / COLUMNS))
    figure = Figure(figsize=(4 * COLUMNS, 2.8 * rows + 0.6), layout="constrained")
    figure.suptitle(title or "metric means per run")
    axes = figure.subplots(rows, COLUMNS, squeeze=False).ravel()
    times = [row["run_started_at"] for row in summary_rows]
    for ax, name in zip(axes, names):
        values = [math.nan if row[name] is None else row[name] for row in summary_rows]
        ax.plot(times, values, marker="o")
        ax.set_title(name)
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_axis_off()
    if not names:
        axes[0].text(0.5, 0.5, "no metric computed yet", ha="center", va="center")
    return _png(figure)


def _badness(row: Mapping[str, Any]) -> tuple[bool, float, bool, float]:
    mawe, scuts = row.get("mawe"), row.get("scuts")
    return (mawe is None, -(mawe or 0.0), scuts is None, -(scuts or 0.0))


def worst_videos(video_rows: Sequence[Mapping[str, Any]], count: int) -> list[Mapping[str, Any]]:
    """The ``count`` worst videos: highest MAWE (Eq. 9) first, ties and videos without MAWE by
    most scene cuts (SCuts); videos with neither come last."""
    return sorted(video_rows, key=_badness)[:count]


def best_video(video_rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The best video by the same order (lowest MAWE, then fewest SCuts) among those scored; None
    when no video has either metric."""
    scored = [row for row in video_rows if row.get("mawe") is not None or row.get("scuts") is not None]
    return sorted(scored, key=_badness)[-1] if scored else None


def xt_slices_png(videos: Sequence[tuple[str, np.ndarray]]) -> bytes:
    """A panel of X-T slices (Fig. 4, Fig. 12): for each (label, (N, H, W, 3) uint8 frames) the
    middle pixel row of every frame stacked over time, time running down. Seams between chunks
    show as horizontal breaks, stagnation as vertical streaks."""
    figure = Figure(figsize=(3.2 * max(1, len(videos)), 4.2), layout="constrained")
    axes = figure.subplots(1, max(1, len(videos)), squeeze=False).ravel()
    for ax, (label, frames) in zip(axes, videos):
        ax.imshow(xt_slice(frames), aspect="auto", interpolation="nearest")
        ax.set_title(label, fontsize=8, wrap=True)
        ax.set_xlabel("x")
        ax.set_ylabel("frame")
    if not videos:
        axes[0].set_axis_off()
        axes[0].text(0.5, 0.5, "no finished video", ha="center", va="center")
    return _png(figure)


__all__ = ["best_video", "metric_trends_png", "worst_videos", "xt_slices_png"]
