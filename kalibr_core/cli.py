"""The ``kalibr-core`` command line: the provider simulator, the demo, and store tools.

::

    kalibr-core sim [--port 8765] [--config scripts.json] [--seed 0]
    kalibr-core demo [--requests 600]
    kalibr-core stats GOAL [--db PATH]
    kalibr-core insights [--goal GOAL] [--db PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence


def _print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kalibr-core`` command."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["sim"]:  # the simulator parses its own options
        from kalibr_core.simulator._cli import run

        return run(args_list[1:])
    parser = argparse.ArgumentParser(prog="kalibr-core", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sim", help="run the provider simulator on loopback (see sim --help)")
    demo = sub.add_parser("demo", help="outcome routing vs a fallback chain, on the simulator")
    demo.add_argument("--requests", type=int, default=600)
    demo.add_argument("--seed", type=int, default=7)
    stats = sub.add_parser("stats", help="routing statistics of a goal (embedded store)")
    stats.add_argument("goal")
    stats.add_argument("--db", help="SQLite file (default $KALIBR_DB or the user data dir)")
    insights = sub.add_parser("insights", help="diagnostics per goal (embedded store)")
    insights.add_argument("--goal")
    insights.add_argument("--window-hours", type=float, default=168)
    insights.add_argument("--db")
    args = parser.parse_args(args_list)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from kalibr_core.demo import run_demo

        return run_demo(requests=args.requests, seed=args.seed)
    from kalibr_core import Intelligence

    with Intelligence(args.db) as intel:
        if args.command == "stats":
            _print_json(intel.stats(args.goal))
        else:
            _print_json(intel.get_insights(args.goal, args.window_hours))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
