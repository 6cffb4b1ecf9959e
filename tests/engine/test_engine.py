"""The pure engine with plain numbers: posteriors, selection, change detection, ranking, insights.

These tests check properties that hold for any tuning (a clear winner wins, a constant sequence
is no change, an abrupt collapse is one), not the exact numbers the benchmarks tune.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from kalibr_core import ExplorationConfig, NoPathAvailableError, NotFoundError, ValidationError
from kalibr_core._intelligence import PROPENSITY_DRAWS, estimate_propensities
from kalibr_core.engine import (
    EngineTuning,
    GoalRouter,
    PathInfo,
    PathState,
    bernoulli_kl,
)
from kalibr_core.engine._insights import PathView, cross_goal_summary, goal_insight
from kalibr_core.engine._router import PropensityInputs, Selection


def router_with(*models: str, config: ExplorationConfig | None = None) -> GoalRouter:
    router = GoalRouter(config or ExplorationConfig())
    for model in models:
        router.add_path(PathInfo(path_id=model, model_id=model))
    return router


def feed(router: GoalRouter, path_id: str, values: list[float], **kwargs: Any) -> None:
    for value in values:
        router.observe(path_id, value, **kwargs)


def bernoulli(rate: float, n: int) -> list[float]:
    k = round(rate * n)
    return [float((i + 1) * k // n != i * k // n) for i in range(n)]


# -- posteriors ----------------------------------------------------------------------------------
def test_the_posterior_is_beta_with_a_uniform_prior() -> None:
    state = PathState(info=PathInfo("p", "m"), tuning=EngineTuning())
    assert state.mean == 0.5
    assert state.success_rate is None
    for value in (1.0, 1.0, 0.0, 0.5):
        state.add(value)
    assert state.mean == pytest.approx((2.5 + 1) / (4 + 2))
    assert state.success_rate == pytest.approx(2.5 / 4)
    assert state.count == 4


def test_a_correction_replaces_one_outcome() -> None:
    state = PathState(info=PathInfo("p", "m"), tuning=EngineTuning())
    for value in (1.0, 1.0, 1.0):
        state.add(value)
    state.correct(1.0, 0.0, seq=None)
    assert (state.successes, state.failures, state.count) == (2.0, 1.0, 3)
    assert state.mean == pytest.approx(3 / 5)


def test_the_standard_error_shrinks_with_evidence() -> None:
    small = PathState(info=PathInfo("p", "m"), tuning=EngineTuning())
    large = PathState(info=PathInfo("q", "m"), tuning=EngineTuning())
    for value in bernoulli(0.8, 10):
        small.add(value)
    for value in bernoulli(0.8, 1000):
        large.add(value)
    assert large.std_error() < small.std_error() / 5


def test_bernoulli_kl() -> None:
    assert bernoulli_kl(0.3, 0.3) == pytest.approx(0.0, abs=1e-12)
    assert bernoulli_kl(0.9, 0.1) > bernoulli_kl(0.6, 0.4) > 0
    assert math.isfinite(bernoulli_kl(0.0, 1.0))


# -- change detection ----------------------------------------------------------------------------
def changes(values: list[float]) -> list[tuple[int, Any]]:
    """(index, change) for every change a path's detector declares over these outcomes."""
    router = router_with("p")
    found = []
    for i, value in enumerate(values):
        change = router.observe("p", value)
        if change is not None:
            found.append((i, change))
    return found


@pytest.mark.parametrize("sequence", [[1.0] * 500, [0.0] * 500, [1.0, 0.0] * 250, [0.7] * 500])
def test_a_stationary_sequence_is_no_change(sequence: list[float]) -> None:
    assert changes(sequence) == []


def test_an_abrupt_collapse_is_detected_as_a_drop_quickly() -> None:
    history = bernoulli(0.95, 200)
    detected = changes(history + [0.0] * 30)
    assert detected, "a collapse from 95% to 0% was not detected in 30 outcomes"
    first_at, change = detected[0]
    assert 200 <= first_at < 215
    assert change.kind == "drop"
    assert change.before_mean > 0.8
    assert change.after_mean < change.before_mean - 0.5


def test_a_recovery_is_detected_as_a_rise() -> None:
    detected = changes(bernoulli(0.1, 200) + [1.0] * 30)
    assert detected
    first_at, change = detected[0]
    assert first_at >= 200
    assert change.kind == "rise"


def test_random_noise_rarely_looks_like_a_change() -> None:
    rng = np.random.default_rng(7)
    false_alarms = sum(
        len(changes([float(rng.random() < 0.7) for _ in range(300)])) for _ in range(20)
    )
    assert false_alarms <= 3


# -- selection -----------------------------------------------------------------------------------
def test_selection_needs_an_enabled_matching_path() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(NoPathAvailableError):
        GoalRouter().select(rng)
    router = router_with("a")
    router.set_enabled("a", False)
    with pytest.raises(NoPathAvailableError):
        router.select(rng)
    router.set_enabled("a", True)
    with pytest.raises(NoPathAvailableError, match="zzz"):
        router.select(rng, candidate_model_ids=["zzz"])
    with pytest.raises(NotFoundError):
        router.observe("unknown", 1.0)


def test_a_clear_winner_gets_the_traffic() -> None:
    router = router_with("good", "bad")
    feed(router, "good", bernoulli(0.9, 60))
    feed(router, "bad", bernoulli(0.4, 60))
    rng = np.random.default_rng(1)
    chosen = Counter(router.select(rng).path_id for _ in range(1000))
    assert chosen["good"] > 950
    assert router.tick == 1000
    assert router.paths["good"].pulls == chosen["good"]


def test_without_data_traffic_is_spread() -> None:
    router = router_with("a", "b", "c")
    rng = np.random.default_rng(2)
    chosen = Counter(router.select(rng).path_id for _ in range(900))
    assert all(200 < chosen[m] < 400 for m in "abc"), chosen


def test_selection_is_reproducible_with_the_same_generator() -> None:
    def run(seed: int) -> list[str]:
        router = router_with("a", "b", "c")
        return [router.select(np.random.default_rng(seed)).path_id for _ in range(30)]

    assert run(3) == run(3)


@pytest.mark.parametrize(
    "make_rng", [np.random.default_rng, random.Random], ids=["numpy", "random"]
)
def test_both_generators_draw_from_the_posteriors(make_rng: Any) -> None:
    # numpy (one vectorised draw) and random.Random (a draw per path, what Intelligence
    # uses) must give each path its Thompson-sampling share: P(its draw is the largest).
    router = router_with("a", "b")
    feed(router, "a", [1.0] * 12 + [0.0] * 8)  # Beta(13, 9)
    feed(router, "b", [1.0] * 8 + [0.0] * 12)  # Beta(9, 13)
    exact = np.random.default_rng(0)
    share = float(np.mean(exact.beta(13, 9, 10**6) > exact.beta(9, 13, 10**6)))  # ~0.82
    rng = make_rng(7)
    n = 4000
    chosen = Counter(router.select(rng).path_id for _ in range(n))
    assert chosen["a"] / n == pytest.approx(share, abs=4 * math.sqrt(share * (1 - share) / n))


# -- decisions drawn ahead ----------------------------------------------------------------------
def test_a_decision_drawn_ahead_is_the_next_one_and_counts_only_when_taken() -> None:
    router = router_with("a", "b")
    feed(router, "a", [1.0] * 12 + [0.0] * 8)
    rng = random.Random(3)
    assert router.draw_ahead(rng, now=100.0)
    assert router.draw_ahead(rng, now=100.0)  # already waiting: not drawn twice
    ahead = router._ahead
    assert ahead is not None
    assert router.tick == 0 and sum(s.pulls for s in router.paths.values()) == 0
    taken = router.select(rng, now=100.2)
    assert taken is ahead.selection
    assert router.tick == 1 and router.paths[taken.path_id].pulls == 1
    assert router.select(rng, now=100.3) is not taken  # taken once only


@pytest.mark.parametrize(
    "change",
    ["outcome", "disable", "config", "decision", "other arguments", "a second later"],
)
def test_a_decision_drawn_ahead_is_dropped_when_what_it_was_drawn_from_changes(
    change: str,
) -> None:
    router = router_with("a", "b")
    feed(router, "a", [1.0] * 30)
    feed(router, "b", [0.0] * 30)
    rng = random.Random(5)
    now, arguments = 100.0, {}
    assert router.draw_ahead(rng, now=now)
    ahead = router._ahead
    assert ahead is not None and ahead.selection.path_id == "a"
    if change == "outcome":
        router.observe("a", 0.0)
    elif change == "disable":
        router.set_enabled("a", False)
    elif change == "config":
        router.config = ExplorationConfig(exploration_rate=0.5)
    elif change == "decision":
        router.select(rng, candidate_model_ids=["b"], now=now)
    elif change == "other arguments":
        arguments = {"candidate_model_ids": ["a"]}
    else:
        now += 1.5
    taken = router.select(rng, now=now, **arguments)
    assert taken is not ahead.selection
    if change == "disable":
        assert taken.path_id == "b"


def test_a_probe_is_never_drawn_ahead() -> None:
    router = router_with("healthy", "broken")
    feed(router, "healthy", bernoulli(0.9, 30))
    feed(router, "broken", [0.0] * 30)
    broken = router.paths["broken"]
    assert broken.demoted
    rng = random.Random(2)
    while router.tick + 1 < broken.next_probe_tick:
        router.select(rng)
    assert router.draw_ahead(rng) is False  # the next decision is the probe
    probe = router.select(rng)
    assert probe.path_id == "broken" and probe.reason == "exploration"


def test_decisions_drawn_ahead_keep_the_thompson_shares() -> None:
    router = router_with("a", "b")
    feed(router, "a", [1.0] * 12 + [0.0] * 8)  # Beta(13, 9)
    feed(router, "b", [1.0] * 8 + [0.0] * 12)  # Beta(9, 13)
    exact = np.random.default_rng(0)
    share = float(np.mean(exact.beta(13, 9, 10**6) > exact.beta(9, 13, 10**6)))  # ~0.82
    rng = random.Random(9)
    n, chosen = 4000, Counter[str]()
    for _ in range(n):
        assert router.draw_ahead(rng)
        chosen[router.select(rng).path_id] += 1
    assert chosen["a"] / n == pytest.approx(share, abs=4 * math.sqrt(share * (1 - share) / n))


def test_a_single_path_has_full_propensity() -> None:
    router = router_with("only")
    selection = router.select(np.random.default_rng(0))
    assert selection.propensity(np.random.default_rng(0)) == 1.0
    assert selection.exploration is False


def test_propensities_of_all_choices_sum_to_one() -> None:
    router = router_with("a", "b", "c")
    feed(router, "a", bernoulli(0.6, 20))
    feed(router, "b", bernoulli(0.5, 20))
    feed(router, "c", bernoulli(0.4, 20))
    rng = np.random.default_rng(4)
    first: dict[str, Any] = {}
    for _ in range(2000):
        selection = router.select(rng)
        first.setdefault(selection.path_id, selection)
    assert set(first) == {"a", "b", "c"}
    total = sum(s.propensity(np.random.default_rng(5), draws=20_000) for s in first.values())
    assert total == pytest.approx(1.0, abs=0.03)


def test_the_propensity_matches_the_observed_choice_frequency() -> None:
    router = router_with("a", "b")
    feed(router, "a", bernoulli(0.6, 20))
    feed(router, "b", bernoulli(0.5, 20))
    rng = np.random.default_rng(5)
    selections = [router.select(rng) for _ in range(2000)]
    share_a = sum(s.path_id == "a" for s in selections) / 2000
    first_a = next(s for s in selections if s.path_id == "a")
    assert first_a.propensity(np.random.default_rng(6), draws=4000) == pytest.approx(
        share_a, abs=0.05
    )


@pytest.mark.parametrize("batch", [False, True], ids=["one-by-one", "batched"])
def test_the_propensity_follows_the_cost_tie_rule(batch: bool) -> None:
    # In a cost tie the cheaper path is used unless the costlier one's draw leads by more than
    # the margin: the costlier path is still chosen now and then, and its propensity must say
    # how often. (The batched estimate the writer records once ignored the margin and gave
    # those choices a propensity of 0, which breaks inverse-propensity weighting.)
    router = router_with("premium", "budget")
    feed(router, "premium", bernoulli(0.9, 600), cost_usd=0.02)
    feed(router, "budget", bernoulli(0.89, 600), cost_usd=0.001)
    rng = np.random.default_rng(13)
    n = 20_000
    selections = [router.select(rng) for _ in range(n)]
    chosen = [s for s in selections if s.path_id == "premium"]
    share = len(chosen) / n
    assert 0.003 < share < 0.05  # the margin lets it through, rarely
    if batch:
        propensity = estimate_propensities(chosen[:50], np.random.default_rng(1), draws=40_000)
        assert len(set(propensity)) == 1  # one snapshot: its draws are shared
        estimate = propensity[0]
    else:
        estimate = chosen[0].propensity(np.random.default_rng(1), draws=40_000)
    assert estimate == pytest.approx(share, abs=4 * math.sqrt(share / n) + 0.002)


def test_batched_propensities_of_mixed_decisions_match_each_ones_own() -> None:
    # Decisions of goals with 2 and 3 paths, from several snapshots, with and without the
    # uniform exploration share, estimated in one batch: each as if estimated alone.
    routers = [router_with("a", "b"), router_with("a", "b", "c")]
    routers.append(router_with("a", "b", "c", config=ExplorationConfig(exploration_rate=0.2)))
    rng = np.random.default_rng(21)
    selections = []
    for round_ in range(3):
        for router in routers:
            for path_id, rate in zip(router.paths, (0.7, 0.55, 0.4), strict=False):
                feed(router, path_id, bernoulli(rate, 10 + 5 * round_))
            selections += [router.select(rng) for _ in range(4)]
    batched = estimate_propensities(selections, np.random.default_rng(2), draws=40_000)
    for selection, estimate in zip(selections, batched, strict=True):
        alone = selection.propensity(np.random.default_rng(3), draws=40_000)
        assert estimate == pytest.approx(alone, abs=0.015), selection


def test_a_choice_that_was_made_never_gets_propensity_zero() -> None:
    # A rare choice is drawn again with more draws; one that is practically never drawn gets
    # half of one draw's share rather than 0 (inverse-propensity weights divide by it).
    def made(alphas: tuple[float, ...], betas: tuple[float, ...], index: int) -> Selection:
        inputs = PropensityInputs(alphas, betas, tuple(range(len(alphas))), 0.0, index, True)
        return Selection("p", "exploration", True, 0.5, 0.5, 10, inputs)

    rare = made((60.0, 46.0), (15.0, 29.0), 1)  # chosen about 1 time in 190
    hopeless = made((400.0, 1.0), (1.0, 400.0), 1)
    common = made((60.0, 46.0), (15.0, 29.0), 0)
    truth = rare.propensity(np.random.default_rng(8), draws=400_000)
    assert 0.002 < truth < 0.01
    rare_estimates = []
    for seed in range(40):  # 128 draws miss it about half the time
        estimates = estimate_propensities([rare, hopeless, common], np.random.default_rng(seed))
        assert 0 < estimates[0] < 0.04
        assert estimates[1] == round(0.5 / (PROPENSITY_DRAWS * 16), 6)
        assert estimates[2] == pytest.approx(1 - truth, abs=0.04)
        rare_estimates.append(estimates[0])
    assert float(np.mean(rare_estimates)) == pytest.approx(truth, abs=0.004)


def test_many_paths_draw_through_numpy_reproducibly_and_by_the_posterior() -> None:
    # With many paths a random.Random's draws come from a numpy generator seeded from it:
    # the same seed still gives the same decisions, and the shares are still Thompson's.
    def build() -> GoalRouter:
        router = router_with(*(f"m{i}" for i in range(20)))
        for i, path_id in enumerate(router.paths):
            feed(router, path_id, bernoulli(0.75 if i == 0 else 0.6 + 0.005 * i, 40))
        return router

    first, second = build(), build()
    rng_a, rng_b = random.Random(5), random.Random(5)
    picks = [first.select(rng_a).path_id for _ in range(3000)]
    assert picks == [second.select(rng_b).path_id for _ in range(3000)]
    share = sum(p == "m0" for p in picks) / len(picks)
    # m0's share under the same rule, estimated from its posterior snapshot
    m0 = next(s for s in (first.select(random.Random(i)) for i in range(200)) if s.path_id == "m0")
    expected = m0.propensity(np.random.default_rng(1), draws=40_000)
    assert 0.2 < expected < 0.8
    assert share == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / 3000))


def test_exploration_rate_one_is_uniform_and_flagged() -> None:
    router = router_with("a", "b", "c", config=ExplorationConfig(exploration_rate=1.0))
    feed(router, "a", bernoulli(0.99, 100))
    rng = np.random.default_rng(8)
    selections = [router.select(rng) for _ in range(1200)]
    chosen = Counter(s.path_id for s in selections)
    assert all(320 < chosen[m] < 480 for m in "abc"), chosen
    assert all(s.exploration and s.reason == "exploration" for s in selections)


def test_high_risk_never_explores_unless_allowed() -> None:
    config = ExplorationConfig(exploration_rate=1.0)
    router = router_with("a", "b", config=config)
    feed(router, "a", bernoulli(0.9, 50))
    feed(router, "b", bernoulli(0.5, 50))
    rng = np.random.default_rng(9)
    assert {router.select(rng, task_risk_level="high").path_id for _ in range(200)} == {"a"}
    router.config = ExplorationConfig(exploration_rate=1.0, exploration_on_high_risk=True)
    assert "b" in {router.select(rng, task_risk_level="high").path_id for _ in range(200)}


def test_risk_levels_filter_paths() -> None:
    router = GoalRouter()
    router.add_path(PathInfo("safe", "safe", risk_level="low"))
    router.add_path(PathInfo("mid", "mid", risk_level="medium"))
    router.add_path(PathInfo("wild", "wild", risk_level="high"))
    assert {s.info.path_id for s in router.eligible("high")} == {"safe"}
    assert {s.info.path_id for s in router.eligible("medium")} == {"safe", "mid"}
    assert {s.info.path_id for s in router.eligible("low")} == {"safe", "mid", "wild"}
    assert {s.info.path_id for s in router.eligible(exclude_models=["safe"])} == {"mid", "wild"}


def test_reason_is_fallback_until_min_samples() -> None:
    config = ExplorationConfig(min_samples_before_exploit=10)
    router = router_with("a", "b", config=config)
    feed(router, "a", bernoulli(0.9, 9))
    feed(router, "b", bernoulli(0.2, 9))
    rng = np.random.default_rng(10)
    assert router.select(rng, candidate_model_ids=["a"]).reason == "fallback"
    feed(router, "a", [1.0])
    feed(router, "b", [0.0])
    reasons = Counter(router.select(rng).reason for _ in range(200))
    assert "fallback" not in reasons
    assert reasons["optimal"] > 150


def test_rollback_demotes_a_failing_path_but_keeps_probing_it() -> None:
    router = router_with("healthy", "broken")
    feed(router, "healthy", bernoulli(0.9, 30))
    feed(router, "broken", [0.0] * 30)
    broken = router.paths["broken"]
    assert broken.rolled_back and broken.demoted
    rng = np.random.default_rng(11)
    selections = [router.select(rng) for _ in range(1000)]
    probes = [s for s in selections if s.path_id == "broken"]
    assert 1 <= len(probes) <= 50
    assert all(p.exploration and p.reason == "exploration" for p in probes)


def test_no_rollback_when_every_path_is_failing() -> None:
    router = router_with("a", "b")
    for _ in range(30):
        router.observe("a", 0.0)
        router.observe("b", 0.0)
    assert not router.paths["a"].rolled_back
    assert not router.paths["b"].rolled_back


def test_a_collapse_demotes_the_path() -> None:
    router = router_with("primary", "backup")
    feed(router, "primary", bernoulli(0.95, 200))
    feed(router, "backup", bernoulli(0.6, 100))
    changes = [router.observe("primary", 0.0) for _ in range(20)]
    assert any(c is not None and c.kind == "drop" for c in changes)
    state = router.paths["primary"]
    assert state.demoted
    assert state.trend(router.tick) == "degrading"
    assert state.count == 220  # all-time history is kept
    assert state.eff_count < 40  # but the posterior restarted at the change
    rng = np.random.default_rng(12)
    chosen = Counter(router.select(rng).path_id for _ in range(200))
    assert chosen["backup"] > 170


def collapsed(backup_rate: float, backup_n: int) -> GoalRouter:
    """A router whose ``primary`` path (.95 for 200 outcomes) then failed 20 times in a row."""
    router = router_with("primary", "backup")
    feed(router, "primary", bernoulli(0.95, 200))
    feed(router, "backup", bernoulli(backup_rate, backup_n))
    feed(router, "primary", [0.0] * 20)
    return router


def _reloaded(router: GoalRouter) -> GoalRouter:
    """A new router with only what a store keeps: totals, epoch statistics, epoch start."""
    fresh = router_with(*router.paths)
    for path_id, old in router.paths.items():
        new = fresh.paths[path_id]
        new.successes, new.failures, new.count = old.successes, old.failures, old.count
        new.eff_successes, new.eff_failures = old.eff_successes, old.eff_failures
        new.eff_count, new.epoch_seq = old.eff_count, old.epoch_seq
    return fresh


def test_a_detected_drop_is_restored_from_stored_statistics() -> None:
    router = collapsed(0.6, 100)
    assert router.paths["primary"].demoted
    fresh = _reloaded(router)
    assert fresh.restore_changes() == ["primary"]
    state = fresh.paths["primary"]
    assert state.demoted and state.trend(fresh.tick) == "degrading"
    assert state.last_change is not None and state.last_change.kind == "drop"
    assert not fresh.paths["backup"].demoted  # no change, nothing restored
    chosen = Counter(fresh.select(np.random.default_rng(3)).path_id for _ in range(200))
    assert chosen["backup"] > 170


def test_an_old_or_harmless_change_is_not_restored_as_a_demotion() -> None:
    router = collapsed(0.6, 100)
    # A change followed by many outcomes is history: restoring it would mislabel the path.
    state = router.paths["primary"]
    state.eff_count += 600
    state.count += 600
    state.eff_successes += 540
    state.successes += 540
    assert _reloaded(router).restore_changes() == []
    # A rise restores as a rise: the path keeps its traffic.
    up = router_with("a", "b")
    feed(up, "a", bernoulli(0.3, 200))
    feed(up, "b", bernoulli(0.6, 100))
    feed(up, "a", [1.0] * 30)
    assert up.paths["a"].last_change is not None and up.paths["a"].last_change.kind == "rise"
    fresh = _reloaded(up)
    assert fresh.restore_changes() == ["a"]
    assert not fresh.paths["a"].demoted
    assert fresh.paths["a"].trend(fresh.tick) == "improving"


def test_cost_breaks_a_tie_between_equally_good_paths() -> None:
    router = router_with("premium", "budget")
    feed(router, "premium", bernoulli(0.9, 600), cost_usd=0.02)
    feed(router, "budget", bernoulli(0.9, 600), cost_usd=0.001)
    rng = np.random.default_rng(13)
    selections = [router.select(rng) for _ in range(500)]
    chosen = Counter(s.path_id for s in selections)
    assert chosen["budget"] > 400, chosen
    assert router.ranking()[0].state.info.path_id == "budget"


def test_cost_never_beats_a_clearly_better_path() -> None:
    router = router_with("premium", "budget")
    feed(router, "premium", bernoulli(0.95, 600), cost_usd=0.02)
    feed(router, "budget", bernoulli(0.8, 600), cost_usd=0.001)
    rng = np.random.default_rng(14)
    chosen = Counter(router.select(rng).path_id for _ in range(500))
    assert chosen["premium"] > 480
    assert router.ranking()[0].state.info.path_id == "premium"


def test_ranking_reports_unmet_constraints() -> None:
    router = router_with("dear", "cheap", "untried")
    feed(router, "dear", bernoulli(0.95, 50), cost_usd=0.05, latency_ms=3000)
    feed(router, "cheap", bernoulli(0.7, 50), cost_usd=0.001, latency_ms=200)
    ranked = router.ranking(max_cost_usd=0.01, min_quality=0.9)
    assert [r.state.info.path_id for r in ranked] == ["dear", "cheap", "untried"]
    by_id = {r.state.info.path_id: r for r in ranked}
    assert by_id["dear"].unmet == ("max_cost_usd",)
    assert by_id["cheap"].unmet == ("min_quality",)
    assert set(by_id["untried"].unmet) == {"max_cost_usd", "min_quality"}
    assert not any(r.meets_constraints for r in ranked)
    assert all(r.meets_constraints for r in router.ranking())


# -- configuration -------------------------------------------------------------------------------
def test_exploration_config_round_trips_and_validates() -> None:
    config = ExplorationConfig(exploration_rate=0.1, min_samples_before_exploit=30)
    assert ExplorationConfig.from_dict(config.to_dict()) == config
    assert ExplorationConfig.from_dict({"exploration_rate": None}) == ExplorationConfig()
    with pytest.raises(ValidationError, match="unknown"):
        ExplorationConfig.from_dict({"exploration": 0.1})
    with pytest.raises(ValidationError, match="exploration_rate"):
        ExplorationConfig(exploration_rate=float("nan"))
    with pytest.raises(ValidationError, match="min_samples_before_exploit"):
        ExplorationConfig(min_samples_before_exploit=True)


# -- insights (pure) -----------------------------------------------------------------------------
@dataclass
class Outcome:
    path_id: str | None
    success: bool
    score: float | None = None
    failure_category: str | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    created_at: float = 0.0
    params: dict[str, Any] | None = field(default=None)
    model_id: str | None = None


def test_goal_insight_from_plain_outcomes() -> None:
    views = [PathView("a", "model-a", None, {}, True), PathView("b", "model-b", None, {}, True)]
    outcomes = [Outcome("a", True, latency_ms=100.0 + i) for i in range(40)]
    outcomes += [
        Outcome("b", i % 2 == 0, failure_category=None if i % 2 == 0 else "timeout")
        for i in range(40)
    ]
    entry = goal_insight("g", outcomes, views, min_samples=20)
    assert entry["sample_count"] == 80
    assert entry["success_rate"] == pytest.approx(0.75)
    assert entry["top_failure_modes"] == [{"category": "timeout", "count": 20, "share": 1.0}]
    types = {s["type"] for s in entry["actionable_signals"]}
    assert {"path_underperforming", "failure_mode_dominant"} <= types
    rows = {p["path_id"]: p for p in entry["paths"]}
    assert rows["a"]["traffic_share"] == 0.5
    assert rows["a"]["p95_latency_ms"] == pytest.approx(137.0)
    assert rows["b"]["avg_latency_ms"] is None


def test_outcomes_of_unknown_paths_still_count() -> None:
    entry = goal_insight("g", [Outcome(None, True), Outcome("gone", False)], [], min_samples=20)
    assert entry["sample_count"] == 2
    assert [p["path_id"] for p in entry["paths"]] == ["gone"]


def test_cross_goal_summary() -> None:
    goals = [
        {"status": "healthy", "sample_count": 50},
        {"status": "healthy", "sample_count": 30},
        {"status": "degrading", "sample_count": 70},
        {"status": "insufficient_data", "sample_count": 2},
    ]
    assert cross_goal_summary(goals) == {
        "total_goals": 4,
        "healthy": 2,
        "degrading": 1,
        "failing": 0,
        "insufficient_data": 1,
        "total_outcomes": 152,
    }


def test_a_refuted_run_of_successful_probes_is_looked_at_again_soon() -> None:
    router = collapsed(0.8, 200)
    state = router.paths["primary"]
    assert state.demoted
    rng = np.random.default_rng(5)

    def next_probe(limit: int = 2_000) -> int:
        for _ in range(limit):
            choice = router.select(rng)
            if choice.path_id == "primary":
                return router.tick
            router.observe(choice.path_id, 1.0)
        raise AssertionError("the demoted path was never probed")

    for value in (0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0):  # a path still broken
        next_probe()
        router.observe("primary", value)
    assert state.probe_interval >= 200
    for value in (1.0, 1.0, 0.0):  # promising, then one failure
        refuted_at = next_probe()
        router.observe("primary", value)
    assert state.demoted
    assert next_probe() - refuted_at <= EngineTuning().probe_after_refuted + 1
