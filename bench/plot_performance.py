"""Plot generation time against duration per precision mode from ``bench_fast.py --json`` files.

    .venv/bin/python bench/plot_performance.py run.json [more.json ...] -o docs/performance.png

Needs matplotlib (``pip install 'sa3-daw[bench]'``). Each point is the median wall time of one mode at one
length; files measured together (one run) should be plotted together, as only their ratios compare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/performance.png"))
    parser.add_argument("--title", default="small-music, random weights, CPU",
                        help="say the machine, threads and modes measured")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points: dict[str, list[tuple[float, float]]] = {}
    for path in args.runs:
        for seconds, result in json.loads(path.read_text())["timing"].items():
            for mode, runs in result["runs"].items():
                points.setdefault(mode, []).append((float(seconds), statistics.median(r["wall"] for r in runs)))
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, xy in sorted(points.items()):
        xs, ys = zip(*sorted(xy), strict=True)
        ax.plot(xs, ys, marker="o", label=mode)
    ax.set_xlabel("requested duration (s)")
    ax.set_ylabel("wall time, text to audio (s)")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
