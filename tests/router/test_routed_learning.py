"""Learning through the Router: a path that starts failing loses its traffic."""

from __future__ import annotations

from typing import Any

import pytest

from kalibr_core.simulator import (
    ModelScript,
    ProviderSimulator,
    Schedule,
    check_answer,
    company_extraction_examples,
)

pytestmark = pytest.mark.simulator

DRIFTING = "gpt-4o-drifting"
STEADY = "claude-haiku-4-5-steady"
DEGRADES_AT = 20  # the drifting model's own request number


def test_a_path_that_degrades_midway_loses_its_traffic(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    # Perfect, then always wrong; the other path is good but not perfect.
    sim_env.set_script(
        DRIFTING, ModelScript(accuracy=Schedule.step(at=DEGRADES_AT, before=1.0, after=0.0))
    )
    sim_env.set_script(STEADY, ModelScript(accuracy=0.85))
    examples = company_extraction_examples()
    current = {"prompt": ""}
    router = make_router(
        "degrading",
        [DRIFTING, STEADY],
        success_when=lambda output: check_answer(current["prompt"], output),
    )

    chosen: list[str] = []
    for i in range(160):
        current["prompt"] = examples[i % len(examples)].prompt
        response = router.completion([{"role": "user", "content": current["prompt"]}])
        chosen.append(response.model)

    drifting_calls = [i for i, model in enumerate(chosen) if model == DRIFTING]
    # While perfect it was preferred: it reached its degradation early in the run...
    assert len(drifting_calls) > DEGRADES_AT
    degraded_from = drifting_calls[DEGRADES_AT]
    assert degraded_from < 80
    # ...then lost its traffic within tens of requests,
    assert len(drifting_calls) - DEGRADES_AT < 40
    # and by the end it is only probed now and then.
    assert chosen[-60:].count(DRIFTING) <= 10
    outcomes = stored("degrading")
    assert len(outcomes) == 160
    late = [o for o in outcomes[degraded_from:] if o.model_id == DRIFTING]
    assert late
    assert not any(o.success for o in late)
