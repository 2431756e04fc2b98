"""jobdeck's benchmark suite: every scenario on SQLite and PostgreSQL, then the figures in JSON.

    .venv/bin/python bench/run.py                      # or: make bench (then bench/report.py)
    .venv/bin/python bench/run.py --only drain,progress --backends postgres
    .venv/bin/python bench/run.py --quick              # smaller counts, shorter runs

Scenarios (one module each; each says how it measures): ``enqueue`` (bench/enqueue.py),
``drain`` (bench/drain.py), ``latency`` (pickup and cancel, bench/latency.py: one run; cancel
on the ``single`` and ``separate`` topologies; its figures in ``bench/results/latency.json``),
``http`` (bench/http_submit.py), ``progress`` (bench/progress.py), ``growth``
(bench/growth.py), ``fanout`` (bench/fanout.py).

Writes ``bench/results/jobdeck.json``: the machine, versions, date, the settings of the run
and every scenario's raw figures. With ``--only`` the other scenarios' figures already in the
file are kept. The exit status is 1 when a scenario failed or a jobdeck process did not exit
with 0 (the original app of the HTTP scenario is stopped the hard way on purpose).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import drain
import enqueue
import fanout
import growth
import http_submit
import latency
import progress
from common import (
    RESULTS_DIR,
    add_common_args,
    load_average,
    log,
    machine_info,
    names_arg,
    now_iso,
    usable_backends,
    write_json,
)

DEFAULT_JSON = RESULTS_DIR / "jobdeck.json"
CANCEL_TOPOLOGIES = "single,separate"


def run_latency(args: argparse.Namespace) -> dict[str, Any]:
    """bench/latency.py, one run: pickup on every topology, cancel on the two the targets
    name; its figures go to ``latency.json`` next to ``--json``."""
    argv = ["--runs", "1", "--cancel-topologies", CANCEL_TOPOLOGIES, "--no-docs"]
    argv += ["--backends", ",".join(args.backends), "--postgres-url", args.postgres_url]
    argv += ["--pickup-samples", "100" if args.quick else "200"]
    argv += ["--cancel-samples", "10" if args.quick else "30"]
    argv += ["--json", str(args.json.parent / "latency.json")]
    status = latency.main(argv)
    return {
        "see": "bench/results/latency.json",
        "argv": argv,
        "exit_status": status,
    }


SCENARIOS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "enqueue": enqueue.run,
    "drain": drain.run,
    "latency": run_latency,
    "http": http_submit.run,
    "progress": progress.run,
    "growth": growth.run,
    "fanout": fanout.run,
}


def exit_statuses(value: Any) -> list[int]:
    """Every jobdeck process's exit status found in a scenario's figures."""
    found: list[int] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "original":
                continue  # stopped the hard way on purpose
            if key == "exit_statuses":
                found += list(inner.values())
            else:
                found += exit_statuses(inner)
    elif isinstance(value, list):
        for inner in value:
            found += exit_statuses(inner)
    return found


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--only", type=names_arg(list(SCENARIOS)), default=list(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="smaller counts, shorter runs")
    parser.add_argument("--jobs", type=int, help="jobs the drain scenario drains")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write figures")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen scenarios and write the JSON file."""
    args = parse_args(argv)
    args.backends = usable_backends(args.backends, args.postgres_url)
    if not args.backends:
        return 1
    report: dict[str, Any] = {}
    if set(args.only) != set(SCENARIOS) and args.json.exists():
        report = json.loads(args.json.read_text())
    report["machine"] = machine_info(args.postgres_url if "postgres" in args.backends else None)
    report["date"] = report["machine"]["date"]
    report["settings"] = {
        "backends": args.backends,
        "quick": args.quick,
        "jobdeck_settings": "defaults; only JOBDECK_DATABASE_URL, JOBDECK_PG_SCHEMA and "
        "JOBDECK_TASKS set (and JOBDECK_CONCURRENCY for the fan-out's worker)",
    }
    scenarios = report.setdefault("scenarios", {})
    failed = []
    for name in args.only:
        log(f"=== {name} ===")
        started = time.monotonic()
        try:
            figures = SCENARIOS[name](args)
        except Exception as exc:
            traceback.print_exc()
            figures = {"error": f"{type(exc).__name__}: {exc}"}
            failed.append(name)
        figures["date"] = now_iso()
        figures["seconds"] = round(time.monotonic() - started, 1)
        figures["load_average_at_end"] = load_average()
        scenarios[name] = figures
        write_json(args.json, report)
        bad = [s for s in exit_statuses(figures) if s != 0]
        if bad or figures.get("exit_status"):
            failed.append(name)
    log(f"wrote {args.json}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
