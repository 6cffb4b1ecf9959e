"""The functional API on the embedded store: register paths, decide, report, correct, inspect.

Run: ``.venv/bin/python examples/functional_api.py`` (offline: no provider is called; the
outcomes are simulated so the example shows what the engine learns).
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import kalibr_core as kalibr


def main() -> None:
    """Learn which of three paths books meetings best, then print the policy and insights."""
    with tempfile.TemporaryDirectory() as folder:
        kalibr.configure(store=str(Path(folder) / "kalibr.db"), seed=1)
        goal = "book_meeting"
        truth = {"gpt-4o": 0.9, "claude-sonnet-4-5": 0.8, "gpt-4o-mini": 0.55}
        cost = {"gpt-4o": 0.01, "claude-sonnet-4-5": 0.012, "gpt-4o-mini": 0.001}
        for model in truth:
            kalibr.register_path(goal, model, tool_id="calendar_api")
        rng = random.Random(3)
        last = None
        for _ in range(400):
            decision = kalibr.decide(goal)
            model = decision["model_id"]
            kalibr.report_outcome(
                decision["trace_id"],
                goal,
                success=rng.random() < truth[model],
                model_id=model,
                cost_usd=cost[model],
                latency_ms=rng.uniform(300, 900),
            )
            last = decision
        assert last is not None
        # A customer reopened the last ticket two days later: correct the outcome.
        print(
            kalibr.update_outcome(
                last["trace_id"], goal, success=False, failure_category="user_unsatisfied"
            )
        )
        policy = kalibr.get_policy(goal)
        print(
            f"policy: {policy['recommended_model']} ({policy['outcome_success_rate']:.0%}, "
            f"confidence {policy['confidence']:.2f}) - {policy['reasoning']}"
        )
        cheap = kalibr.get_policy(goal, constraints={"max_cost_usd": 0.005})
        print(f"under $0.005/call: {cheap['recommended_model']} - {cheap['reasoning']}")
        for entry in kalibr.get_insights(goal)["goals"]:
            print(
                entry["goal"],
                entry["status"],
                [signal["type"] for signal in entry["actionable_signals"]],
            )
        kalibr.get_intelligence().close()


if __name__ == "__main__":
    main()
