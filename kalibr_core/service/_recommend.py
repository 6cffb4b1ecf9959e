"""Ranking a goal's paths for one objective (``POST /api/v1/intelligence/recommend``).

A pure function over the per-path rows of :meth:`Intelligence.stats`; it adds no learning of its
own. Quality is the posterior mean success rate, Beta(1 + s, 1 + f), so a path with two lucky
outcomes does not outrank one with a hundred good ones. Cost and latency are taken per success
(the average divided by the quality): what a caller expects to spend, or wait, to get one
successful outcome when failures are retried.

* ``quality``: highest posterior mean first.
* ``cost``: lowest cost per success first; paths without cost data last.
* ``latency``: lowest latency per success first; paths without latency data last.
* ``balanced``: highest ``quality + 0.05 * (cost_efficiency + latency_efficiency) / 2``, where
  an efficiency is the best (lowest) per-success value among the goal's paths divided by this
  path's (1.0 for the best, 0.5 for twice the best) and a path without data for a measure gets
  0.5 for it (neutral). Cost and latency can make up at most 5 points of success rate: the
  spec's rule that success dominates and cost and latency break ties within 5 points.

Ties go to the higher quality, then to the more samples, then to registration order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kalibr_core.service._models import OptimizeFor

TIE_MARGIN = 0.05
NEUTRAL_EFFICIENCY = 0.5


def _per_success(value: float | None, quality: float) -> float | None:
    return None if value is None else value / quality


def _efficiency(value: float | None, best: float | None) -> float:
    if value is None or best is None:
        return NEUTRAL_EFFICIENCY
    if value <= best:
        return 1.0
    return best / value


def rank_paths(
    rows: Sequence[Mapping[str, Any]], optimize_for: OptimizeFor
) -> list[dict[str, Any]]:
    """Rank the enabled paths of ``stats()["paths"]`` for ``optimize_for``.

    Returns:
        One dict per enabled path, best first, with ``rank`` (1-based) and the measures used:
        ``posterior_mean``, ``cost_per_success_usd``, ``latency_per_success_ms`` and
        ``balanced_score``.
    """
    entries: list[dict[str, Any]] = []
    for row in rows:
        if not row["enabled"]:
            continue
        quality = float(row["posterior_mean"])
        entries.append(
            {
                "path_id": row["path_id"],
                "model_id": row["model_id"],
                "tool_id": row["tool_id"],
                "params": row["params"],
                "success_rate": row["success_rate"],
                "posterior_mean": quality,
                "sample_count": row["sample_count"],
                "trend": row["trend"],
                "avg_cost_usd": row["avg_cost_usd"],
                "avg_latency_ms": row["avg_latency_ms"],
                "cost_per_success_usd": _per_success(row["avg_cost_usd"], quality),
                "latency_per_success_ms": _per_success(row["avg_latency_ms"], quality),
            }
        )
    costs = [e["cost_per_success_usd"] for e in entries if e["cost_per_success_usd"] is not None]
    latencies = [
        e["latency_per_success_ms"] for e in entries if e["latency_per_success_ms"] is not None
    ]
    best_cost = min(costs, default=None)
    best_latency = min(latencies, default=None)
    for entry in entries:
        efficiency = (
            _efficiency(entry["cost_per_success_usd"], best_cost)
            + _efficiency(entry["latency_per_success_ms"], best_latency)
        ) / 2
        score = entry["posterior_mean"] + TIE_MARGIN * efficiency
        entry["balanced_score"] = round(score, 6)
        for measure in ("cost_per_success_usd", "latency_per_success_ms"):
            if entry[measure] is not None:
                entry[measure] = round(entry[measure], 10)

    def sort_key(indexed: tuple[int, dict[str, Any]]) -> tuple[float, ...]:
        order, entry = indexed
        quality = entry["posterior_mean"]
        tail = (-quality, -float(entry["sample_count"]), float(order))
        if optimize_for == "quality":
            return tail
        if optimize_for == "balanced":
            return (-entry["balanced_score"], *tail)
        measure = entry[
            "cost_per_success_usd" if optimize_for == "cost" else "latency_per_success_ms"
        ]
        missing = measure is None
        return (float(missing), 0.0 if missing else measure, *tail)

    ranked = [entry for _, entry in sorted(enumerate(entries), key=sort_key)]
    for position, entry in enumerate(ranked, start=1):
        entry["rank"] = position
    return ranked


def explain(ranked: Sequence[Mapping[str, Any]], optimize_for: OptimizeFor) -> str:
    """A sentence saying why the first path of a ranking won."""
    best = ranked[0]
    rate = best["success_rate"]
    quality = (
        f"success {rate:.0%} over {best['sample_count']} outcomes"
        if rate is not None
        else "no outcomes yet"
    )
    if optimize_for == "quality":
        why = f"highest posterior success rate ({best['posterior_mean']:.2f})"
    elif optimize_for == "cost":
        value = best["cost_per_success_usd"]
        why = (
            f"lowest cost per success (${value:.6f})"
            if value is not None
            else "no path has cost data yet, so ranked by quality"
        )
    elif optimize_for == "latency":
        value = best["latency_per_success_ms"]
        why = (
            f"lowest latency per success ({value:.0f} ms)"
            if value is not None
            else "no path has latency data yet, so ranked by quality"
        )
    else:
        why = f"highest balanced score ({best['balanced_score']:.3f})"
    text = f"{best['model_id']}: {why}; {quality}"
    if len(ranked) > 1:
        text += f"; next: {ranked[1]['model_id']}"
    return text
