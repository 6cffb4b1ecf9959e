"""Remote mode through the functional API and the Router: selected by the environment or by
configure(), and safe under concurrency and when several processes share one outbox."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import kalibr_core
from kalibr_core import ConfigurationError, Intelligence
from kalibr_core._outbox import default_outbox_path
from kalibr_core._remote import RemoteIntelligence

FakeService = Any  # conftest.FakeService
MakeRemote = Callable[..., Any]
WaitFor = Callable[..., bool]
URL = "http://kalibr.test"


def test_the_environment_selects_remote_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALIBR_INTELLIGENCE_URL", URL)
    monkeypatch.setenv("KALIBR_API_KEY", "kc_env")
    monkeypatch.setenv("KALIBR_TENANT_ID", "acme")

    intel = kalibr_core.get_intelligence()

    assert isinstance(intel, RemoteIntelligence)
    assert (intel.url, intel.tenant) == (URL, "acme")
    assert intel.outbox.path == default_outbox_path(URL, "acme")
    assert kalibr_core.get_intelligence() is intel


def test_a_missing_api_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALIBR_INTELLIGENCE_URL", URL)

    with pytest.raises(ConfigurationError, match="KALIBR_API_KEY"):
        kalibr_core.get_intelligence()
    with pytest.raises(ConfigurationError, match="KALIBR_API_KEY"):
        kalibr_core.configure(url=URL)


def test_the_tenant_defaults_as_the_spec_says(monkeypatch: pytest.MonkeyPatch) -> None:
    intel = kalibr_core.configure(url=URL, api_key="kc_x")
    assert isinstance(intel, RemoteIntelligence) and intel.tenant == "default"


def test_configure_chooses_the_mode(
    fake: FakeService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KALIBR_INTELLIGENCE_URL", "http://ignored.test")
    remote = kalibr_core.configure(
        url=URL, api_key="kc_x", tenant="acme", transport=fake.transport()
    )
    assert isinstance(remote, RemoteIntelligence) and remote.url == URL
    kalibr_core.register_path("g", "gpt-4o")
    decision = kalibr_core.decide("g")
    kalibr_core.report_outcome(decision["trace_id"], "g", success=True)
    assert decision["source"] == "service" and len(fake.outcomes) == 1

    local = kalibr_core.configure(store=":memory:")
    assert isinstance(local, Intelligence)
    with pytest.raises(ConfigurationError, match="not both"):
        kalibr_core.configure(store=":memory:", url=URL)
    with pytest.raises(ConfigurationError, match="http"):
        kalibr_core.configure(url="kalibr.test", api_key="kc_x")


def test_many_threads_report_through_outages_and_each_outcome_lands_once(
    fake: FakeService, make_remote: MakeRemote, wait_for: WaitFor
) -> None:
    remote = make_remote()
    remote.register_path("busy", "gpt-4o")
    stop = threading.Event()

    def flap() -> None:  # the service goes down and comes back, over and over
        while not stop.wait(0.01):
            fake.down = not fake.down

    def agent(worker: int) -> list[str]:
        traces = []
        for i in range(40):
            decision = remote.decide("busy")
            remote.report_outcome(decision["trace_id"], "busy", success=i % 2 == 0, wait=i % 3 == 0)
            traces.append(decision["trace_id"])
        return traces

    flapper = threading.Thread(target=flap)
    flapper.start()
    results: dict[int, list[str]] = {}
    workers = [
        threading.Thread(target=lambda w=w: results.__setitem__(w, agent(w))) for w in range(8)
    ]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    stop.set()
    flapper.join()
    fake.down = False
    assert wait_for(lambda: remote.pending_outcomes() == 0)

    traces = [t for ts in results.values() for t in ts]
    assert len(traces) == 320 == len(set(traces))
    per_trace = Counter(o["trace_id"] for o in fake.outcomes.values())
    assert set(per_trace) == set(traces) and set(per_trace.values()) == {1}
    assert len(fake.received) == 320  # one sender at a time: nothing was sent twice


def test_two_clients_sharing_an_outbox_send_each_entry_once(
    fake: FakeService, make_remote: MakeRemote, tmp_path: Path, wait_for: WaitFor
) -> None:
    path = tmp_path / "shared.sqlite3"
    first, second = make_remote(outbox=path), make_remote(outbox=path)

    for i in range(30):
        (first if i % 2 else second).report_outcome(f"t{i}", "shared", success=True, wait=False)

    assert wait_for(lambda: first.pending_outcomes() == 0)
    assert sorted(o["trace_id"] for o in fake.received) == sorted(f"t{i}" for i in range(30))
