"""The simulated goal: K paths whose means follow a schedule, drawn with common random numbers.

Every request ``t`` has, for every path ``k``, a pre-drawn outcome ``values[t, k]`` in [0, 1] and a
hard-error flag ``errors[t, k]``. A policy that sends request ``t`` to path ``k`` sees exactly that
outcome, so every policy of one run faces the same luck (common random numbers, same seeds).

Hard errors model exceptions (timeouts, 5xx): with probability ``hard_error`` per call a path
raises, which counts as a failure (value 0) for the path that raised. They are a subset of the
failures, not extra ones: the true mean ``mu`` already includes them, because a non-erroring call
succeeds with probability ``mu / (1 - hard_error)``. Silently bad output (a wrong answer) is not a
hard error; only the static fallback chain reacts to hard errors, by retrying the next path.

Continuous scores (B7) are ``Beta(m * c, (1 - m) * c)`` with ``m = mu / (1 - hard_error)``, so
their mean is again ``mu``; the *binarised* view of a score ``x`` is a Bernoulli(``x``) draw, which
keeps the mean.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

#: Default instance of BENCHMARKS.md.
DEFAULT_MEANS = (0.90, 0.85, 0.80, 0.70, 0.60)
DEFAULT_COSTS = (1.0, 0.5, 0.2, 0.05, 0.01)
#: The cost tie-break margin: a path strictly within this of the best competes on cost.
TIE_MARGIN = 0.05
_TIE_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Shift:
    """A change of one path's mean: linear from its value at ``start`` to ``to`` at ``end``.

    ``start`` and ``end`` are fractions of the horizon; ``start == end`` is a sudden change.
    """

    path: int
    start: float
    end: float
    to: float


@dataclass(frozen=True, slots=True)
class Instance:
    """The paths of one scenario and how their means move over the horizon."""

    means: tuple[float, ...]
    costs: tuple[float, ...]
    shifts: tuple[Shift, ...] = ()
    scores: bool = False
    concentration: float = 2.0
    hard_error: float = 0.01

    @property
    def k(self) -> int:
        """Number of paths."""
        return len(self.means)

    def mean_matrix(self, horizon: int) -> np.ndarray:
        """True means, shape (horizon, K)."""
        mu = np.tile(np.asarray(self.means, dtype=np.float64), (horizon, 1))
        t = np.arange(horizon)
        for shift in self.shifts:
            start = round(shift.start * horizon)
            end = round(shift.end * horizon)
            before = mu[min(start, horizon - 1), shift.path]
            if end <= start:
                mu[start:, shift.path] = shift.to
            else:
                ramp = np.clip((t - start) / (end - start), 0.0, 1.0)
                column = before + (shift.to - before) * ramp
                mu[start:, shift.path] = column[start:]
        return mu


def oracle_choices(mu: np.ndarray, costs: np.ndarray, margin: float = TIE_MARGIN) -> np.ndarray:
    """The cost-aware oracle: the cheapest path whose true mean is strictly within the margin.

    With the default instance the .85 path is exactly 5 points below the .90 path, so it is not
    within the margin and the oracle is the success-maximising path; where a cheaper path is
    strictly closer than 5 points (B8, drifts), the oracle takes the cheaper one.
    """
    best = mu.max(axis=1, keepdims=True)
    within = best - mu < margin - _TIE_EPS
    priced = np.where(within, costs[None, :], np.inf)
    cheapest = priced.min(axis=1, keepdims=True)
    # Among equally cheap candidates, the higher mean.
    score = np.where(priced == cheapest, mu, -np.inf)
    return np.asarray(np.argmax(score, axis=1), dtype=np.int64)


def _seed_words(scenario_id: str, seed: int) -> list[int]:
    return [zlib.crc32(scenario_id.encode()), seed]


@dataclass(slots=True)
class Environment:
    """One seeded draw of a scenario's instance: means, outcomes, hard errors.

    Attributes:
        mu: True means, (T, K).
        values: The outcome a call would return, (T, K), in [0, 1] (0/1 unless scores).
        errors: Whether the call would raise a hard error, (T, K).
        binarised: Bernoulli(values) draws, for the binarised-score comparison (B7), or None.
        costs: Cost per call of each path, (K,).
        best: The best true mean at each request, (T,).
        oracle: The cost-aware oracle's choice at each request, (T,).
    """

    mu: np.ndarray
    values: np.ndarray
    errors: np.ndarray
    binarised: np.ndarray | None
    costs: np.ndarray
    best: np.ndarray = field(init=False)
    oracle: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.best = self.mu.max(axis=1)
        self.oracle = oracle_choices(self.mu, self.costs)

    @property
    def horizon(self) -> int:
        """Number of requests."""
        return int(self.mu.shape[0])

    @classmethod
    def draw(cls, instance: Instance, horizon: int, scenario_id: str, seed: int) -> Environment:
        """Draw the environment of ``scenario_id`` for ``seed`` (independent of any policy)."""
        rng = np.random.default_rng(_seed_words(scenario_id, seed))
        mu = instance.mean_matrix(horizon)
        h = instance.hard_error
        if mu.max() > 1.0 - h:
            raise ValueError("means must leave room for the hard-error probability")
        shape = mu.shape
        errors = rng.random(shape) < h
        clean = mu / (1.0 - h)
        binarised = None
        if instance.scores:
            c = instance.concentration
            a = np.maximum(clean * c, 1e-6)
            b = np.maximum((1.0 - clean) * c, 1e-6)
            values = rng.beta(a, b).astype(np.float32)
            values[errors] = 0.0
            binarised = (rng.random(shape) < values).astype(np.float32)
        else:
            values = ((rng.random(shape) < clean) & ~errors).astype(np.float32)
        return cls(mu, values, errors, binarised, np.asarray(instance.costs, dtype=np.float64))
