"""Per-run metrics and their aggregation over seeds.

Definitions (where BENCHMARKS.md leaves room, the choice made here):

* regret: cumulative dynamic pseudo-regret, ``sum_t (max_k mu_t,k - mu_t,chosen)``, whole run
  and from the change on; ORS = ``sum_t mu_t,chosen / sum_t max_k mu_t,k``.
* detection delay: requests from the change to the first request ``t`` that goes to another
  path and from which on the degraded path gets at most 10% of the 100 requests
  ``[t, t + 100)``. The window looks forward from ``t`` because a trailing window ending at
  ``t`` would still hold pre-change requests, which puts a floor of ~90 under any delay; the
  request at ``t`` must go elsewhere so that the requests still sent to the degraded path
  before the router reacts are counted (a forward window alone tolerates 10 of them). A run
  that never gets there counts the whole remaining horizon (censored), and ``never`` counts
  such runs. ``alarm delay`` is the engine's own: requests from the change to the first
  ``drop`` its detector reports on the degraded path.
* false alarms: changes the engine's detector reports (drops and rises, any path) before the
  first change of any mean, per 10,000 of those requests.
* degraded share: share of the 1,000 requests from the change on sent to the degraded path.
* recovery: requests from the recovery to the first request ``t`` that goes to the recovered
  path and from which on it gets at least 50% of ``[t, t + 100)``.
* cost ratio: cost of the chosen paths over that of the cost-aware oracle's choices; oracle
  share: share of requests on the cost-aware oracle's path.
* switches: requests routed to a different path than the previous request, per 1,000.
* herding (B6): mean over the stale intervals in the first 20% of the run of the largest share
  one path takes of the interval's requests (1.0 = all of it to one path).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from benchmarks._environment import Environment
from benchmarks._scenarios import Scenario

_WINDOW = 100


@dataclass(slots=True)
class Trace:
    """What one policy did in one run."""

    choices: np.ndarray
    changes: list[tuple[int, int, str]] = field(default_factory=list)


def _first_window(hits: np.ndarray, test: str, threshold: int) -> int | None:
    """First ``i`` where ``hits[i]`` is ``test == "ge"`` and the window ``[i, i + 100)`` has
    at most (``le``) or at least (``ge``) ``threshold`` hits."""
    if hits.size < _WINDOW:
        return None
    sums = np.convolve(hits.astype(np.int64), np.ones(_WINDOW, dtype=np.int64), mode="valid")
    if test == "le":
        ok = (sums <= threshold) & ~hits[: sums.size]
    else:
        ok = (sums >= threshold) & hits[: sums.size]
    index = np.flatnonzero(ok)
    return int(index[0]) if index.size else None


def stationary_end(env: Environment) -> int:
    """The first request at which any mean differs from the start (T if none)."""
    moved = np.flatnonzero(np.any(env.mu != env.mu[0], axis=1))
    return int(moved[0]) if moved.size else env.horizon


def run_metrics(scenario: Scenario, env: Environment, trace: Trace) -> dict[str, float]:
    """All metrics of one run, as a flat dict (NaN where a metric does not apply)."""
    horizon = env.horizon
    choices = trace.choices
    steps = np.arange(horizon)
    chosen_mu = env.mu[steps, choices]
    gap = env.best - chosen_mu
    out: dict[str, float] = {
        "regret": float(gap.sum()),
        "ors": float(chosen_mu.sum() / env.best.sum()),
        "cost_ratio": float(env.costs[choices].sum() / env.costs[env.oracle].sum()),
        "oracle_share": float(np.mean(choices == env.oracle)),
        "switches": float(np.count_nonzero(choices[1:] != choices[:-1]) * 1000.0 / horizon),
    }
    for fraction in scenario.checkpoints:
        cut = round(fraction * horizon)
        out[f"regret@{cut}"] = float(gap[:cut].sum())
    quiet = stationary_end(env)
    alarms = sum(1 for t, _, _ in trace.changes if t < quiet)
    out["false_alarms"] = alarms * 10_000.0 / quiet
    if scenario.change_at is not None:
        change = round(scenario.change_at * horizon)
        out["regret_after"] = float(gap[change:].sum())
        out["ors_after"] = float(chosen_mu[change:].sum() / env.best[change:].sum())
        if scenario.degraded is not None:
            path = scenario.degraded
            end = round(scenario.recovery_at * horizon) if scenario.recovery_at else horizon
            on_path = choices[change:end] == path
            out["degraded_share"] = float(np.mean(on_path[:1000]))
            delay = _first_window(on_path, "le", _WINDOW // 10)
            out["detection_delay"] = float(delay if delay is not None else on_path.size)
            out["never_detected"] = float(delay is None)
            drops = [
                t for t, k, kind in trace.changes if k == path and kind == "drop" and t >= change
            ]
            out["alarm_delay"] = float(drops[0] - change) if drops else math.nan
        if scenario.recovery_at is not None and scenario.degraded is not None:
            back = round(scenario.recovery_at * horizon)
            on_path = choices[back:] == scenario.degraded
            delay = _first_window(on_path, "ge", _WINDOW // 2)
            out["recovery"] = float(delay if delay is not None else on_path.size)
            out["never_recovered"] = float(delay is None)
    if scenario.herding_until is not None:
        size = max(1, scenario.batch)
        limit = round(scenario.herding_until * horizon) // size * size
        if limit >= size:
            blocks = choices[:limit].reshape(-1, size)
            k = env.mu.shape[1]
            counts = np.stack([(blocks == j).sum(axis=1) for j in range(k)], axis=1)
            out["herding"] = float(np.mean(counts.max(axis=1) / size))
    return out


def summarise(values: list[float]) -> dict[str, float]:
    """Mean, sd, median, p90 and count of the non-NaN values."""
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return {"n": 0}
    return {
        "mean": float(arr.mean()),
        "sd": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "median": float(np.median(arr)),
        "p90": float(np.percentile(arr, 90)),
        "n": int(arr.size),
    }
