"""``docs/benchmarks.md`` and ``docs/benchmarks.png`` from the benchmarks' JSON files.

    .venv/bin/python bench/report.py          # make bench runs it after bench/run.py

Reads ``bench/results/jobdeck.json`` (bench/run.py), ``bench/results/latency.json``
(bench/latency.py) and, when it is there, ``bench/results/peers.json`` (``make
bench-peers``). Writes its own section of ``docs/benchmarks.md`` (the headline table of
ratios against the targets, a table per scenario, the machine, the method), refreshes the
latency section from ``latency.json``, and draws the chart. Text outside the generated
sections (such as the profile notes) is kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import latency
from chart import write_chart
from common import DOCS_FILE, RESULTS_DIR, machine_line, replace_section, versions_line

SECTION = "bench/report.py"
CHART = DOCS_FILE.with_suffix(".png")
NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
Row = tuple[str, str, str, str]


def load(path: Path) -> dict[str, Any]:
    """A JSON file, or ``{}`` when it is not there."""
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def num(value: Any, digits: int = 0) -> str:
    """A figure for a table: thousands separated; ``–`` when missing."""
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "n/a"}[met]


class Figures:
    """The three JSON files, and lookups into them."""

    def __init__(self, jobdeck: dict, latency_report: dict, peers: dict) -> None:
        self.jobdeck = jobdeck
        self.latency = latency_report
        self.peers: dict[str, Any] = {
            name: peer for name, peer in peers.get("peers", {}).items() if "error" not in peer
        }
        self.peers_file = peers

    def scenario(self, name: str) -> dict[str, Any]:
        return self.jobdeck.get("scenarios", {}).get(name, {}).get("backends", {})

    def method(self, name: str) -> str:
        return self.jobdeck.get("scenarios", {}).get(name, {}).get("method", "not measured")

    def p50s(self, backend: str, topology: str, measure: str, kind: str, metric: str) -> list:
        """The medians (ms) of one latency line, one per run."""
        found = []
        for run in self.latency.get("runs", []):
            for r in run["results"]:
                key = (r["backend"], r["topology"], r["measure"], r["kind"], r["metric"])
                if key == (backend, topology, measure, kind, metric) and r["n"]:
                    found.append(r["p50"])
        return found

    def best_peer(self, backend: str, key: str) -> tuple[str, float] | None:
        """The peer of ``backend`` with the highest ``key``."""
        rated = [(p[key], name) for name, p in self.peers.items() if p.get("backend") == backend]
        rated = [(value, name) for value, name in rated if value]
        if not rated:
            return None
        value, name = max(rated)
        return name, value


# --- the headline ---------------------------------------------------------------------------


def ratio_row(
    what: str, mine: float | None, theirs: tuple[str, float] | None, floor: float, note: str = ""
) -> Row:
    """A row comparing a jobdeck rate with a peer's (or a baseline's)."""
    target = f"≥ {floor:g}×"
    if mine is None or theirs is None:
        missing = "no figures" if mine is None else "no peer figures (`make bench-peers`)"
        return what, target, missing, verdict(None)
    name, value = theirs
    ratio = mine / value
    text = f"**{ratio:.2f}×** ({num(mine)} vs {name} {num(value)} /s){note}"
    return what, target, text, verdict(ratio >= floor)


def latency_row(what: str, p50s: list[float], limit: float, note: str = "") -> Row:
    """A row of a median latency against its bound."""
    if not p50s:
        return what, f"≤ {limit:g} ms", "not measured", verdict(None)
    shown = " / ".join(latency.ms(v) for v in p50s)
    met = all(v <= limit for v in p50s)
    return what, f"≤ {limit:g} ms", f"**{shown} ms**{note}", verdict(met)


def headline(f: Figures) -> list[Row]:
    """Every target of the issue, measured."""
    drains, enqueues = f.scenario("drain"), f.scenario("enqueue")
    rows = []

    def steady(backend: str) -> float | None:
        return drains.get(backend, {}).get("drain_steady_per_s")

    rows.append(
        ratio_row(
            "Drain, steady state, PostgreSQL, vs pgqueuer",
            steady("postgres"),
            ("pgqueuer", f.peers["pgqueuer"]["drain_steady_per_s"])
            if f.peers.get("pgqueuer", {}).get("drain_steady_per_s")
            else None,
            2,
        )
    )
    best = f.best_peer("redis", "drain_steady_per_s")
    rows.append(
        ratio_row("Drain, steady state, SQLite, vs the best Redis peer", steady("sqlite"), best, 2)
    )
    batch = enqueues.get("postgres", {})
    http_batch = batch.get("http", {}).get("batch_per_s")
    rows.append(
        ratio_row(
            "Batch enqueue, Python API, PostgreSQL, vs pgqueuer's bulk enqueue",
            batch.get("python", {}).get("batch_per_s"),
            ("pgqueuer", f.peers["pgqueuer"]["enqueue_bulk_per_s"])
            if f.peers.get("pgqueuer", {}).get("enqueue_bulk_per_s")
            else None,
            0.5,
            f"; HTTP `POST /v1/jobs:batch`: {num(http_batch)} /s" if http_batch else "",
        )
    )
    pickup, cancel = latency.PICKUP, latency.DECIDED
    rows.append(
        latency_row(
            "Pickup p50, PostgreSQL, separate `jobdeck worker`",
            f.p50s("postgres", "separate", "pickup", "steps", pickup),
            2,
        )
    )
    rows.append(
        latency_row(
            "Pickup p50, `jobdeck serve` on SQLite",
            f.p50s("sqlite", "single", "pickup", "steps", pickup),
            1,
        )
    )
    rows.append(
        latency_row(
            "Cancel p50, PostgreSQL, async task, separate worker",
            f.p50s("postgres", "separate", "cancel", "steps", cancel),
            50,
            " (embedded: "
            + " / ".join(
                latency.ms(v) for v in f.p50s("postgres", "single", "cancel", "steps", cancel)
            )
            + " ms)",
        )
    )
    for backend, figures in f.scenario("http").items():
        original = figures["original"]["ok_per_s"]
        jobdeck = figures["jobdeck"]
        v1 = jobdeck["v1"]["ok_per_s"]
        rows.append(
            ratio_row(
                f"HTTP submit, `serve --workers 2` on {NAMES[backend]}, vs the original app",
                jobdeck["compat"]["ok_per_s"],
                ("original", original),
                0.5,
                f"; `POST /v1/jobs`: {v1 / original:.2f}× ({num(v1)} /s)",
            )
        )
    progress = [
        (figures[kind]["progress_ns_per_call"], f"{NAMES[backend]} {kind}")
        for backend, figures in f.scenario("progress").items()
        for kind in ("progress_sync", "progress_async")
        if kind in figures
    ]
    if progress:
        worst, where = max(progress)
        rows.append(
            (
                "`ctx.progress` per call (worst case)",
                "≤ 1 µs",
                f"**{worst:.0f} ns** ({where})",
                verdict(worst <= 1000),
            )
        )
    for backend, figures in f.scenario("growth").items():
        ratio = figures.get("drain_ratio")
        small = figures["small"]["drain"]["drain_steady_per_s"]
        large = figures["large"]["drain"]["drain_steady_per_s"]
        rows.append(
            (
                f"Drain at {num(figures['large']['rows'])} rows vs {num(figures['small']['rows'])}"
                f", {NAMES[backend]}",
                "≥ 0.8×",
                f"**{ratio:.2f}×** ({num(large)} vs {num(small)} /s)" if ratio else "–",
                verdict(None if ratio is None else ratio >= 0.8),
            )
        )
    return rows


# --- per scenario ---------------------------------------------------------------------------


def table(header: Sequence[str], rows: list[Sequence[str]], right_from: int = 1) -> list[str]:
    """A markdown table; columns from ``right_from`` on are right-aligned."""
    rule = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def enqueue_section(f: Figures) -> list[str]:
    rows = []
    for backend, figures in f.scenario("enqueue").items():
        py, http, bare = figures["python"], figures["http"], figures.get("bare_driver", {})
        rows.append(
            [
                NAMES[backend],
                num(py["single_per_s"]),
                num(py["batch_per_s"]),
                num(http["single_per_s"]),
                num(http["batch_per_s"]),
                num(bare.get("single_per_s")),
                num(bare.get("batch_per_s")),
            ]
        )
    header = ["backend", "Python, one at a time", "Python, batches", "HTTP, one at a time"]
    header += ["HTTP, batches", "bare driver, one", "bare driver, batches"]
    return table(header, rows)


def drain_section(f: Figures) -> list[str]:
    rows = []
    for backend, d in f.scenario("drain").items():
        rows.append(
            [
                f"jobdeck ({NAMES[backend]})",
                num(d["jobs"]),
                num(d["drain_steady_per_s"]),
                num(d["drain_from_spawn_per_s"]),
                num(d["first_start_after_spawn_s"], 2),
                num(d["worker_cpu_us_per_job"]),
                num(d["worker_rss_mib"], 1),
            ]
        )
    header = ["worker", "jobs", "steady /s", "from spawn /s", "first start after spawn (s)"]
    return table([*header, "worker CPU µs/job", "worker RSS MiB"], rows)


def peers_section(f: Figures) -> list[str]:
    if not f.peers_file:
        return ["No `bench/results/peers.json` yet: `make bench-peers` measures the peers."]
    rows: list[Sequence[str]] = []
    for backend, d in f.scenario("drain").items():
        enq = f.scenario("enqueue").get(backend, {}).get("python", {})
        pickup = f.p50s(backend, "separate", "pickup", "steps", latency.PICKUP)
        rows.append(
            [
                f"**jobdeck** {f.jobdeck['machine']['versions'].get('jobdeck')}",
                NAMES[backend],
                num(enq.get("single_per_s")),
                num(enq.get("batch_per_s")),
                num(d["drain_steady_per_s"]),
                num(d["drain_from_spawn_per_s"]),
                latency.ms(pickup[0]) if pickup else "–",
            ]
        )
    for name, p in sorted(f.peers.items(), key=lambda i: -(i[1].get("drain_steady_per_s") or 0)):
        pickup = p.get("pickup_ms") or {}
        rows.append(
            [
                f"{name} {p.get('version', '')}",
                p.get("backend", ""),
                num(p.get("enqueue_single_per_s")),
                num(p.get("enqueue_bulk_per_s")),
                num(p.get("drain_steady_per_s")),
                num(p.get("drain_from_spawn_per_s")),
                num(pickup.get("p50"), 1),
            ]
        )
    failed = sorted(set(f.peers_file.get("peers", {})) - set(f.peers))
    header = ["queue", "backend", "enqueue one /s", "enqueue bulk /s", "drain steady /s"]
    lines = table([*header, "drain from spawn /s", "pickup p50 ms"], rows, right_from=2)
    lines += [
        "",
        f"Peers measured by `bench/peers/` on {str(f.peers_file.get('date', ''))[:10]} "
        "(`bench/results/peers.json`, which gives each one's settings); jobdeck's pickup here "
        "is the separate-worker topology.",
    ]
    if failed:
        lines.append(f"Peers that failed in that run: {', '.join(failed)}.")
    return lines


def http_section(f: Figures) -> list[str]:
    rows = []
    for backend, h in f.scenario("http").items():
        for label, w in (
            ("original app (recipe)", h["original"]),
            ("jobdeck `POST /start_job/{id}`", h["jobdeck"]["compat"]),
            ("jobdeck `POST /v1/jobs`", h["jobdeck"]["v1"]),
        ):
            rows.append(
                [
                    NAMES[backend],
                    label,
                    num(w["ok_per_s"]),
                    f"{w['ok_per_s'] / h['original']['ok_per_s']:.2f}×",
                    num(w["latency_p50_us"] / 1000, 1),
                    num(w["latency_p99_us"] / 1000, 1),
                    str(w["non_2xx"] + w["timeouts"] + w["read_errors"]),
                ]
            )
    header = ["run beside", "server", "2xx /s", "vs original", "p50 ms", "p99 ms"]
    return table([*header, "errors"], rows, right_from=2)


def progress_section(f: Figures) -> list[str]:
    rows = []
    for backend, p in f.scenario("progress").items():
        for kind in ("progress_sync", "progress_async"):
            k = p.get(kind)
            if k:
                rows.append(
                    [
                        NAMES[backend],
                        kind,
                        num(k["progress_ns_per_call"]),
                        num(k["noop_call_ns_per_call"]),
                        num(k["empty_loop_ns_per_round"]),
                    ]
                )
    header = ["backend", "task", "ctx.progress ns/call", "no-op call ns", "empty loop ns/round"]
    return table(header, rows, right_from=2)


def growth_section(f: Figures) -> list[str]:
    def p(figures: dict[str, Any]) -> str:
        return f"{latency.ms(figures['p50'])} / {latency.ms(figures['p99'])}"

    rows = []
    for backend, g in f.scenario("growth").items():
        for size in ("small", "large"):
            s = g[size]
            rows.append(
                [
                    NAMES[backend],
                    num(s["rows"]),
                    num(s["drain"]["drain_steady_per_s"]),
                    p(s["get_ms"]),
                    p(s["list_first_page_ms"]),
                    p(s["stats_ms"]),
                    num(s["prefill_seconds"], 1),
                ]
            )
    header = ["backend", "rows", "drain steady /s", "GET job p50 / p99 ms", "first page p50 / p99"]
    return table([*header, "stats p50 / p99", "pre-fill s"], rows, right_from=1)


def fanout_section(f: Figures) -> list[str]:
    def p(figures: dict[str, Any]) -> str:
        if not figures.get("n"):
            return "–"
        return " / ".join(latency.ms(figures[k]) for k in ("p50", "p95", "p99"))

    rows = []
    for backend, x in f.scenario("fanout").items():
        rows.append(
            [
                NAMES[backend],
                str(x["streams_open"]),
                num(x["rss_jobs_running_kib"] / 1024, 1),
                num(x["rss_peak_kib"] / 1024, 1),
                num(x["rss_per_stream_kib"], 1),
                p(x["change_to_delivery_ms"]),
                p(x["stored_to_delivery_ms"]),
                num(x["events_per_s"]),
                f"{x['client_cpu_share']:.0%}",
            ]
        )
    header = ["backend", "streams", "API RSS before MiB", "peak MiB", "KiB/stream"]
    header += ["change → delivery p50/p95/p99 ms", "stored → delivery ms", "events/s"]
    return table([*header, "client CPU"], rows)


# --- the section ----------------------------------------------------------------------------

SCENARIO_SECTIONS: tuple[tuple[str, str, Callable[[Figures], list[str]]], ...] = (
    ("enqueue", "Enqueue (jobs/s)", enqueue_section),
    ("drain", "Drain: one worker, default settings", drain_section),
    ("drain", "Beside the peers", peers_section),
    ("http", "HTTP submit under load", http_section),
    ("progress", "`ctx.progress` in a hot loop", progress_section),
    ("growth", "Growth: 10,000 vs 1,000,000 rows", growth_section),
    ("fanout", "Event fan-out: 500 SSE streams", fanout_section),
)


def peers_note(f: Figures) -> str:
    """When the peers were measured, and how busy the machine was then and now."""
    if not f.peers_file:
        return "The peers' figures are missing: `make bench-peers` writes them."
    machine = f.peers_file.get("machine", {})
    return (
        f"Ratios to peers compare two runs: the peers' (`make bench-peers`, started "
        f"{str(f.peers_file.get('date', ''))[:16].replace('T', ' ')} UTC, load average "
        f"{machine.get('load_average_start')} at its start and "
        f"{machine.get('load_average_end')} at its end) and this one (load average "
        f"{f.jobdeck['machine']['load_average']} at its start). On a shared 2-CPU machine a "
        "busier run is slower: for a fair ratio run both back to back on a quiet machine."
    )


def markdown(f: Figures) -> str:
    """The generated section of ``docs/benchmarks.md``."""
    machine = f.jobdeck["machine"]
    lines = [
        "## jobdeck's benchmark suite",
        "",
        f"Measured by `make bench` (`bench/run.py`, then `bench/report.py`) on "
        f"{f.jobdeck['date'][:10]}, every scenario on fresh processes and a fresh database "
        "(a SQLite file in a temporary directory, a PostgreSQL schema of its own), jobdeck's "
        "default settings. The machine is small and shared: read the ratios, not the "
        "absolute figures, and expect a few tens of percent of noise between runs.",
        "",
        machine_line(machine),
        versions_line(machine),
        "",
        "### Headline: the targets",
        "",
        *table(["", "target", "measured", ""], [list(r) for r in headline(f)], right_from=9),
        "",
        peers_note(f),
        "",
        f"![drain and enqueue rates, jobdeck and its peers]({CHART.name})",
        "",
    ]
    for name, title, render in SCENARIO_SECTIONS:
        if not f.scenario(name):
            continue
        scenario = f.jobdeck["scenarios"][name]
        lines += [f"### {title}", "", *render(f), ""]
        if render is not peers_section:
            lines += [
                f"Method (`bench/{MODULES[name]}`): {f.method(name)}. Took "
                f"{scenario.get('seconds')} s; load average at its end "
                f"{scenario.get('load_average_at_end')}.",
                "",
            ]
    lines += [
        "Pickup and cancel latency: see the latency section below (`bench/latency.py`).",
        "",
        "Rerun:",
        "",
        "```sh",
        "make bench                                   # every scenario, both backends",
        ".venv/bin/python bench/run.py --only drain,growth --backends postgres",
        ".venv/bin/python bench/run.py --quick && .venv/bin/python bench/report.py",
        "make bench-peers                             # the peers, in .venv-peers",
        "```",
        "",
        "Raw figures: `bench/results/jobdeck.json`, `bench/results/latency.json`, "
        "`bench/results/peers.json`.",
    ]
    return "\n".join(lines)


MODULES = {
    "enqueue": "enqueue.py",
    "drain": "drain.py",
    "http": "http_submit.py",
    "progress": "progress.py",
    "growth": "growth.py",
    "fanout": "fanout.py",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--docs", type=Path, default=DOCS_FILE)
    parser.add_argument("--no-chart", action="store_true")
    args = parser.parse_args(argv)
    jobdeck = load(args.results / "jobdeck.json")
    if not jobdeck:
        print(f"no {args.results / 'jobdeck.json'}: run bench/run.py first", file=sys.stderr)
        return 1
    latency_report = load(args.results / "latency.json")
    figures = Figures(jobdeck, latency_report, load(args.results / "peers.json"))
    replace_section(args.docs, SECTION, markdown(figures), before=latency.SECTION)
    if latency_report:
        latency.write_section(args.docs, latency_report)
    print(f"wrote {args.docs}")
    if not args.no_chart:
        write_chart(args.docs.with_suffix(".png"), jobdeck, figures.peers)
        print(f"wrote {args.docs.with_suffix('.png')}")
    for row in headline(figures):
        print(" | ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
