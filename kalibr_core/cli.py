"""The ``kalibr-core`` command line: the provider simulator, the demo, and store tools.

::

    kalibr-core sim [--port 8765] [--config scripts.json] [--seed 0]
    kalibr-core demo [--requests 600]
    kalibr-core stats GOAL [--db PATH]
    kalibr-core insights [--goal GOAL] [--db PATH]
    kalibr-core serve [--host 127.0.0.1] [--port 8080] [--store-url URL] [--allow-remote]
                      [--workers N] [--no-access-log]
    kalibr-core keys create --tenant TENANT [--name NAME] [--db URL]
    kalibr-core keys list [--tenant TENANT] [--db URL]
    kalibr-core keys revoke KEY_ID [--db URL]
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
    _add_service_commands(sub)
    args = parser.parse_args(args_list)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command in {"serve", "keys"}:
        return _run_service_command(args)
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


def _add_service_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    store_help = "store URL or SQLite path (default $KALIBR_STORE_URL or the user data dir)"
    serve = sub.add_parser("serve", help="run the HTTP intelligence service (needs [service])")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--store-url", "--db", dest="store_url", help=store_help)
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (put a TLS-terminating proxy in front)",
    )
    serve.add_argument(
        "--dev-key",
        help="an API key accepted for tenant $KALIBR_BOOTSTRAP_TENANT (default 'default') "
        "without being stored; local use only (also $KALIBR_BOOTSTRAP_KEY)",
    )
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port and the store (a SQLite file or PostgreSQL)",
    )
    serve.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="do not log every request (saves CPU under heavy traffic)",
    )
    keys = sub.add_parser("keys", help="manage the service's API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key for a tenant (printed once)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", help="a label, e.g. the client that uses the key")
    create.add_argument("--db", "--store-url", dest="store_url", help=store_help)
    listing = actions.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--tenant")
    listing.add_argument("--db", "--store-url", dest="store_url", help=store_help)
    revoke = actions.add_parser("revoke", help="revoke a key by its key_id")
    revoke.add_argument("key_id")
    revoke.add_argument("--db", "--store-url", dest="store_url", help=store_help)


def _run_service_command(args: argparse.Namespace) -> int:
    from kalibr_core.service import _cli

    if args.command == "serve":
        return _cli.serve(
            host=args.host,
            port=args.port,
            store_url=args.store_url,
            allow_remote=args.allow_remote,
            dev_key=args.dev_key,
            log_level=args.log_level,
            workers=args.workers,
            access_log=args.access_log,
        )
    if args.action == "create":
        return _cli.keys_create(args.tenant, args.name, args.store_url)
    if args.action == "list":
        return _cli.keys_list(args.tenant, args.store_url)
    return _cli.keys_revoke(args.key_id, args.store_url)


if __name__ == "__main__":
    raise SystemExit(main())
