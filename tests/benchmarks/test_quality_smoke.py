"""The routing-quality suite's quick mode, run through its public entry function.

Quick mode is a few seeds over short horizons, so these assertions are the robust, qualitative
ones (a degraded path is detected and abandoned, the engine beats the static chain and plain
Thompson sampling after a change, the oracle is perfect), not the targets of the full run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `benchmarks` lives at the repository root, beside the package
    sys.path.insert(0, str(ROOT))

from benchmarks import run_suite  # noqa: E402
from benchmarks._scenarios import SCENARIOS  # noqa: E402


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    output = tmp_path_factory.mktemp("bench") / "quality-quick.json"
    run_suite("quick", output=output)
    return json.loads(output.read_text())


def _stat(report: dict, scenario: str, policy: str, metric: str, stat: str = "mean") -> float:
    return report["scenarios"][scenario]["policies"][policy][metric][stat]


def test_the_json_report_covers_every_scenario_and_target(report: dict) -> None:
    assert report["mode"] == "quick"
    assert set(report["scenarios"]) == {s.id for s in SCENARIOS}
    for data in report["scenarios"].values():
        assert {"kalibr", "oracle", "chain", "random", "ts"} <= set(data["policies"])
    assert {t["scenario"] for t in report["targets"]} >= {"B0", "B1", "B2a", "B4", "B7", "B8-easy"}
    assert "mabwiser" in report["scenarios"]["B1"]["policies"]


def test_the_oracle_is_perfect_and_the_static_chain_is_blind(report: dict) -> None:
    assert _stat(report, "B2a", "oracle", "ors") == pytest.approx(1.0)
    assert _stat(report, "B2a", "oracle", "regret") == pytest.approx(0.0)
    # The chain keeps sending traffic to the broken path: only hard errors move it.
    assert _stat(report, "B2a", "chain", "degraded_share") > 0.9


def test_the_engine_detects_a_collapse_and_abandons_the_path(report: dict) -> None:
    seeds = report["seeds"]
    alarm = report["scenarios"]["B2a"]["policies"]["kalibr"]["alarm_delay"]
    assert alarm["n"] == seeds, "a .90 -> .30 collapse went undetected in some run"
    assert alarm["median"] <= 40
    assert _stat(report, "B2a", "kalibr", "detection_delay", "median") <= 40
    assert _stat(report, "B2a", "kalibr", "degraded_share") < 0.08
    # Plain Thompson sampling, with all its history, keeps trusting the broken path.
    assert _stat(report, "B2a", "ts", "degraded_share") > 3 * _stat(
        report, "B2a", "kalibr", "degraded_share"
    )


def test_the_engine_beats_the_chain_and_plain_ts_after_the_change(report: dict) -> None:
    engine = _stat(report, "B2a", "kalibr", "ors_after")
    assert engine > _stat(report, "B2a", "chain", "ors_after") + 0.3
    assert engine > _stat(report, "B2a", "ts", "ors_after")
    assert engine > 0.95


def test_the_engine_learns_a_stationary_goal_without_false_alarms(report: dict) -> None:
    assert _stat(report, "B1", "kalibr", "regret") < 0.25 * _stat(report, "B1", "random", "regret")
    assert _stat(report, "B1", "kalibr", "false_alarms") <= 5.0


def test_a_recovered_path_is_adopted_again(report: dict) -> None:
    assert _stat(report, "B4", "kalibr", "never_recovered") < 1.0
    assert _stat(report, "B4", "kalibr", "regret") < _stat(report, "B4", "ts", "regret")


def test_the_blind_phase_of_delayed_feedback_costs_what_uniform_choice_does() -> None:
    # B5's stationary check: before the first delayed outcome arrives, nothing tells the paths
    # apart; uniform choice over B1's means (.90 .85 .80 .70 .60) costs 0.13 per request.
    from benchmarks.blind_phase import main, split_regret

    blind, _ = split_regret("kalibr", 100, seeds=4)
    informed, _ = split_regret("kalibr", 0, seeds=4)
    assert 10.0 < blind < 16.0
    assert informed < blind - 2.0
    with pytest.raises(SystemExit):
        main(["--seeds", "0"])
