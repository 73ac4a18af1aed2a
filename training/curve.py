"""The training curve of exported models: the loss history that every export's ``training.json``
holds (one value per step), drawn as one panel per stage (raw loss faint, a moving average bold).

    python -m training.curve toyworld/weights/{base,streaming,refiner} --out curve.png
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

SMOOTHING = 50
"""Moving-average window (steps) of the bold line."""


def read_histories(paths: Sequence[str | Path]) -> dict[str, list[tuple[int, float]]]:
    """``{model directory name (stage): [(step, loss), ...]}`` for every path that is an export
    (holds ``training.json``) or a folder of exports (``*/training.json``), in the given order."""
    found = {}
    for path in map(Path, paths):
        records = [path / "training.json"] if (path / "training.json").exists() else sorted(path.glob("*/training.json"))
        for record_path in records:
            record = json.loads(record_path.read_text())
            name = f"{record_path.parent.name} ({record['stage']})"
            found[name] = [(int(step), float(loss)) for step, loss in record["history"]]
    return found


def training_curve_png(histories: Mapping[str, Sequence[tuple[int, float]]], window: int = SMOOTHING) -> bytes:
    """PNG bytes: one panel per model, loss against step on a log axis."""
    names = [n for n in histories if histories[n]]
    figure = Figure(figsize=(4.2 * max(1, len(names)), 3.2), layout="constrained")
    for i, name in enumerate(names):
        steps, loss = (np.array(v) for v in zip(*histories[name]))
        axis = figure.add_subplot(1, len(names), i + 1)
        axis.plot(steps, loss, alpha=0.25, linewidth=0.6)
        k = min(window, len(loss))
        axis.plot(steps[k - 1:], np.convolve(loss, np.ones(k) / k, mode="valid"), linewidth=1.6)
        axis.set(title=name, xlabel="step", yscale="log")
        axis.grid(True, alpha=0.3)
    figure.axes[0].set_ylabel("training loss")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.curve", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="exported models (with training.json), or folders of them")
    parser.add_argument("--out", required=True, help="PNG file to write")
    args = parser.parse_args(argv)
    histories = read_histories(args.paths)
    if not histories:
        print(f"training.curve: error: no training.json in or under {' '.join(args.paths)}", file=sys.stderr)
        return 2
    Path(args.out).write_bytes(training_curve_png(histories))
    print(f"{args.out}: " + ", ".join(f"{n}: {len(h)} steps, last loss {h[-1][1]:.4f}" for n, h in histories.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
