"""The chart of ``docs/benchmarks.md``: drain and enqueue rates, jobdeck beside its peers.

Called by ``bench/report.py``; matplotlib comes with the ``bench`` extra
(``pip install -e '.[bench]'``, which ``make bench`` does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"postgres": "#336791", "sqlite": "#7a9a01", "redis": "#c0392b"}
JOBDECK_EDGE = "#000000"


def _bars(ax: Any, rows: list[tuple[str, str, float]], title: str, *, log: bool) -> None:
    """Horizontal bars (label, backend, value), top to bottom; jobdeck's outlined."""
    rows = [r for r in rows if r[2]]
    labels = [label for label, _, _ in rows]
    values = [value for _, _, value in rows]
    colors = [COLORS.get(backend, "#888888") for _, backend, _ in rows]
    edges = [JOBDECK_EDGE if label.startswith("jobdeck") else "none" for label in labels]
    positions = list(range(len(rows)))[::-1]
    ax.barh(positions, values, color=colors, edgecolor=edges, linewidth=1.5)
    ax.set_yticks(positions, labels, fontsize=8)
    ax.set_title(title, fontsize=10)
    if log:
        ax.set_xscale("log")
    ax.grid(axis="x", alpha=0.3)
    for y, value in zip(positions, values, strict=True):
        ax.text(value, y, f" {value:,.0f}", va="center", fontsize=7)


def drain_rows(jobdeck: dict[str, Any], peers: dict[str, Any]) -> list[tuple[str, str, float]]:
    """Steady-state drain rates: jobdeck per backend, then every peer, fastest first."""
    drains = jobdeck.get("scenarios", {}).get("drain", {}).get("backends", {})
    rows = [
        (f"jobdeck ({backend})", backend, figures.get("drain_steady_per_s") or 0)
        for backend, figures in drains.items()
    ]
    peer_rows = [
        (f"{name} ({peer.get('backend')})", peer.get("backend", ""), peer.get("drain_steady_per_s"))
        for name, peer in peers.items()
    ]
    rows += sorted(((a, b, c or 0) for a, b, c in peer_rows), key=lambda row: -row[2])
    return rows


def enqueue_rows(jobdeck: dict[str, Any], peers: dict[str, Any]) -> list[tuple[str, str, float]]:
    """Enqueue rates: jobdeck's four paths per backend, then the peers' single and bulk."""
    enqueues = jobdeck.get("scenarios", {}).get("enqueue", {}).get("backends", {})
    rows = []
    for backend, figures in enqueues.items():
        for path, label in (("python", "Python API"), ("http", "HTTP")):
            for kind in ("single", "batch"):
                value = figures.get(path, {}).get(f"{kind}_per_s") or 0
                rows.append((f"jobdeck ({backend}) {label} {kind}", backend, value))
    for name, peer in sorted(peers.items()):
        backend = peer.get("backend", "")
        rows.append((f"{name} single", backend, peer.get("enqueue_single_per_s") or 0))
        rows.append((f"{name} bulk", backend, peer.get("enqueue_bulk_per_s") or 0))
    return rows


def write_chart(path: Path, jobdeck: dict[str, Any], peers: dict[str, Any]) -> None:
    """Two panels: steady-state drain rate, enqueue rate (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    drains, enqueues = drain_rows(jobdeck, peers), enqueue_rows(jobdeck, peers)
    height = max(4.0, 0.22 * max(len(drains), len(enqueues)) + 1.5)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, height))
    _bars(left, drains, "Drain, steady state (jobs/s): one worker, no-op jobs", log=False)
    _bars(right, enqueues, "Enqueue (jobs/s, log scale)", log=True)
    legend = [Patch(color=color, label=backend) for backend, color in COLORS.items()]
    figure.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=8)
    machine = jobdeck.get("machine", {})
    figure.suptitle(
        f"jobdeck {machine.get('versions', {}).get('jobdeck', '')}, {jobdeck.get('date', '')[:10]}"
        f", {machine.get('cpu_count')} CPUs (outlined: jobdeck)",
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0.05, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
