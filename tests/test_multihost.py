"""Several processes, one PostgreSQL database: the state they share and how fast it spreads.

Each "host" is a separate OS process (a fresh interpreter: nothing is inherited) with its own
``Intelligence(PostgresStore(url))``, or a ``kalibr-core serve`` replica. Outcomes reported to
one change the decisions of the others once their scope syncs: after at most
``sync_interval_s`` (docs/postgres.md). Skips, saying why, without PostgreSQL at 127.0.0.1:5432.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kalibr_core

pytestmark = pytest.mark.postgres

SYNC_INTERVAL_S = 0.25  # the hosts' bounded staleness in these tests (default 0.5 s)
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _unavailable(reason: str) -> None:
    if os.environ.get("KALIBR_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{reason} (KALIBR_REQUIRE_POSTGRES=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def postgres_url() -> str:
    """The test server's URL (as in tests/store/conftest.py); skips when it is unreachable."""
    url = os.environ.get("KALIBR_TEST_POSTGRES_URL", DEFAULT_URL)
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed: pip install 'kalibr-core[postgres]'")
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        _unavailable(
            f"PostgreSQL is not reachable at {url} (set KALIBR_TEST_POSTGRES_URL): "
            + " ".join(str(exc).split())
        )
    return url


@pytest.fixture(scope="module")
def pg_schema(postgres_url: str) -> Iterator[str]:
    """One schema for the module (each test uses its own goal), dropped afterwards."""
    import psycopg

    name = f"kalibr_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


# -- embedded hosts: one Intelligence per process ----------------------------------------------
# A fresh interpreter per host (nothing inherited), driven by one JSON line per call: the
# script needs only kalibr_core, not this test module, whatever pytest's import mode.
HOST_SCRIPT = """
import json, sys
from collections import Counter
from kalibr_core import Intelligence
from kalibr_core.store._postgres import PostgresStore

url, schema, seed, interval = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
store = PostgresStore(url, schema=schema)
intel = Intelligence(store, seed=seed, sync_interval_s=interval)
print(json.dumps(["ok", "ready"]), flush=True)
for line in sys.stdin:
    name, args = json.loads(line)
    try:
        if name == "decide_many":
            goal, n = args
            result = dict(Counter(intel.decide(goal)["model_id"] for _ in range(n)))
        elif name == "report_many":
            goal, reports = args
            for trace_id, model_id, success, outcome_id in reports:
                intel.report_outcome(
                    trace_id, goal, success, model_id=model_id, outcome_id=outcome_id
                )
            result = len(reports)
        else:
            result = getattr(intel, name)(*args)
        print(json.dumps(["ok", result]), flush=True)
    except Exception as exc:  # the test fails with it
        print(json.dumps(["error", repr(exc)]), flush=True)
intel.close()
store.close()
"""


class Host:
    """A separate OS process with its own Intelligence over the shared database."""

    def __init__(self, url: str, schema: str, seed: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOST_SCRIPT, url, schema, str(seed), str(SYNC_INTERVAL_S)],
            env=_cli_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put("")  # the process ended

    def send(self, name: str, *args: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps([name, args]) + "\n")
        self.process.stdin.flush()

    def receive(self, timeout: float = 60) -> Any:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail("the host did not answer in time")
        assert line, f"the host exited with {self.process.wait()}"
        status, value = json.loads(line)
        assert status == "ok", value
        return value

    def call(self, name: str, *args: Any) -> Any:
        self.send(name, *args)
        return self.receive()

    def close(self) -> int:
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):  # already gone
            self.process.stdin.close()
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()


@pytest.fixture(scope="module")
def hosts(postgres_url: str, pg_schema: str) -> Iterator[tuple[Host, Host]]:
    """Two host processes over one database, shared by the tests (each uses its own goal)."""
    first, second = Host(postgres_url, pg_schema, 1), Host(postgres_url, pg_schema, 2)
    try:
        assert first.receive() == second.receive() == "ready"
        yield first, second
    finally:
        exit_codes = (first.close(), second.close())
    assert exit_codes == (0, 0)


def _totals(stats: dict[str, Any]) -> dict[str, int]:
    return {row["model_id"]: row["total_outcomes"] for row in stats["paths"]}


def test_concurrent_reports_from_two_hosts_are_counted_exactly(
    hosts: tuple[Host, Host],
) -> None:
    first, second = hosts
    for host in hosts:
        host.call("register_path", "count_exactly", "model-a")
        host.call("register_path", "count_exactly", "model-b")

    def reports(prefix: str) -> list[tuple[str, str, bool, str]]:
        models = ("model-a", "model-b")
        own = [(f"{prefix}{i}", models[i % 2], i % 3 != 0, f"{prefix}-{i}") for i in range(150)]
        # Both hosts also replay the same 20 outcomes (a client retrying against another
        # replica): each is stored and counted once.
        shared = [(f"s{i}", "model-a", True, f"shared-{i}") for i in range(20)]
        return own + shared

    first.send("report_many", "count_exactly", reports("a"))
    second.send("report_many", "count_exactly", reports("b"))
    assert first.receive() == second.receive() == 170
    expected = {"model-a": 75 + 75 + 20, "model-b": 75 + 75}
    for host in hosts:
        assert _totals(host.call("stats", "count_exactly")) == expected
    assert first.call("stats", "count_exactly")["total_outcomes"] == 320


def test_a_path_failing_on_one_host_stops_being_chosen_on_the_other(
    hosts: tuple[Host, Host],
) -> None:
    first, second = hosts
    first.call("register_path", "failing_path", "steady")
    first.call("register_path", "failing_path", "flaky")
    before = second.call(
        "decide_many", "failing_path", 100
    )  # the second host's view: no outcomes yet
    assert before.get("flaky", 0) >= 20, before
    first.call(
        "report_many",
        "failing_path",
        [(f"f{i}", "flaky", False, None) for i in range(30)]
        + [(f"s{i}", "steady", True, None) for i in range(30)],
    )
    time.sleep(SYNC_INTERVAL_S)  # the bounded staleness: then the next decision syncs
    after = second.call("decide_many", "failing_path", 100)
    assert after.get("flaky", 0) <= 10, after
    assert _totals(second.call("stats", "failing_path")) == {"steady": 30, "flaky": 30}


# -- service replicas: two `kalibr-core serve` processes on one database ------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli_env() -> dict[str, str]:
    root = str(Path(kalibr_core.__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kalibr_core.cli", *args],
        env=_cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def replicas(postgres_url: str, pg_schema: str) -> Iterator[tuple[str, list[str]]]:
    """Two service replicas on two loopback ports over one database: (store URL, base URLs)."""
    pytest.importorskip("fastapi", reason="the service needs fastapi: kalibr-core[service]")
    pytest.importorskip("uvicorn", reason="the service needs uvicorn: kalibr-core[service]")
    import httpx

    store_url = f"{postgres_url}?schema={pg_schema}"
    processes: list[subprocess.Popen[str]] = []
    bases: list[str] = []
    try:
        for _ in range(2):
            port = _free_port()
            processes.append(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "kalibr_core.cli", "serve"),
                        *("--port", str(port), "--store-url", store_url),
                        *("--log-level", "warning"),
                    ],
                    env=_cli_env(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
            bases.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        for process, base in zip(processes, bases, strict=True):
            while True:
                if process.poll() is not None:
                    pytest.fail(
                        f"kalibr-core serve exited: {process.stderr and process.stderr.read()}"
                    )
                try:
                    if (
                        httpx.get(f"{base}/api/v1/intelligence/health", timeout=1).status_code
                        == 200
                    ):
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"{base} did not become healthy"
                time.sleep(0.1)
        yield store_url, bases
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()


def test_outcomes_reported_to_one_replica_steer_the_other(
    replicas: tuple[str, list[str]],
) -> None:
    import httpx

    store_url, (first, second) = replicas
    created = _cli("keys", "create", "--tenant", "acme", "--store-url", store_url)
    assert created.returncode == 0, created.stderr
    headers = {"X-API-Key": json.loads(created.stdout)["api_key"], "X-Tenant-ID": "acme"}
    with httpx.Client(headers=headers, timeout=10) as client:
        for base in (first, second):
            health = client.get(f"{base}/api/v1/intelligence/health").json()
            assert health["store"]["backend"] == "postgresql"
        for model in ("steady", "flaky"):
            response = client.post(
                f"{first}/api/v1/routing/paths", json={"goal": "served_goal", "model_id": model}
            )
            assert response.status_code == 200, response.text

        def decide_many(base: str, n: int) -> Counter[str]:
            chosen: Counter[str] = Counter()
            for _ in range(n):
                response = client.post(
                    f"{base}/api/v1/routing/decide", json={"goal": "served_goal"}
                )
                assert response.status_code == 200, response.text
                chosen[response.json()["model_id"]] += 1
            return chosen

        before = decide_many(second, 60)  # the second replica knows both paths, no outcomes
        assert before["flaky"] >= 10, before
        for i in range(30):
            for model, success in (("flaky", False), ("steady", True)):
                response = client.post(
                    f"{first}/api/v1/intelligence/report-outcome",
                    json={"trace_id": f"{model}-{i}", "goal": "served_goal", "success": success}
                    | {"model_id": model},
                )
                assert response.status_code == 200, response.text
        time.sleep(0.6)  # the service's sync interval (0.5 s): the bounded staleness
        after = decide_many(second, 60)
        assert after["flaky"] <= 6, after
        stats = client.get(f"{second}/api/v1/routing/stats", params={"goal": "served_goal"}).json()
        assert stats["total_outcomes"] == 60
