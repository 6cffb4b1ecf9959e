"""The policies compared: the kalibr engine and the baselines.

Learning policies implement :class:`Learner` (``choose`` a path, ``learn`` an outcome) and are
driven request by request; the fixed rules (oracle, static chain, uniform random) need no
feedback and are computed for the whole horizon at once.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from benchmarks._environment import Environment
from kalibr_core.engine import EngineTuning, ExplorationConfig, GoalRouter, PathInfo

#: MABWiser is fed (and asked) in batches of this many requests: it is ~10x slower per call.
MABWISER_BATCH = 10


class Learner(Protocol):
    """A policy that learns from outcomes."""

    def choose(self, t: int) -> int:
        """The path for request ``t``."""
        ...

    def learn(self, path: int, value: float, t: int) -> None:
        """Learn the outcome ``value`` of an earlier request sent to ``path``."""
        ...


class KalibrPolicy:
    """The engine with its default configuration, driven through ``GoalRouter`` directly.

    Detected changes (``GoalRouter.observe`` returning a ``Change``) are recorded as
    ``(t, path, kind)`` with ``t`` the request at which the outcome was delivered.
    """

    def __init__(
        self, costs: np.ndarray, rng: np.random.Generator, tuning: EngineTuning | None = None
    ) -> None:
        self.router = GoalRouter(ExplorationConfig(), tuning or EngineTuning())
        self.ids = [f"path-{k}" for k in range(len(costs))]
        self.index = {pid: k for k, pid in enumerate(self.ids)}
        self.costs = [float(c) for c in costs]
        for pid, cost in zip(self.ids, self.costs, strict=True):
            self.router.add_path(PathInfo(pid, f"model-{pid}", cost_hint=cost))
        self.rng = rng
        self.changes: list[tuple[int, int, str]] = []

    def choose(self, t: int) -> int:
        return self.index[self.router.select(self.rng).path_id]

    def learn(self, path: int, value: float, t: int) -> None:
        change = self.router.observe(self.ids[path], value, cost_usd=self.costs[path])
        if change is not None:
            self.changes.append((t, path, change.kind))


class ThompsonPolicy:
    """Plain stationary Thompson sampling over Beta(1 + s, 1 + f) posteriors."""

    def __init__(self, k: int, rng: np.random.Generator) -> None:
        self.alpha = np.ones(k)
        self.beta = np.ones(k)
        self.rng = rng

    def choose(self, t: int) -> int:
        return int(np.argmax(self.rng.beta(self.alpha, self.beta)))

    def learn(self, path: int, value: float, t: int) -> None:
        self.alpha[path] += value
        self.beta[path] += 1.0 - value


class MabwiserPolicy:
    """MABWiser's Thompson sampling, asked and fed in batches of ``MABWISER_BATCH``.

    Every ``batch`` requests, the outcomes delivered since the last batch are passed to
    ``partial_fit`` and the next ``batch`` choices are drawn with one ``predict`` call: within a
    batch it learns nothing (as if its outcomes arrived up to ``batch`` requests late).
    """

    def __init__(self, k: int, seed: int, batch: int = MABWISER_BATCH) -> None:
        from mabwiser.mab import MAB, LearningPolicy

        self.mab = MAB(
            arms=list(range(k)), learning_policy=LearningPolicy.ThompsonSampling(), seed=seed
        )
        self.mab.fit(decisions=[], rewards=[])
        self.batch = batch
        self.queue: list[int] = []
        self.decisions: list[int] = []
        self.rewards: list[int] = []
        self._rows = np.zeros((batch, 1))

    def choose(self, t: int) -> int:
        if not self.queue:
            if self.decisions:
                self.mab.partial_fit(decisions=self.decisions, rewards=self.rewards)
                self.decisions, self.rewards = [], []
            self.queue = list(reversed(self.mab.predict(self._rows)))
        return int(self.queue.pop())

    def learn(self, path: int, value: float, t: int) -> None:
        self.decisions.append(path)
        self.rewards.append(round(value))


def drive(learner: Learner, observed: np.ndarray, delay: int, batch: int) -> np.ndarray:
    """Run a learner over the horizon; outcomes arrive ``delay`` requests late or in batches.

    Args:
        learner: The policy.
        observed: The outcome each path would report for each request, (T, K).
        delay: Outcome of request ``t`` is delivered before request ``t + delay``.
        batch: Outcomes of requests in ``[j b, (j + 1) b)`` are delivered before ``(j + 1) b``.

    Returns:
        The path chosen for each request, (T,).
    """
    horizon = observed.shape[0]
    choices = np.empty(horizon, dtype=np.int64)
    choose, learn = learner.choose, learner.learn
    if delay == 0 and batch == 1:
        for t in range(horizon):
            k = choose(t)
            choices[t] = k
            learn(k, float(observed[t, k]), t)
        return choices
    pending: list[tuple[int, int, float]] = []
    head = 0
    for t in range(horizon):
        while head < len(pending) and pending[head][0] <= t:
            _, k, v = pending[head]
            learn(k, v, t)
            head += 1
        k = choose(t)
        choices[t] = k
        due = t + delay if batch == 1 else (t // batch + 1) * batch + delay
        pending.append((due, k, float(observed[t, k])))
    return choices


def thompson_choices(
    observed: list[np.ndarray], delay: int, batch: int, rng: np.random.Generator
) -> np.ndarray:
    """Plain Thompson sampling on several seeds at once (one row per seed), vectorised.

    The same algorithm as :class:`ThompsonPolicy` with the same feedback timing as
    :func:`drive`, for a batch of environments: one ``beta`` draw of shape (seeds, K) per request
    instead of one Python-level draw per seed and request.
    """
    stacked = np.stack(observed)  # (S, T, K)
    seeds, horizon, k = stacked.shape
    alpha = np.ones((seeds, k))
    beta = np.ones((seeds, k))
    rows = np.arange(seeds)
    choices = np.empty((seeds, horizon), dtype=np.int64)
    values = np.empty((seeds, horizon))
    head = 0
    immediate = delay == 0 and batch == 1
    for t in range(horizon):
        if not immediate:
            start = head
            while (
                head < t
                and (head + delay if batch == 1 else (head // batch + 1) * batch + delay) <= t
            ):
                head += 1
            if head > start:
                ks = choices[:, start:head]
                vs = values[:, start:head]
                idx = (np.repeat(rows, head - start), ks.ravel())
                np.add.at(alpha, idx, vs.ravel())
                np.add.at(beta, idx, 1.0 - vs.ravel())
        chosen = np.argmax(rng.beta(alpha, beta), axis=1)
        value = stacked[rows, t, chosen].astype(np.float64)
        choices[:, t] = chosen
        if immediate:
            alpha[rows, chosen] += value
            beta[rows, chosen] += 1.0 - value
        else:
            values[:, t] = value
    return choices


def chain_choices(env: Environment, order: tuple[int, ...]) -> np.ndarray:
    """The static fallback chain: the first path in ``order`` that does not raise a hard error.

    Silently bad output never makes it fall back; if every path raises, the last one answers.
    """
    ok = ~env.errors[:, list(order)]
    first = np.argmax(ok, axis=1)
    first[~ok.any(axis=1)] = len(order) - 1
    return np.asarray(order, dtype=np.int64)[first]


def random_choices(env: Environment, rng: np.random.Generator) -> np.ndarray:
    """Uniform random routing."""
    return rng.integers(env.mu.shape[1], size=env.horizon).astype(np.int64)
