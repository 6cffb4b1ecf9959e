"""Running scenarios over seeds, in worker processes, with every policy on the same draws."""

from __future__ import annotations

import logging
import multiprocessing
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks._environment import Environment
from benchmarks._metrics import Trace, run_metrics
from benchmarks._policies import (
    KalibrPolicy,
    Learner,
    MabwiserPolicy,
    chain_choices,
    drive,
    random_choices,
    thompson_choices,
)
from benchmarks._scenarios import BY_ID, Scenario
from kalibr_core.engine import EngineTuning

logger = logging.getLogger("benchmarks")


@dataclass(frozen=True, slots=True)
class Task:
    """A chunk of seeds of one scenario."""

    scenario_id: str
    horizon: int
    seeds: tuple[int, ...]
    policies: tuple[str, ...]
    mabwiser_seeds: int
    tuning: tuple[tuple[str, Any], ...] = ()

    @property
    def weight(self) -> float:
        """Rough cost, to schedule the longest tasks first."""
        learners = sum(p in ("kalibr", "ts") for p in self.policies)
        return self.horizon * len(self.seeds) * (1 + learners) * BY_ID[self.scenario_id].instance.k


@dataclass(frozen=True, slots=True)
class RunResult:
    """Metrics of one policy on one seed of one scenario."""

    scenario_id: str
    policy: str
    seed: int
    metrics: dict[str, float]
    seconds: float


def _rng(scenario_id: str, seed: int, policy: str) -> np.random.Generator:
    return np.random.default_rng(
        [zlib.crc32(scenario_id.encode()), seed, zlib.crc32(policy.encode())]
    )


def run_chunk(
    scenario: Scenario,
    seeds: Iterable[int],
    horizon: int,
    policies: Iterable[str],
    *,
    mabwiser_seeds: int,
    tuning: EngineTuning | None = None,
) -> list[RunResult]:
    """Run every policy on the seeded environments of the scenario, seed by seed.

    Plain Thompson sampling runs vectorised over the chunk's seeds (same environments, same
    feedback timing). ``tuning`` replaces the engine's default tuning (for experiments; the
    suite's results are always the defaults).
    """
    seeds = list(seeds)
    policies = list(policies)
    key = scenario.env_key or scenario.id
    envs = {seed: Environment.draw(scenario.instance, horizon, key, seed) for seed in seeds}
    observed = {
        seed: env.binarised if scenario.binarise and env.binarised is not None else env.values
        for seed, env in envs.items()
    }
    ts_choices: dict[int, np.ndarray] = {}
    ts_seconds = 0.0
    if "ts" in policies:
        start = time.perf_counter()
        rows = thompson_choices(
            [observed[seed] for seed in seeds],
            scenario.delay,
            scenario.batch,
            _rng(key, seeds[0], f"ts-batch-{len(seeds)}"),
        )
        ts_choices = dict(zip(seeds, rows, strict=True))
        ts_seconds = (time.perf_counter() - start) / len(seeds)
    results = []
    for seed in seeds:
        env = envs[seed]
        for policy in policies:
            if policy == "mabwiser" and seed >= mabwiser_seeds:
                continue
            start = time.perf_counter()
            rng = _rng(key, seed, policy)
            changes: list[tuple[int, int, str]] = []
            if policy == "oracle":
                choices = env.oracle
            elif policy == "chain":
                choices = chain_choices(env, scenario.order())
            elif policy == "random":
                choices = random_choices(env, rng)
            elif policy == "ts":
                choices = ts_choices[seed]
            else:
                learner: Learner
                if policy == "kalibr":
                    kalibr = KalibrPolicy(env.costs, rng, tuning)
                    learner, changes = kalibr, kalibr.changes
                elif policy == "mabwiser":
                    learner = MabwiserPolicy(env.mu.shape[1], seed)
                else:
                    raise ValueError(f"unknown policy {policy!r}")
                choices = drive(learner, observed[seed], scenario.delay, scenario.batch)
            metrics = run_metrics(scenario, env, Trace(choices, changes))
            seconds = time.perf_counter() - start + (ts_seconds if policy == "ts" else 0.0)
            results.append(RunResult(scenario.id, policy, seed, metrics, seconds))
    return results


def run_task(task: Task) -> list[RunResult]:
    """Run one chunk of seeds (the unit of work of a worker process)."""
    tuning = EngineTuning(**dict(task.tuning)) if task.tuning else None
    return run_chunk(
        BY_ID[task.scenario_id],
        task.seeds,
        task.horizon,
        task.policies,
        mabwiser_seeds=task.mabwiser_seeds,
        tuning=tuning,
    )


def make_tasks(
    scenarios: list[Scenario],
    seeds: int,
    horizon_of: dict[str, int],
    mabwiser_seeds: int,
    chunk: int,
    tuning: tuple[tuple[str, Any], ...] = (),
) -> list[Task]:
    """Split each scenario's seeds into chunks, longest tasks first."""
    tasks = []
    for scenario in scenarios:
        for lo in range(0, seeds, chunk):
            chunk_seeds = tuple(range(lo, min(seeds, lo + chunk)))
            tasks.append(
                Task(
                    scenario.id,
                    horizon_of[scenario.id],
                    chunk_seeds,
                    scenario.policies,
                    mabwiser_seeds,
                    tuning,
                )
            )
    tasks.sort(key=lambda t: t.weight, reverse=True)
    return tasks


def execute(tasks: list[Task], workers: int) -> Iterator[list[RunResult]]:
    """Run tasks in ``workers`` processes (1: in this process), yielding results as they end."""
    if workers <= 1:
        for task in tasks:
            yield run_task(task)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        yield from pool.imap_unordered(run_task, tasks)
