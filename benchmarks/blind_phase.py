"""Where the regret of delayed feedback goes: ``python -m benchmarks.blind_phase [--seeds N]``.

BENCHMARKS.md asks B1 with outcomes delayed by ``d`` requests to keep its regret within 1.1x of
the immediate-feedback regret for ``d <= 100``. The first ``d`` decisions of a delayed run are
made before any outcome arrives, so a policy that knows nothing of the paths' order spreads
them evenly. This splits each run's regret into those first ``d`` requests and the rest, for
the engine and for plain Thompson sampling, on the same seeded environments as the suite's B1,
immediate and delayed side by side.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from benchmarks._environment import Environment
from benchmarks._policies import KalibrPolicy, Learner, ThompsonPolicy, drive
from benchmarks._scenarios import DEFAULT

HORIZON = 10_000


def split_regret(policy: str, delay: int, seeds: int) -> tuple[float, float]:
    """Mean regret over the first ``delay`` requests (at least 100) and over the rest."""
    head_len = max(delay, 100)
    head, tail = [], []
    for seed in range(seeds):
        env = Environment.draw(DEFAULT, HORIZON, "B1", seed)
        observed = np.where(env.errors, 0.0, env.values)
        rng = np.random.default_rng(10_000 + seed)
        learner: Learner
        if policy == "kalibr":
            learner = KalibrPolicy(env.costs, rng)
        else:
            learner = ThompsonPolicy(env.mu.shape[1], rng)
        choices = drive(learner, observed, delay, 1)
        regret = env.best - env.mu[np.arange(HORIZON), choices]
        head.append(float(regret[:head_len].sum()))
        tail.append(float(regret[head_len:].sum()))
    return float(np.mean(head)), float(np.mean(tail))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.blind_phase")
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--delay", type=int, default=100)
    args = parser.parse_args(argv)
    if args.seeds < 1 or not 1 <= args.delay < HORIZON:
        parser.error(f"--seeds must be >= 1 and --delay in [1, {HORIZON})")
    n = max(args.delay, 100)
    print(f"B1, {args.seeds} seeds: mean regret over requests 0-{n - 1} and {n}-{HORIZON - 1}")
    print()
    print(f"| policy | feedback | first {n} | rest | total | delayed / immediate |")
    print("|---|---|---:|---:|---:|---:|")
    for policy in ("kalibr", "ts"):
        now = split_regret(policy, 0, args.seeds)
        late = split_regret(policy, args.delay, args.seeds)
        for label, (head, tail) in (("immediate", now), (f"delayed {args.delay}", late)):
            ratio = (head + tail) / sum(now)
            print(
                f"| {policy} | {label} | {head:.2f} | {tail:.2f} | {head + tail:.2f} "
                f"| {ratio:.3f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
