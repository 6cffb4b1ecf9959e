"""The outage test: a Router in remote mode keeps serving an agent while the service is killed
mid-run and restarted on the same port over the same store. The agent sees no error, and every
outcome ends up in the service's store exactly once."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kalibr_core import configure
from kalibr_core.router import Router
from kalibr_core.simulator import ModelScript, ProviderSimulator, check_answer
from kalibr_core.store import SqliteStore

pytestmark = pytest.mark.simulator

TENANT = "acme"
GOAL = "arithmetic"
GOOD, WEAK = "gpt-4o", "gpt-4o-mini"
CALLS = 150
KILL_AT, RESTART_AT = 50, 100


@pytest.fixture
def sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProviderSimulator]:
    """The provider simulator behind the OpenAI SDK: the first path is the weak one."""
    scripts = {GOOD: ModelScript(accuracy=0.95), WEAK: ModelScript(accuracy=0.4)}
    simulator = ProviderSimulator(models=scripts, seed=11).start()
    monkeypatch.setenv("OPENAI_BASE_URL", simulator.openai_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sim-key")
    monkeypatch.delenv("KALIBR_PROVIDER_MAX_RETRIES", raising=False)
    try:
        yield simulator
    finally:
        simulator.stop()


def test_an_outage_mid_run_costs_the_agent_nothing_and_loses_no_outcome(
    sim: ProviderSimulator,
    service: Any,
    fast_budget: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    wait_for: Callable[..., bool],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="kalibr_core.remote")  # why a decision failed open
    key = service.create_key(TENANT, cli=False)
    service.start()
    monkeypatch.setenv("KALIBR_INTELLIGENCE_URL", service.url)
    monkeypatch.setenv("KALIBR_API_KEY", key)
    monkeypatch.setenv("KALIBR_TENANT_ID", TENANT)
    # The functional API's default, as the environment selects it (remote mode).
    # The fast back-off, with a decide budget a garbage collection of this long-running test
    # process cannot exceed: a slow answer fails open by design, and this test is about the
    # service coming and going, not about the machine's pauses.
    budget = dataclasses.replace(fast_budget, decide=1.0)
    remote = configure(budget=budget, outbox=tmp_path / "outbox.sqlite3", seed=5)
    decisions: list[dict[str, Any]] = []
    decide = remote.decide

    def recording_decide(*args: Any, **kwargs: Any) -> dict[str, Any]:
        decision = decide(*args, **kwargs)
        decisions.append(decision)
        return decision

    monkeypatch.setattr(remote, "decide", recording_decide)
    router = Router(GOAL, [WEAK, GOOD])  # no intelligence=: the remote default

    traces: list[str] = []
    errors: list[BaseException] = []
    slowest_down = 0.0
    for i in range(CALLS):
        if i == KILL_AT:
            service.kill()
        if i == RESTART_AT:
            service.start()
            # An attempt that failed while the service was starting backs the client off for
            # up to retry_max (+20% jitter); 50 calls can take less than that on a fast host.
            time.sleep(budget.retry_max * 1.2)
        prompt = f"What is {i} + 17?"
        started = time.perf_counter()
        try:
            response = router.completion([{"role": "user", "content": prompt}])
            answer = response.choices[0].message.content or ""
            router.report(success=check_answer(prompt, answer))
        except Exception as exc:  # what the agent would see
            errors.append(exc)
            continue
        if KILL_AT <= i < RESTART_AT:
            slowest_down = max(slowest_down, time.perf_counter() - started)
        traces.append(response.kalibr_trace_id)
        if i == KILL_AT - 1:  # let the background sender catch up before the kill
            assert wait_for(lambda: remote.pending_outcomes() == 0)
    pending = router.flush()

    assert errors == []
    assert pending == 0 and remote.pending_outcomes() == 0
    assert remote.outbox.dead_letters() == []
    # While the service was down, decisions failed open from the snapshot of the posteriors
    # (the learned path), not blindly to the first path, and without waiting for the service.
    down = [d for d in decisions[KILL_AT:RESTART_AT]]
    assert {d["source"] for d in down} == {"fail_open"}
    assert {d["fallback"] for d in down} == {"snapshot"}
    assert Counter(d["model_id"] for d in down)[GOOD] > len(down) // 2
    assert slowest_down < 2.0  # generous: CI machines are shared; the decide budget is 0.25 s
    # Once the service is back (and the client's back-off has passed), decisions use it again.
    why = [r.getMessage() for r in caplog.records if "failed open" in r.getMessage()]
    assert {d["source"] for d in decisions[-10:]} == {"service"}, why[-5:]

    store = SqliteStore(service.store)
    try:
        stored = store.outcomes_in_window(TENANT, GOAL, 0)
    finally:
        store.close()
    per_trace = Counter(o.trace_id for o in stored)
    assert len(traces) == CALLS == len(set(traces))
    assert set(per_trace) == set(traces)  # every outcome arrived...
    assert set(per_trace.values()) == {1}  # ...exactly once
    # Fail-open outcomes carry the model, so the service attributed them to their paths.
    assert all(o.path_id is not None for o in stored)
