"""Speed benchmarks: decide latency, durable outcome throughput, Router overhead.

Run ``python -m benchmarks.speed --quick`` (seconds) or ``--full`` (10^6 stored outcomes).
Everything is measured side by side in one run; results print as a table and are written to
``benchmarks/results/speed-<mode>.json``.

* decide(): in-process p50/p99 over an embedded SQLite store, for 2, 10 and 50 paths, and for
  10 paths once the store holds 10^6 (full) / 10^5 (quick) outcomes: decide must not slow down.
* report_outcome(): durable outcomes per second from 1 and 4 threads into one SQLite file.
* Router.completion(): the same request to the provider simulator (its own process, answering
  at once and after a realistic 30 ms), interleaved, through the Router and through the bare
  ``openai`` SDK; the overhead is the difference of medians. The Router's own time (each
  routed call minus its SDK call) is reported beside it: the network's jitter blurs the
  difference of medians by tens of microseconds, not this.
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

from benchmarks.speed._service import bench_service
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


# A provider's own time for a short completion is tens of milliseconds at best; the zero-latency
# simulator leaves only loopback HTTP and the SDK, the harshest case for a relative target.
REALISTIC_LATENCY_MS = 30.0


def _interleaved(
    client: Any, router: Any, calls: int, warmup: int, block: int = 50
) -> tuple[list[float], list[float], list[float]]:
    """Time the same request directly and through the Router, in blocks alternating A-B-B-A.

    Both sides send the same messages and ``max_tokens`` over their own keep-alive connection;
    the simulator gives every model the same script, so it does the same work for both. Blocks
    of ``block`` calls, not single calls: the background writer stores a Router outcome up to
    its ``outcome_delay_s`` later, and per-call alternation would charge half of that work to
    the direct calls made meanwhile.

    Returns:
        The direct calls' times, the routed calls' times, and of each routed call the time
        spent outside its SDK call: the Router's own work on the caller's thread, which the
        network's jitter does not blur as it blurs the difference of the first two.
    """
    from kalibr_core.router import _router

    messages = [{"role": "user", "content": "What is 17 + 25?"}]
    in_sdk = [0.0]
    sdk_call = _router.CHAT["openai"]

    def timed_sdk_call(*args: Any) -> Any:
        started = time.perf_counter()
        try:
            return sdk_call(*args)
        finally:
            in_sdk[0] = time.perf_counter() - started

    def direct() -> None:
        client.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=20)

    def routed() -> None:
        router.completion(messages, max_tokens=20)

    _router.CHAT["openai"] = timed_sdk_call
    try:
        for _ in range(warmup):
            direct()
            routed()
        timings: dict[str, list[float]] = {"direct": [], "routed": []}
        own: list[float] = []
        for i in range(-(-calls // block)):
            for side in ("direct", "routed") if i % 2 == 0 else ("routed", "direct"):
                call = direct if side == "direct" else routed
                samples = timings[side]
                for _ in range(min(block, calls - i * block)):
                    started = time.perf_counter()
                    call()
                    elapsed = time.perf_counter() - started
                    samples.append(elapsed)
                    if call is routed:
                        own.append(elapsed - in_sdk[0])
    finally:
        _router.CHAT["openai"] = sdk_call
    return timings["direct"], timings["routed"], own


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _simulator(directory: str, latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    """Start ``kalibr-core sim`` in its own process, every model answering after latency_ms."""
    config = os.path.join(directory, f"sim-{latency_ms:g}ms.json")
    with open(config, "w", encoding="utf-8") as file:
        json.dump({"models": {}, "default": {"latency_ms": latency_ms}}, file)
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kalibr_core.cli",
            "sim",
            "--port",
            str(port),
            "--seed",
            "3",
            "--config",
            config,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert server.stdout is not None
    banner = server.stdout.readline()  # printed once the server is listening
    if not banner.startswith("kalibr-core provider simulator"):
        server.kill()
        raise RuntimeError(f"the simulator did not start: {banner!r}")
    return server, f"http://127.0.0.1:{port}/v1"


def bench_router_overhead(
    directory: str, calls: int, latencies_ms: tuple[float, ...] = (0.0, REALISTIC_LATENCY_MS)
) -> list[dict[str, Any]]:
    """Router.completion vs a direct openai SDK call to the same simulator.

    For each scripted provider latency (0 ms: loopback HTTP only; and a realistic one) and for
    both ways of reporting (background writer, ``durable_reports=True``). The simulator runs in
    its own process (``kalibr-core sim``) so it does not share this process's interpreter lock.
    Both sides use the same SDK settings (the Router's client is ``openai.OpenAI(base_url,
    api_key, max_retries=0)`` from the same environment, with keep-alive connections), the same
    request and a warm-up; blocks of calls alternate A-B-B-A so drift hits both sides alike. The
    overhead is the difference of the medians (and of the means); ``calls`` is per side at
    0 ms, a quarter of it at the realistic latency.
    """
    import openai

    from kalibr_core.router import Router

    rows = []
    for latency_ms in latencies_ms:
        server, base_url = _simulator(directory, latency_ms)
        try:
            os.environ["OPENAI_BASE_URL"] = base_url
            os.environ["OPENAI_API_KEY"] = "sim"
            os.environ["KALIBR_PROVIDER_MAX_RETRIES"] = "0"
            per_side = calls if latency_ms == 0 else max(50, calls // 4)
            for durable in (False, True):
                intel = Intelligence(
                    os.path.join(directory, f"router-{latency_ms:g}-{durable}.db"), seed=5
                )
                router = Router(
                    f"bench_router_{durable}",
                    ["gpt-4o", "gpt-4o-mini"],
                    intelligence=intel,
                    success_when=bool,
                    durable_reports=durable,
                )
                with openai.OpenAI(base_url=base_url, api_key="sim", max_retries=0) as client:
                    direct_s, routed_s, own_s = _interleaved(
                        client, router, per_side, warmup=50, block=50 if latency_ms == 0 else 10
                    )
                intel.flush()
                stored = intel.store.count_outcomes("default", router.goal)
                intel.close()
                d50, r50 = statistics.median(direct_s), statistics.median(routed_s)
                d_mean, r_mean = statistics.fmean(direct_s), statistics.fmean(routed_s)
                rows.append(
                    {
                        "provider_latency_ms": latency_ms,
                        "durable_reports": durable,
                        "calls": len(routed_s),
                        "outcomes_stored": stored,
                        "direct_p50_ms": round(d50 * 1e3, 3),
                        "router_p50_ms": round(r50 * 1e3, 3),
                        "overhead_ms": round((r50 - d50) * 1e3, 3),
                        "overhead_pct": round((r50 - d50) / d50 * 100, 2),
                        # The mean also counts what lands on a few calls only (batched writes).
                        "overhead_mean_ms": round((r_mean - d_mean) * 1e3, 3),
                        # The Router's own time on the caller's thread, outside the SDK call.
                        "own_p50_ms": round(statistics.median(own_s) * 1e3, 3),
                        "own_mean_ms": round(statistics.fmean(own_s) * 1e3, 3),
                    }
                )
        finally:
            server.terminate()
            server.wait(timeout=10)
    return rows


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
            "router_overhead": bench_router_overhead(directory, 400 if quick else 4_000),
            "service": [
                bench_service(directory, store, 300 if quick else 3_000, clients=16, workers=(1, 2))
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
    for over in result["router_overhead"]:
        how = "durable_reports=True" if over["durable_reports"] else "background writer"
        lines.append(
            f"| Router.completion vs direct openai SDK, provider latency "
            f"{over['provider_latency_ms']:g} ms, {how} | p50 {over['router_p50_ms']} ms vs "
            f"{over['direct_p50_ms']} ms: {over['overhead_ms']:+} ms "
            f"({over['overhead_pct']:+}%; mean {over['overhead_mean_ms']:+} ms; "
            f"{over['calls']} calls); Router's own time p50 {over['own_p50_ms']} ms, mean "
            f"{over['own_mean_ms']} ms | < 5% and < 0.3 ms |"
        )
    for row in result.get("service", []):
        if "skipped" in row:
            lines.append(f"| service decide+report, {row['store']} | skipped: {row['skipped']} | |")
            continue
        for w in (1, 2):
            if f"w{w}_decide_p50_ms" not in row:
                continue
            r = {k[len(f"w{w}_") :]: v for k, v in row.items() if k.startswith(f"w{w}_")}
            lines.append(
                f"| service over HTTP, {row['store']}, {w} worker(s) | 1 client: decide p50 "
                f"{r['decide_p50_ms']} ms, p99 {r['decide_p99_ms']} ms, report p50 "
                f"{r['report_p50_ms']} ms; {row['clients']} clients: "
                f"{r['pairs_per_second']:,} pairs/s, {r['errors']} errors, "
                f"{r['outcomes_lost']} outcomes lost | decide p50 < 2 ms, >= 2,000 pairs/s |"
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
