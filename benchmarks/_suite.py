"""The suite's entry points: :func:`run_suite` (used by the tests) and the command line."""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks._policies import MABWISER_BATCH
from benchmarks._report import checks_table, collect, evaluate, scenario_table, summarise_all
from benchmarks._runner import RunResult, execute, make_tasks
from benchmarks._scenarios import BY_ID, POLICIES, select_scenarios

logger = logging.getLogger("benchmarks")

RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: mode -> (seeds, seeds that also run MABWiser, seeds per task, workers)
MODES: dict[str, tuple[int, int, int, int]] = {
    "quick": (3, 1, 3, 1),
    "full": (200, 50, 25, 2),
}


def run_suite(
    mode: str = "quick",
    *,
    scenarios: str | None = None,
    seeds: int | None = None,
    horizon: int | None = None,
    workers: int | None = None,
    mabwiser_seeds: int | None = None,
    policies: str | None = None,
    tuning: dict[str, Any] | None = None,
    output: Path | None = None,
    echo: bool = False,
) -> dict[str, Any]:
    """Run the routing-quality suite and return (and optionally write) its JSON report.

    Args:
        mode: ``quick`` (few seeds, short horizons) or ``full`` (200 seeds, full horizons).
        scenarios: Comma-separated scenario ids or prefixes (``B2,B8-easy``); None runs all.
        seeds: Seeds per scenario (overrides the mode's).
        horizon: Requests per run for every scenario (overrides the mode's horizons).
        workers: Worker processes (1 runs in this process).
        mabwiser_seeds: How many of the seeds also run MABWiser (it is the slowest policy).
        policies: Comma-separated policies to run (default: every one).
        tuning: Overrides of the engine's ``EngineTuning`` defaults, for experiments.
        output: Where to write the JSON report, or None.
        echo: Print the tables as the run ends.

    Returns:
        The report: settings, per-scenario summaries of every metric, and the target checks.

    Example:
        >>> report = run_suite("quick", scenarios="B1", seeds=2, horizon=500)
        >>> sorted(report["scenarios"]["B1"]["policies"])[:2]
        ['chain', 'kalibr']
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    default_seeds, default_mab, chunk, default_workers = MODES[mode]
    n_seeds = seeds if seeds is not None else default_seeds
    n_workers = workers if workers is not None else default_workers
    n_mab = min(n_seeds, mabwiser_seeds if mabwiser_seeds is not None else default_mab)
    chosen = select_scenarios(scenarios)
    if policies:
        wanted = [p.strip() for p in policies.split(",") if p.strip()]
        unknown = set(wanted) - set(POLICIES)
        if unknown:
            raise ValueError(f"unknown policies {sorted(unknown)}; known: {list(POLICIES)}")
        chosen = [replace(s, policies=tuple(p for p in s.policies if p in wanted)) for s in chosen]
    horizon_of = {
        s.id: horizon or (s.horizon if mode == "full" else s.quick_horizon) for s in chosen
    }
    overrides = tuple(sorted((tuning or {}).items()))
    # Chunks small enough to keep every worker busy until the end, large enough to amortise.
    per_task = (
        max(1, min(chunk, math.ceil(n_seeds / (4 * n_workers)))) if n_workers > 1 else n_seeds
    )
    tasks = make_tasks(chosen, n_seeds, horizon_of, n_mab, per_task, overrides)
    started = time.perf_counter()
    results: list[RunResult] = []
    for done, batch in enumerate(execute(tasks, n_workers), 1):
        results.extend(batch)
        logger.info("%d/%d tasks done (%.0f s)", done, len(tasks), time.perf_counter() - started)
    wall = time.perf_counter() - started
    raw, seconds = collect(results)
    summary = summarise_all(raw)
    checks = evaluate(summary, raw)
    report: dict[str, Any] = {
        "mode": mode,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]) if echo else None,
        "seeds": n_seeds,
        "mabwiser_seeds": n_mab,
        "mabwiser_batch": MABWISER_BATCH,
        "workers": n_workers,
        "tuning_overrides": dict(overrides),
        "wall_seconds": round(wall, 1),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "scenarios": {
            s.id: {
                "title": s.title,
                "horizon": horizon_of[s.id],
                "means": s.instance.means,
                "costs": s.instance.costs,
                "policies": summary.get(s.id, {}),
                "seconds": {p: round(v, 2) for p, v in seconds.get(s.id, {}).items()},
            }
            for s in chosen
        },
        "targets": [
            {"scenario": c.scenario, "target": c.target, "value": c.value, "met": c.met}
            for c in checks
        ],
    }
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2, allow_nan=False, default=_json_default))
    if echo:
        print(render(report))
    return report


def _json_default(value: object) -> object:
    raise TypeError(f"not JSON serialisable: {value!r}")


def render(report: dict[str, Any]) -> str:
    """The report as markdown: a table per scenario, then the targets."""
    parts = [
        f"Routing-quality benchmark, {report['mode']} mode: {report['seeds']} seeds "
        f"(MABWiser on the first {report['mabwiser_seeds']}, fed in batches of "
        f"{report['mabwiser_batch']}), {report['wall_seconds']:.0f} s on "
        f"{report['workers']} worker(s).",
    ]
    for sid, data in report["scenarios"].items():
        kalibr_s = data["seconds"].get("kalibr")
        runs = data["policies"].get("kalibr", {}).get("regret", {}).get("n", 0)
        speed = ""
        if kalibr_s and runs:
            speed = f", engine {kalibr_s / runs / data['horizon'] * 1e6:.0f} us/decision"
        parts.append(f"\n### {sid}: {data['title']} (T = {data['horizon']}{speed})\n")
        parts.append(scenario_table(sid, data["policies"]))
    checks = report["targets"]
    if checks:
        from benchmarks._report import Check

        parts.append("\n### Targets\n")
        if report["mode"] != "full":
            parts.append(
                "The targets are defined for the full horizons and 200 seeds: at this scale "
                "the verdicts are indicative only.\n"
            )
        parts.append(checks_table([Check(**c) for c in checks]))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks``: run the suite, print the tables, write the JSON report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--quick",
        action="store_const",
        const="quick",
        dest="mode",
        help="few seeds, short horizons (the test suite's smoke run)",
    )
    group.add_argument(
        "--full",
        action="store_const",
        const="full",
        dest="mode",
        help="all scenarios, 200 seeds, full horizons, 2 workers",
    )
    parser.add_argument("--scenarios", help=f"comma-separated ids or prefixes of {list(BY_ID)}")
    parser.add_argument("--seeds", type=int, help="seeds per scenario")
    parser.add_argument("--horizon", type=int, help="requests per run, for every scenario")
    parser.add_argument("--workers", type=int, help="worker processes")
    parser.add_argument("--mabwiser-seeds", type=int, help="seeds that also run MABWiser")
    parser.add_argument("--policies", help=f"comma-separated subset of {list(POLICIES)}")
    parser.add_argument(
        "--tuning",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override an EngineTuning default (experiments only; repeatable)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="JSON report path (default benchmarks/results/quality-<mode>.json)",
    )
    args = parser.parse_args(argv)
    mode = args.mode or "quick"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    output = args.output or RESULTS_DIR / f"quality-{mode}.json"
    run_suite(
        mode,
        scenarios=args.scenarios,
        seeds=args.seeds,
        horizon=args.horizon,
        workers=args.workers,
        mabwiser_seeds=args.mabwiser_seeds,
        policies=args.policies,
        tuning=dict(_override(item) for item in args.tuning),
        output=output,
        echo=True,
    )
    logger.info("report written to %s", output)
    return 0


def _override(item: str) -> tuple[str, Any]:
    name, sep, text = item.partition("=")
    if not sep:
        raise SystemExit(f"--tuning expects NAME=VALUE, got {item!r}")
    return name.strip(), ast.literal_eval(text.strip())
