"""Speed of the HTTP service: one client's latency, many clients' throughput, no outcome lost.

``bench_service`` starts ``kalibr-core serve`` as a subprocess on loopback, once per worker
count, each over a fresh store, and measures side by side in one run:

* latency: one sequential client on one keep-alive connection, decide then report-outcome
  (with the decision's ``trace_id``); p50/p99 of each request, and the pairs per second it
  makes;
* throughput: ``clients`` concurrent clients, each on its own keep-alive connection (renewed
  every 100 pairs, so that the connections spread over the server's workers), each doing
  decide then report-outcome of that ``trace_id``; pairs per second over the phase, and the
  server's CPU time per pair;
* loss: after a graceful shutdown, the outcomes in the store must equal the reports answered
  200 (a 200 from report-outcome means durable).

The load generator is cheap so that it leaves the 2 cores to the server: pre-built HTTP/1.1
requests on raw sockets (asyncio streams for the concurrent clients), only the decision's JSON
parsed. Its own CPU use during the throughput phase is reported (``client_cpu_pct``). Every
response status is checked; anything but 200 counts as an error.

Run standalone::

    python -m benchmarks.speed._service [--store sqlite postgresql] [--pairs 3000]
        [--clients 8] [--workers 1 2] [--baseline DIR]

``--baseline DIR`` also measures the service of another source tree (a directory holding a
``kalibr_core`` package, e.g. ``git archive`` of an older commit), alternating with this one
(a tree whose ``serve`` has no ``--workers``: ``--workers 1``). Each run prints one JSON line,
then a table of all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

GOAL = "bench_goal"
TENANT = "bench"
PATHS = 5
WARMUP_PAIRS = 200
# Server workers share one listening socket and the kernel hands each new connection to one of
# them: a few connections held for the whole run may all land on one worker. Renewing them
# now and then spreads the clients over the workers as real traffic does.
RENEW_PAIRS = 100
SERVER_OPTIONS = ("--log-level", "warning")  # no access log: a line per request costs CPU
DECIDE = "/api/v1/routing/decide"
REPORT = "/api/v1/intelligence/report-outcome"
HEALTH = "/api/v1/intelligence/health"


@dataclass(frozen=True)
class _Requests:
    """Pre-built HTTP/1.1 requests of one server (keep-alive, credentials included)."""

    port: int
    key: str

    def build(self, method: str, path: str, body: bytes | None = None) -> bytes:
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: 127.0.0.1:{self.port}",
            f"X-API-Key: {self.key}",
            f"X-Tenant-ID: {TENANT}",
        ]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")

    def decide(self) -> bytes:
        return self.build("POST", DECIDE, b'{"goal": "' + GOAL.encode() + b'"}')

    def report(self, trace_id: str, success: bool) -> bytes:
        body = json.dumps({"trace_id": trace_id, "goal": GOAL, "success": success})
        return self.build("POST", REPORT, body.encode())


def _content_length(head: bytes) -> int:
    start = head.lower().find(b"\r\ncontent-length:")
    if start < 0:
        raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
    end = head.find(b"\r\n", start + 2)
    return int(head[start + 17 : end if end >= 0 else None])


class _SyncClient:
    """One blocking keep-alive connection; ``call`` sends a request and reads the response."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    def call(self, request: bytes) -> tuple[int, bytes]:
        self._sock.sendall(request)
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self._recv()
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        length = _content_length(head)
        while len(rest) < length:
            rest += self._recv()
        self._buffer = rest[length:]
        return int(head[9:12]), rest[:length]

    def _recv(self) -> bytes:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self._sock.close()


async def _acall(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    body = await reader.readexactly(_content_length(head))
    return int(head[9:12]), body


@dataclass
class _Load:
    """What the concurrent clients share: pairs left to start, and what happened."""

    remaining: int
    reports_ok: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def failed(self, status: int) -> None:
        self.errors += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1


async def _client(requests: _Requests, load: _Load) -> None:
    """Pairs until none is left, on keep-alive connections renewed every RENEW_PAIRS pairs."""
    decide = requests.decide()
    while load.remaining > 0:
        reader, writer = await asyncio.open_connection("127.0.0.1", requests.port)
        try:
            for _ in range(RENEW_PAIRS):
                if load.remaining <= 0:
                    break
                load.remaining -= 1
                status, body = await _acall(reader, writer, decide)
                if status != 200:
                    load.failed(status)
                    continue
                trace_id = json.loads(body)["trace_id"]
                status, _ = await _acall(
                    reader, writer, requests.report(trace_id, load.remaining % 3 != 0)
                )
                if status == 200:
                    load.reports_ok += 1
                else:
                    load.failed(status)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _concurrent(requests: _Requests, clients: int, pairs: int) -> tuple[_Load, float, float]:
    """Run ``pairs`` pairs over ``clients`` connections; (load, seconds, client CPU seconds)."""
    load = _Load(remaining=pairs)

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(_client(requests, load) for _ in range(clients)))
        return time.perf_counter() - started

    cpu = time.process_time()
    runner: Any = asyncio.run
    try:  # the cheaper event loop, so the load generator leaves the cores to the server
        import uvloop

        runner = uvloop.run
    except ModuleNotFoundError:
        pass
    elapsed: float = runner(main())
    return load, elapsed, time.process_time() - cpu


def _percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3, 3)


def _sequential(requests: _Requests, pairs: int) -> dict[str, Any]:
    """One client, one connection: decide then report, ``pairs`` times."""
    client = _SyncClient(requests.port)
    decide = requests.decide()
    decide_s: list[float] = []
    report_s: list[float] = []
    errors = reports_ok = 0
    try:
        started_all = time.perf_counter()
        for i in range(pairs):
            started = time.perf_counter()
            status, body = client.call(decide)
            decide_s.append(time.perf_counter() - started)
            if status != 200:
                errors += 1
                continue
            report = requests.report(json.loads(body)["trace_id"], i % 3 != 0)
            started = time.perf_counter()
            status, _ = client.call(report)
            report_s.append(time.perf_counter() - started)
            if status == 200:
                reports_ok += 1
            else:
                errors += 1
        elapsed = time.perf_counter() - started_all
    finally:
        client.close()
    return {
        "decide_p50_ms": _percentile(decide_s, 0.5),
        "decide_p99_ms": _percentile(decide_s, 0.99),
        "report_p50_ms": _percentile(report_s, 0.5),
        "report_p99_ms": _percentile(report_s, 0.99),
        "sequential_pairs_per_second": round(pairs / elapsed),
        "sequential_errors": errors,
        "_reports_ok": reports_ok,
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _postgres_url() -> str | None:
    """A reachable test PostgreSQL with psycopg installed, else None."""
    url = os.environ.get("KALIBR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except Exception:  # no server or no driver: the PostgreSQL rows are reported as skipped
        return None
    return url


def _wait_ready(port: int, server: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    request = _Requests(port, "").build("GET", HEALTH)
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"kalibr-core serve exited with {server.returncode}")
        try:
            client = _SyncClient(port)
        except OSError:
            time.sleep(0.05)
            continue
        try:
            if client.call(request)[0] == 200:
                return
        finally:
            client.close()
    raise RuntimeError(f"kalibr-core serve did not answer on port {port} in {timeout_s} s")


def _tree_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by a process and its descendants (Linux)."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        parents: dict[int, int] = {}
        used: dict[int, float] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    fields = stat.read().rpartition(b")")[2].split()
            except OSError:  # the process ended meanwhile
                continue
            parents[int(entry)] = int(fields[1])
            used[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    except (OSError, ValueError):
        return None
    total = 0.0
    for candidate, seconds in used.items():
        ancestor = candidate
        while ancestor not in (pid, 0, 1) and ancestor in parents:
            ancestor = parents[ancestor]
        if ancestor == pid:
            total += seconds
    return total


def _stored_outcomes(store_url: str) -> int:
    from kalibr_core.store import open_store

    store = open_store(store_url)
    try:
        return store.count_outcomes(TENANT, GOAL)
    finally:
        store.close()


def _run_server(
    store_url: str, workers: int, pairs: int, clients: int, source: str | None
) -> dict[str, Any]:
    """Start a server over ``store_url`` and measure it; the dict of one worker count."""
    port = _free_port()
    key = "kc_bench_" + os.urandom(16).hex()
    env = {**os.environ, "KALIBR_BOOTSTRAP_KEY": key, "KALIBR_BOOTSTRAP_TENANT": TENANT}
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "kalibr_core.cli", "serve", "--port", str(port)]
    command += ["--store-url", store_url, *SERVER_OPTIONS]
    if workers > 1:
        command += ["--workers", str(workers)]
    server = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=source
    )
    requests = _Requests(port, key)
    try:
        _wait_ready(port, server)
        setup = _SyncClient(port)
        try:
            for i in range(PATHS):
                body = json.dumps({"goal": GOAL, "model_id": f"model-{i}"}).encode()
                status, answer = setup.call(requests.build("POST", "/api/v1/routing/paths", body))
                if status != 200:
                    raise RuntimeError(f"registering a path answered {status}: {answer!r}")
        finally:
            setup.close()
        # Warm-up over every connection: each worker loads the goal before anything is timed.
        warm, _, _ = _concurrent(requests, clients, WARMUP_PAIRS)
        sequential = _sequential(requests, pairs)
        server_cpu = _tree_cpu_s(server.pid)
        load, elapsed, cpu_s = _concurrent(requests, clients, pairs)
        server_cpu_after = _tree_cpu_s(server.pid)
    finally:
        server.terminate()  # SIGTERM: a graceful shutdown that closes the store
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    reports_ok = warm.reports_ok + sequential.pop("_reports_ok") + load.reports_ok
    stored = _stored_outcomes(store_url)
    return {
        **sequential,
        "pairs_per_second": round(load.reports_ok / elapsed),
        "errors": warm.errors + load.errors,
        "error_statuses": ",".join(f"{s}x{n}" for s, n in sorted(load.statuses.items())),
        "client_cpu_pct": round(cpu_s / elapsed * 100),
        "server_cpu_ms_per_pair": None
        if server_cpu is None or server_cpu_after is None
        else round((server_cpu_after - server_cpu) * 1e3 / pairs, 3),
        "reports_ok": reports_ok,
        "outcomes_stored": stored,
        "outcomes_lost": reports_ok - stored,
    }


def bench_service(
    directory: str,
    store: str,
    pairs: int,
    *,
    clients: int = 8,
    workers: Sequence[int] = (1, 2),
    source: str | None = None,
) -> dict[str, Any]:
    """Latency and throughput of ``kalibr-core serve`` on loopback, per worker count.

    For each worker count a server (``kalibr-core serve --log-level warning [--workers N]``)
    starts over a fresh store (a SQLite file in ``directory``, or a new schema of the test
    PostgreSQL), with a bootstrap key. Five paths are registered for one goal and 200 pairs
    from the concurrent clients warm every worker up. Then, timed: ``pairs`` sequential pairs
    from one client on one keep-alive connection (decide p50/p99 and report p50/p99: from
    sending the request to reading the whole response, in milliseconds), then ``pairs`` pairs
    from ``clients`` concurrent clients (``pairs_per_second``: pairs whose report was answered
    200, per second of the phase). A pair is POST /api/v1/routing/decide, then POST
    /api/v1/intelligence/report-outcome with that decision's trace_id. After SIGTERM, the
    store must hold exactly the outcomes answered 200 (``outcomes_lost`` 0).

    Args:
        directory: Where the SQLite files go.
        store: ``"sqlite"`` or ``"postgresql"`` (skipped when no server at 127.0.0.1:5432).
        pairs: Pairs of each timed phase.
        clients: Concurrent clients of the throughput phase.
        workers: Server worker processes (``serve --workers``), one server each.
        source: Import ``kalibr_core`` for the server from this directory (a baseline).

    Returns:
        A flat dict: ``store``, ``pairs``, ``clients``, then per worker count ``w<N>_`` +
        ``decide_p50_ms``, ``decide_p99_ms``, ``report_p50_ms``, ``report_p99_ms``,
        ``sequential_pairs_per_second``, ``sequential_errors``, ``pairs_per_second``,
        ``errors``, ``error_statuses``, ``client_cpu_pct``, ``server_cpu_ms_per_pair`` (CPU
        time of the server's processes during the throughput phase, Linux), ``reports_ok``,
        ``outcomes_stored``, ``outcomes_lost``.
    """
    result: dict[str, Any] = {
        "store": store,
        "pairs": pairs,
        "clients": clients,
        "server_options": " ".join(SERVER_OPTIONS),
    }
    base = None
    if store == "postgresql":
        base = _postgres_url()
        if base is None:
            return {**result, "skipped": "no PostgreSQL at 127.0.0.1:5432 or no psycopg"}
    elif store != "sqlite":
        raise ValueError(f"store must be 'sqlite' or 'postgresql', got {store!r}")
    for count in workers:
        name = f"kalibr_bench_{os.getpid()}_{time.monotonic_ns()}_w{count}"
        url = os.path.join(directory, name + ".db") if base is None else f"{base}?schema={name}"
        try:
            row = _run_server(url, count, pairs, clients, source)
        finally:
            if base is not None:
                import psycopg

                with psycopg.connect(base, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        result.update({f"w{count}_{k}": v for k, v in row.items()})
    return result


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--baseline", help="also measure the kalibr_core of this directory")
    parser.add_argument("--rounds", type=int, default=1, help="alternate this many times")
    args = parser.parse_args(argv)
    sides: list[tuple[str, str | None]] = [("this tree", None)]
    if args.baseline:
        sides.insert(0, ("baseline", os.path.abspath(args.baseline)))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as directory:
        for _ in range(args.rounds):
            for store in args.store:
                for label, source in sides:
                    row = bench_service(
                        directory,
                        store,
                        args.pairs,
                        clients=args.clients,
                        workers=args.workers,
                        source=source,
                    )
                    rows.append({"side": label, **row})
                    sys.stdout.write(json.dumps(rows[-1]) + "\n")
                    sys.stdout.flush()
    sys.stdout.write(render(rows, args.workers))
    return 0


_COLUMNS = (
    ("decide_p50_ms", "decide p50 ms"),
    ("decide_p99_ms", "decide p99 ms"),
    ("report_p50_ms", "report p50 ms"),
    ("report_p99_ms", "report p99 ms"),
    ("sequential_pairs_per_second", "1 client pairs/s"),
    ("pairs_per_second", "concurrent pairs/s"),
    ("server_cpu_ms_per_pair", "server CPU ms/pair"),
    ("client_cpu_pct", "client CPU %"),
    ("errors", "errors"),
    ("outcomes_lost", "outcomes lost"),
)


def render(rows: Sequence[dict[str, Any]], workers: Sequence[int]) -> str:
    """The rows of :func:`bench_service` (with a ``side`` label) as a Markdown table."""
    head = ["side", "store", "workers", *(title for _, title in _COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        for count in workers:
            if f"w{count}_errors" not in row:
                continue  # skipped, or this worker count was not run
            cells = [row["side"], row["store"], str(count)]
            cells += [str(row[f"w{count}_{key}"]) for key, _ in _COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(_main())
