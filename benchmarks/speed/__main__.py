"""Speed benchmarks: decide latency, durable outcome throughput, Router overhead.

Run ``python -m benchmarks.speed --quick`` (seconds) or ``--full`` (10^6 stored outcomes).
Everything is measured side by side in one run; results print as a table and are written to
``benchmarks/results/speed-<mode>.json``.

* decide(): in-process p50/p99 over an embedded SQLite store, for 2, 10 and 50 paths, and for
  10 paths once the store holds 10^6 (full) / 10^5 (quick) outcomes: decide must not slow down.
* report_outcome(): durable outcomes per second from 1 and 4 threads into one SQLite file.
* Router.completion(): the same request to the provider simulator, interleaved, through the
  Router and through the bare ``openai`` SDK; the overhead is the difference of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kalibr_core import Intelligence
from kalibr_core.store import OutcomeRecord

RESULTS = Path(__file__).resolve().parent.parent / "results"


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_us": round(ordered[len(ordered) // 2] * 1e6, 2),
        "p99_us": round(ordered[int(len(ordered) * 0.99)] * 1e6, 2),
        "n": len(ordered),
    }


def _intel(directory: str, name: str, paths: int) -> Intelligence:
    intel = Intelligence(os.path.join(directory, name), seed=7)
    for i in range(paths):
        intel.register_path("bench_goal", f"model-{i}")
    return intel


def bench_decide(directory: str, paths: int, decisions: int) -> dict[str, Any]:
    """decide() latency with outcomes flowing (each decision is reported)."""
    intel = _intel(directory, f"decide-{paths}.db", paths)
    for i in range(200):  # warm-up: posteriors with data, scope loaded
        d = intel.decide("bench_goal")
        intel.report_outcome(d["trace_id"], "bench_goal", success=i % 3 != 0)
    samples = []
    for i in range(decisions):
        started = time.perf_counter()
        d = intel.decide("bench_goal")
        samples.append(time.perf_counter() - started)
        if i % 10 == 0:
            intel.report_outcome(d["trace_id"], "bench_goal", success=i % 3 != 0)
    intel.close()
    return {"paths": paths, **_percentiles(samples)}


def bench_decide_large(directory: str, stored: int, decisions: int) -> dict[str, Any]:
    """decide() latency for 10 paths once the store holds ``stored`` outcomes."""
    intel = _intel(directory, "large.db", 10)
    path_ids = [p["path_id"] for p in intel.list_paths("bench_goal")["paths"]]
    batch = 10_000
    now = time.time()
    for start in range(0, stored, batch):
        records = [
            OutcomeRecord(
                tenant="default",
                goal="bench_goal",
                pipeline_id="",
                trace_id=f"bulk{start + i}",
                path_id=path_ids[(start + i) % 10],
                model_id=None,
                tool_id=None,
                params=None,
                success=(start + i) % 4 != 0,
                score=None,
                value=float((start + i) % 4 != 0),
                failure_category=None,
                failure_reason=None,
                metadata=None,
                cost_usd=0.001,
                latency_ms=100.0,
                input_tokens=None,
                output_tokens=None,
                created_at=now,
            )
            for i in range(min(batch, stored - start))
        ]
        intel.store.record_outcomes(records)
    intel.close()
    reopened = Intelligence(os.path.join(directory, "large.db"), seed=7)
    started = time.perf_counter()
    reopened.decide("bench_goal")
    load_s = time.perf_counter() - started
    samples = []
    for _ in range(decisions):
        started = time.perf_counter()
        reopened.decide("bench_goal")
        samples.append(time.perf_counter() - started)
    count = reopened.store.count_outcomes("default", "bench_goal")
    reopened.close()
    return {
        "paths": 10,
        "stored_outcomes": count,
        "first_decide_ms": round(load_s * 1e3, 1),
        **_percentiles(samples),
    }


def bench_report(directory: str, threads: int, outcomes: int) -> dict[str, Any]:
    """Durable report_outcome() calls per second from ``threads`` threads."""
    intel = _intel(directory, f"report-{threads}.db", 10)
    decisions = [intel.decide("bench_goal") for _ in range(outcomes)]
    intel.flush()  # write the buffered decisions now: this measures report_outcome alone
    per_thread = outcomes // threads

    def work(k: int) -> None:
        for d in decisions[k * per_thread : (k + 1) * per_thread]:
            intel.report_outcome(
                d["trace_id"], "bench_goal", success=True, cost_usd=0.001, latency_ms=120.0
            )

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    stored = intel.store.count_outcomes("default", "bench_goal")
    intel.close()
    return {
        "threads": threads,
        "outcomes": per_thread * threads,
        "stored": stored,
        "per_second": round(per_thread * threads / elapsed),
    }


def _interleaved(client: Any, router: Any, calls: int) -> tuple[list[float], list[float]]:
    """Time the same request directly and through the Router, alternating A-B-B-A."""
    messages = [{"role": "user", "content": "What is 17 + 25?"}]
    timings: dict[str, list[float]] = {"direct": [], "routed": []}
    for i in range(calls // 2 + 25):
        order = ("direct", "routed") if i % 2 == 0 else ("routed", "direct")
        for side in order:
            started = time.perf_counter()
            if side == "direct":
                client.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=20)
            else:
                router.completion(messages, max_tokens=20)
            if i >= 25:  # warm-up done
                timings[side].append(time.perf_counter() - started)
    return timings["direct"], timings["routed"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bench_router_overhead(directory: str, calls: int) -> dict[str, Any]:
    """Router.completion vs a direct openai SDK call to the same simulator.

    The simulator runs in its own process (``kalibr-core sim``) so it does not share this
    process's interpreter lock; calls alternate A-B-B-A so drift hits both sides alike.
    """
    import openai

    from kalibr_core.router import Router

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "kalibr_core.cli", "sim", "--port", str(port), "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()  # the banner: the server is listening
        base_url = f"http://127.0.0.1:{port}/v1"
        os.environ["OPENAI_BASE_URL"] = base_url
        os.environ["OPENAI_API_KEY"] = "sim"
        rows = {}
        for durable in (False, True):
            intel = Intelligence(os.path.join(directory, f"router-{durable}.db"), seed=5)
            router = Router(
                f"bench_router_{durable}",
                ["gpt-4o", "gpt-4o-mini"],
                intelligence=intel,
                success_when=bool,
                durable_reports=durable,
            )
            client = openai.OpenAI(base_url=base_url, api_key="sim", max_retries=0)
            direct_s, routed_s = _interleaved(client, router, calls)
            intel.close()
            d50, r50 = statistics.median(direct_s), statistics.median(routed_s)
            rows["durable" if durable else "default"] = {
                "calls": len(routed_s),
                "direct_p50_ms": round(d50 * 1e3, 3),
                "router_p50_ms": round(r50 * 1e3, 3),
                "overhead_ms": round((r50 - d50) * 1e3, 3),
                "overhead_pct": round((r50 - d50) / d50 * 100, 2),
            }
        return rows
    finally:
        server.terminate()
        server.wait(timeout=10)


def _postgres_url() -> str | None:
    """A reachable test PostgreSQL with psycopg installed, else None (that row is skipped)."""
    url = os.environ.get("KALIBR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception:  # no server or no driver: the PostgreSQL row is reported as skipped
        return None
    return url


def bench_service(directory: str, store: str, pairs: int) -> dict[str, Any]:
    """decide + report round trips per second against ``kalibr-core serve`` on loopback.

    One client, sequential requests over a keep-alive connection (latency per request), so the
    figure is a floor: several clients would add concurrency.
    """
    import httpx

    port = _free_port()
    if store == "sqlite":
        store_url = os.path.join(directory, "service.db")
    else:
        base = _postgres_url()
        if base is None:
            return {"store": store, "skipped": "no PostgreSQL at 127.0.0.1:5432 or no psycopg"}
        schema = f"kalibr_bench_{os.getpid()}"
        store_url = f"{base}?schema={schema}"
    key = "kc_bench_" + os.urandom(16).hex()
    env = {**os.environ, "KALIBR_BOOTSTRAP_KEY": key, "KALIBR_BOOTSTRAP_TENANT": "bench"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kalibr_core.cli",
            "serve",
            "--port",
            str(port),
            "--store-url",
            store_url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    headers = {"X-API-Key": key, "X-Tenant-ID": "bench"}
    base_url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base_url, headers=headers, timeout=10) as client:
            for _ in range(1200):  # wait for the server (up to a minute on a busy machine)
                try:
                    if client.get("/api/v1/intelligence/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            for i in range(5):
                client.post(
                    "/api/v1/routing/paths", json={"goal": "bench_goal", "model_id": f"model-{i}"}
                )
            decide_s: list[float] = []
            report_s: list[float] = []
            started_all = time.perf_counter()
            for i in range(pairs + 50):
                started = time.perf_counter()
                decision = client.post("/api/v1/routing/decide", json={"goal": "bench_goal"})
                middle = time.perf_counter()
                client.post(
                    "/api/v1/intelligence/report-outcome",
                    json={
                        "trace_id": decision.json()["trace_id"],
                        "goal": "bench_goal",
                        "success": i % 3 != 0,
                    },
                )
                ended = time.perf_counter()
                if i == 49:
                    started_all = ended
                if i >= 50:
                    decide_s.append(middle - started)
                    report_s.append(ended - middle)
            elapsed = time.perf_counter() - started_all
    finally:
        server.terminate()
        server.wait(timeout=10)
        if store != "sqlite":
            import psycopg

            with psycopg.connect(str(_postgres_url()), autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    decide = _percentiles(decide_s)
    report = _percentiles(report_s)
    return {
        "store": store,
        "pairs": pairs,
        "pairs_per_second": round(pairs / elapsed),
        "decide_p50_ms": round(decide["p50_us"] / 1e3, 3),
        "decide_p99_ms": round(decide["p99_us"] / 1e3, 3),
        "report_p50_ms": round(report["p50_us"] / 1e3, 3),
        "report_p99_ms": round(report["p99_us"] / 1e3, 3),
    }


def run(mode: str) -> dict[str, Any]:
    """Run every speed benchmark; ``mode`` is ``quick`` or ``full``."""
    quick = mode == "quick"
    with tempfile.TemporaryDirectory() as directory:
        result: dict[str, Any] = {
            "mode": mode,
            "date": time.strftime("%Y-%m-%d"),
            "decide": [bench_decide(directory, k, 2_000 if quick else 20_000) for k in (2, 10, 50)],
            "decide_large": bench_decide_large(
                directory, 100_000 if quick else 1_000_000, 2_000 if quick else 20_000
            ),
            "report": [bench_report(directory, t, 4_000 if quick else 40_000) for t in (1, 4)],
            "router_overhead": bench_router_overhead(directory, 200 if quick else 2_000),
            "service": [
                bench_service(directory, store, 300 if quick else 3_000)
                for store in ("sqlite", "postgresql")
            ],
        }
    return result


def render(result: dict[str, Any]) -> str:
    """The results as a Markdown table with the targets."""
    lines = ["| benchmark | result | target |", "|---|---|---|"]
    for row in result["decide"]:
        lines.append(
            f"| decide(), {row['paths']} paths | p50 {row['p50_us']} us, "
            f"p99 {row['p99_us']} us | p50 < 50 us (10 paths) |"
        )
    large = result["decide_large"]
    lines.append(
        f"| decide(), 10 paths, {large['stored_outcomes']:,} stored outcomes | p50 "
        f"{large['p50_us']} us, p99 {large['p99_us']} us (first decide "
        f"{large['first_decide_ms']} ms) | no growth with outcomes |"
    )
    for row in result["report"]:
        lines.append(
            f"| report_outcome(), {row['threads']} thread(s), SQLite, durable | "
            f"{row['per_second']:,}/s ({row['stored']:,} stored) | >= 10,000/s |"
        )
    for label, over in result["router_overhead"].items():
        how = "durable_reports=True" if label == "durable" else "default (background writer)"
        lines.append(
            f"| Router.completion vs direct openai SDK, {how} | "
            f"p50 {over['router_p50_ms']} ms vs {over['direct_p50_ms']} ms: "
            f"{over['overhead_ms']:+} ms ({over['overhead_pct']:+}%) "
            "| < 5% and < 0.3 ms |"
        )
    for row in result.get("service", []):
        if "skipped" in row:
            lines.append(f"| service decide+report, {row['store']} | skipped: {row['skipped']} | |")
            continue
        lines.append(
            f"| service (HTTP, loopback, 1 client) decide+report, {row['store']} | "
            f"{row['pairs_per_second']:,} pairs/s; decide p50 {row['decide_p50_ms']} ms, p99 "
            f"{row['decide_p99_ms']} ms; report p50 {row['report_p50_ms']} ms, p99 "
            f"{row['report_p99_ms']} ms | decide p50 < 2 ms, >= 2,000 pairs/s |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.speed``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="small sizes (default)")
    group.add_argument("--full", action="store_true", help="10^6 stored outcomes")
    args = parser.parse_args(argv)
    mode = "full" if args.full else "quick"
    result = run(mode)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"speed-{mode}.json").write_text(json.dumps(result, indent=2))
    sys.stdout.write(render(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
