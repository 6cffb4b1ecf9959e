"""Insights: structured diagnostics per goal for a coding agent (schema_version "1.0").

Pure functions over outcome metadata and path states; the caller fetches the outcomes of the
time window from a store. Thresholds are the spec's: a path more than 15 points below the best
underperforms, one failure category above 50% of failures dominates, a parameter whose values
spread more than 10 points matters, a cheaper path within 5 points is a cost inefficiency, and
fewer than 20 samples is low confidence.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

UNDERPERFORMING_GAP = 0.15
DOMINANT_FAILURE_SHARE = 0.5
PARAM_SPREAD = 0.10
COST_SIMILARITY = 0.05
LOW_CONFIDENCE_SAMPLES = 20
FAILING_RATE = 0.5


class OutcomeLike(Protocol):
    """The outcome metadata insights need (satisfied by the store's OutcomeRecord)."""

    path_id: str | None
    success: bool
    score: float | None
    failure_category: str | None
    cost_usd: float | None
    latency_ms: float | None
    created_at: float
    params: dict[str, Any] | None
    model_id: str | None


@dataclass(slots=True)
class PathView:
    """A registered path as insights see it (identity, live trend, disabled flag)."""

    path_id: str
    model_id: str
    tool_id: str | None
    params: dict[str, Any]
    enabled: bool
    trend: str = "stable"
    demoted: bool = False


@dataclass(slots=True)
class _Acc:
    n: int = 0
    successes: int = 0
    score_sum: float = 0.0
    score_n: int = 0
    cost_sum: float = 0.0
    cost_n: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(self, o: OutcomeLike) -> None:
        self.n += 1
        self.successes += int(o.success)
        if o.score is not None:
            self.score_sum += o.score
            self.score_n += 1
        if o.cost_usd is not None:
            self.cost_sum += o.cost_usd
            self.cost_n += 1
        if o.latency_ms is not None:
            self.latencies.append(o.latency_ms)

    @property
    def rate(self) -> float | None:
        return self.successes / self.n if self.n else None


def _confidence(successes: int, n: int) -> float:
    """1 minus the width of the 95% Wilson interval: 0 with no data, toward 1 with lots."""
    if n == 0:
        return 0.0
    z = 1.96
    p = successes / n
    denominator = 1 + z * z / n
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return round(max(0.0, 1.0 - 2.0 * half), 4)


def _trend(outcomes: Sequence[OutcomeLike]) -> tuple[str, float]:
    """Compare the recent half of the window with the older half."""
    n = len(outcomes)
    if n < 2 * LOW_CONFIDENCE_SAMPLES:
        return "stable", 0.0
    older, recent = outcomes[: n // 2], outcomes[n // 2 :]
    old_rate = sum(o.success for o in older) / len(older)
    new_rate = sum(o.success for o in recent) / len(recent)
    delta = new_rate - old_rate
    pooled = (old_rate + new_rate) / 2
    se = math.sqrt(max(pooled * (1 - pooled), 0.01) * (1 / len(older) + 1 / len(recent)))
    if abs(delta) >= 0.05 and abs(delta) > 2 * se:
        return ("improving" if delta > 0 else "degrading"), round(delta, 4)
    return "stable", round(delta, 4)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return round(ordered[index], 3)


def _signal(kind: str, severity: str, message: str, **data: Any) -> dict[str, Any]:
    return {"type": kind, "severity": severity, "message": message, "data": data}


def goal_insight(
    goal: str,
    outcomes: Sequence[OutcomeLike],
    paths: Iterable[PathView],
    *,
    min_samples: int = LOW_CONFIDENCE_SAMPLES,
) -> dict[str, Any]:
    """Insights for one goal from the outcomes of the window (oldest first)."""
    views = {p.path_id: p for p in paths}
    total = _Acc()
    per_path: dict[str, _Acc] = defaultdict(_Acc)
    failures: Counter[str] = Counter()
    for o in outcomes:
        total.add(o)
        if o.path_id is not None:
            per_path[o.path_id].add(o)
        if not o.success:
            failures[o.failure_category or "uncategorized"] += 1
    trend, trend_delta = _trend(outcomes)
    path_rows = []
    for path_id in list(views) + [p for p in per_path if p not in views]:
        acc = per_path.get(path_id, _Acc())
        view = views.get(path_id)
        path_rows.append(
            {
                "path_id": path_id,
                "model_id": view.model_id if view else None,
                "tool_id": view.tool_id if view else None,
                "params": view.params if view else {},
                "enabled": view.enabled if view else False,
                "success_rate": None if acc.rate is None else round(acc.rate, 4),
                "sample_count": acc.n,
                "avg_score": round(acc.score_sum / acc.score_n, 4) if acc.score_n else None,
                "traffic_share": round(acc.n / total.n, 4) if total.n else 0.0,
                "trend": view.trend if view else "stable",
                "demoted": view.demoted if view else False,
                "avg_cost_usd": round(acc.cost_sum / acc.cost_n, 8) if acc.cost_n else None,
                "avg_latency_ms": (
                    round(sum(acc.latencies) / len(acc.latencies), 3) if acc.latencies else None
                ),
                "p95_latency_ms": _percentile(acc.latencies, 0.95),
                "confidence": _confidence(acc.successes, acc.n),
            }
        )
    sensitivity = _param_sensitivity(outcomes, views)
    signals = _signals(path_rows, failures, sensitivity, min_samples)
    rate = total.rate
    if total.n < min_samples:
        status = "insufficient_data"
    elif rate is not None and rate < FAILING_RATE:
        status = "failing"
    elif trend == "degrading" or any(s["type"] == "drift_detected" for s in signals):
        status = "degrading"
    else:
        status = "healthy"
    if status == "healthy" and not any(
        s["type"] not in {"low_confidence", "param_sensitivity_detected"} for s in signals
    ):
        signals.append(
            _signal(
                "goal_healthy",
                "info",
                f"{goal} is performing well; no action needed.",
                success_rate=None if rate is None else round(rate, 4),
                sample_count=total.n,
            )
        )
    failure_total = sum(failures.values())
    return {
        "goal": goal,
        "status": status,
        "success_rate": None if rate is None else round(rate, 4),
        "sample_count": total.n,
        "trend": trend,
        "trend_delta": trend_delta,
        "confidence": _confidence(total.successes, total.n),
        "top_failure_modes": [
            {"category": category, "count": count, "share": round(count / failure_total, 4)}
            for category, count in failures.most_common()
        ],
        "paths": path_rows,
        "param_sensitivity": sensitivity,
        "actionable_signals": signals,
    }


def _param_sensitivity(
    outcomes: Sequence[OutcomeLike], views: Mapping[str, PathView]
) -> list[dict[str, Any]]:
    by_param: dict[str, dict[str, _Acc]] = defaultdict(lambda: defaultdict(_Acc))
    for o in outcomes:
        params = o.params
        if params is None and o.path_id is not None and o.path_id in views:
            params = views[o.path_id].params
        for key, value in (params or {}).items():
            by_param[key][json.dumps(value, sort_keys=True)].add(o)
    result = []
    for key, values in sorted(by_param.items()):
        rated = {v: acc for v, acc in values.items() if acc.n >= 5}
        if len(rated) < 2:
            continue
        rates = {v: acc.rate or 0.0 for v, acc in rated.items()}
        spread = max(rates.values()) - min(rates.values())
        best = max(rates, key=rates.__getitem__)
        result.append(
            {
                "param": key,
                "spread": round(spread, 4),
                "significant": spread > PARAM_SPREAD,
                "best_value": json.loads(best),
                "values": [
                    {
                        "value": json.loads(v),
                        "success_rate": round(rates[v], 4),
                        "sample_count": rated[v].n,
                    }
                    for v in sorted(rated, key=lambda v: -rates[v])
                ],
            }
        )
    return result


def _signals(
    paths: list[dict[str, Any]],
    failures: Counter[str],
    sensitivity: list[dict[str, Any]],
    min_samples: int,
) -> list[dict[str, Any]]:
    signals: list[dict[str, Any]] = []
    rated = [p for p in paths if p["sample_count"] >= min_samples]
    best = max(rated, key=lambda p: p["success_rate"], default=None)
    if best is not None:
        for p in rated:
            gap = best["success_rate"] - p["success_rate"]
            if p is not best and gap > UNDERPERFORMING_GAP:
                signals.append(
                    _signal(
                        "path_underperforming",
                        "critical" if gap > 0.3 else "warning",
                        f"{p['model_id']} is {gap:.0%} below the best path ({best['model_id']}).",
                        path_id=p["path_id"],
                        model_id=p["model_id"],
                        success_rate=p["success_rate"],
                        best_path_id=best["path_id"],
                        best_success_rate=best["success_rate"],
                        gap=round(gap, 4),
                    )
                )
    # Dominance among categorised failures: "uncategorized" is not a failure mode to act on.
    categorised = Counter({k: v for k, v in failures.items() if k != "uncategorized"})
    failure_total = sum(categorised.values())
    if failure_total >= 5:
        category, count = categorised.most_common(1)[0]
        if count / failure_total > DOMINANT_FAILURE_SHARE:
            signals.append(
                _signal(
                    "failure_mode_dominant",
                    "warning",
                    f"{count / failure_total:.0%} of failures are {category}.",
                    category=category,
                    count=count,
                    share=round(count / failure_total, 4),
                    total_failures=failure_total,
                )
            )
    for entry in sensitivity:
        if entry["significant"]:
            signals.append(
                _signal(
                    "param_sensitivity_detected",
                    "info",
                    f"{entry['param']} changes success by {entry['spread']:.0%};"
                    f" best value {entry['best_value']!r}.",
                    param=entry["param"],
                    spread=entry["spread"],
                    best_value=entry["best_value"],
                )
            )
    for p in paths:
        if p["trend"] == "degrading" and p["enabled"]:
            severity = "critical" if p["traffic_share"] >= 0.2 else "warning"
            signals.append(
                _signal(
                    "drift_detected",
                    severity,
                    f"{p['model_id']} is degrading (success {p['success_rate']}).",
                    path_id=p["path_id"],
                    model_id=p["model_id"],
                    success_rate=p["success_rate"],
                    traffic_share=p["traffic_share"],
                )
            )
    _cost_signal(rated, signals)
    for p in paths:
        if p["enabled"] and p["sample_count"] < LOW_CONFIDENCE_SAMPLES:
            signals.append(
                _signal(
                    "low_confidence",
                    "info",
                    f"{p['model_id']} has {p['sample_count']} samples"
                    f" (< {LOW_CONFIDENCE_SAMPLES}).",
                    path_id=p["path_id"],
                    model_id=p["model_id"],
                    sample_count=p["sample_count"],
                )
            )
    return signals


def _cost_signal(rated: list[dict[str, Any]], signals: list[dict[str, Any]]) -> None:
    costed = [p for p in rated if p["avg_cost_usd"] is not None]
    if len(costed) < 2:
        return
    main = max(costed, key=lambda p: p["traffic_share"])
    cheaper = [
        p
        for p in costed
        if p is not main
        and p["avg_cost_usd"] < main["avg_cost_usd"]
        and main["success_rate"] - p["success_rate"] <= COST_SIMILARITY
    ]
    if cheaper:
        alt = min(cheaper, key=lambda p: p["avg_cost_usd"])
        signals.append(
            _signal(
                "cost_inefficiency",
                "warning",
                f"{alt['model_id']} costs {alt['avg_cost_usd']:.6f} vs {main['avg_cost_usd']:.6f}"
                f" with a similar success rate.",
                path_id=main["path_id"],
                model_id=main["model_id"],
                cheaper_path_id=alt["path_id"],
                cheaper_model_id=alt["model_id"],
                cost_usd=main["avg_cost_usd"],
                cheaper_cost_usd=alt["avg_cost_usd"],
                success_rate=main["success_rate"],
                cheaper_success_rate=alt["success_rate"],
            )
        )


def cross_goal_summary(goals: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Aggregate counts over the goal insights."""
    counts = Counter(g["status"] for g in goals)
    return {
        "total_goals": len(goals),
        "healthy": counts["healthy"],
        "degrading": counts["degrading"],
        "failing": counts["failing"],
        "insufficient_data": counts["insufficient_data"],
        "total_outcomes": sum(int(g["sample_count"]) for g in goals),
    }
