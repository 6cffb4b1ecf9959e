"""The scenarios B0-B8 of BENCHMARKS.md, as data.

Choices BENCHMARKS.md leaves open, made here:

* Costs: the default costs (1.0, 0.5, 0.2, 0.05, 0.01) everywhere except B0 and the hard B1
  instance, which use equal costs so that they measure learning alone (the cost tie-break is
  inert when every path costs the same).
* The static chain uses the configured order (path 0 first), except in B1, where it is given the
  wrong order (the .85 path first) that BENCHMARKS.md's 94.4% figure refers to.
* B3's "after the change" starts where the drifting path stops being the best (0.3625 T).
* B5: ``delay d`` delivers each outcome ``d`` requests later; ``batch b`` delivers the outcomes of
  each block of ``b`` requests together at the end of the block. The stationary check runs B1
  with delays 10 and 100.
* B6: ``M`` deciders take requests in turn and read a shared state that folds in their outcomes
  every ``s = 10`` of their own decisions, all together: the state is stale for ``M * s``
  requests at a time (which is how the engine is driven: batched feedback of ``M * s``).
* B7: scores ~ Beta(mu c, (1 - mu) c) with c = 2; the *binarised* variant feeds every learner a
  Bernoulli(score) draw instead of the score (same mean, less information).
* B8 costs: the first four default costs (1.0, 0.5, 0.2, 0.05); its oracle is the cost-aware one
  of :func:`benchmarks._environment.oracle_choices`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from benchmarks._environment import DEFAULT_COSTS, DEFAULT_MEANS, Instance, Shift

#: Every policy, in table order.
POLICIES = ("kalibr", "oracle", "chain", "random", "ts", "mabwiser")
#: Policies that learn from outcomes (the others are fixed rules).
LEARNERS = ("kalibr", "ts", "mabwiser")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One benchmark scenario.

    Attributes:
        id: Short id, e.g. ``B2a`` or ``B5-d100``.
        title: What it tests.
        instance: Paths, costs and the schedule of their means.
        horizon: Requests per run in full mode.
        quick_horizon: Requests per run in quick mode.
        change_at: Fraction of the horizon where "after the change" starts, or None.
        degraded: The path that degrades at ``change_at``, or None.
        recovery_at: Fraction of the horizon where the degraded path recovers, or None.
        delay: Outcomes arrive this many requests after the decision.
        batch: Outcomes arrive in blocks of this many requests (1: one by one).
        binarise: Learners see Bernoulli(score) draws instead of scores.
        chain_order: Order of the static fallback chain (None: configured order).
        checkpoints: Fractions of the horizon at which the cumulative regret is also reported.
        policies: The policies run (MABWiser needs 0/1 outcomes).
        herding_until: Fraction of the horizon in which herding is measured (B6), or None.
        env_key: Scenarios with the same key draw the same environments for the same seeds
            (paired comparisons: B5 against B1 and B2a, B6 against B2a, B7 score feeds).
    """

    id: str
    title: str
    instance: Instance
    horizon: int = 10_000
    quick_horizon: int = 2_000
    change_at: float | None = None
    degraded: int | None = None
    recovery_at: float | None = None
    delay: int = 0
    batch: int = 1
    binarise: bool = False
    chain_order: tuple[int, ...] | None = None
    checkpoints: tuple[float, ...] = ()
    policies: tuple[str, ...] = POLICIES
    herding_until: float | None = None
    env_key: str | None = None

    def order(self) -> tuple[int, ...]:
        """The static chain's order."""
        return self.chain_order or tuple(range(self.instance.k))


DEFAULT = Instance(DEFAULT_MEANS, DEFAULT_COSTS)


def _drop(to: float, at: float = 0.5) -> Instance:
    return replace(DEFAULT, shifts=(Shift(0, at, at, to),))


_B2A = Scenario("B2a", "best path drops .90 -> .30 at T/2", _drop(0.30), change_at=0.5, degraded=0)
_NO_MABWISER = tuple(p for p in POLICIES if p != "mabwiser")
_B8_COSTS = DEFAULT_COSTS[:4]
_B8_EASY = Instance((0.90, 0.88, 0.80, 0.60), _B8_COSTS)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "B0",
        "literature anchor: K=10, means (.5, .4 x 9), equal costs",
        Instance((0.5,) + (0.4,) * 9, (1.0,) * 10),
        horizon=100_000,
        quick_horizon=3_000,
        checkpoints=(0.1, 1.0),
    ),
    Scenario(
        "B1",
        "stationary default instance (chain in the wrong order)",
        DEFAULT,
        chain_order=(1, 0, 2, 3, 4),
    ),
    Scenario(
        "B1-hard",
        "stationary, 2-point gaps (.90 .88 .86 .84 .82), equal costs",
        Instance((0.90, 0.88, 0.86, 0.84, 0.82), (1.0,) * 5),
    ),
    _B2A,
    replace(_B2A, id="B2b", title="best path drops .90 -> .57 at T/2", instance=_drop(0.57)),
    replace(_B2A, id="B2c", title="best path drops .90 -> .75 at T/2", instance=_drop(0.75)),
    replace(
        _B2A,
        id="B2d",
        title="long history: .90 -> .30 at 0.9 T, T = 20,000",
        instance=_drop(0.30, 0.9),
        horizon=20_000,
        quick_horizon=4_000,
        change_at=0.9,
    ),
    Scenario(
        "B3",
        "gradual drift: best path .90 -> .50 linearly over [0.3 T, 0.8 T]",
        replace(DEFAULT, shifts=(Shift(0, 0.3, 0.8, 0.50),)),
        change_at=0.3625,
        degraded=0,
    ),
    Scenario(
        "B4",
        "recovery: .90 -> .30 at 0.3 T, back to .90 at 0.6 T",
        replace(DEFAULT, shifts=(Shift(0, 0.3, 0.3, 0.30), Shift(0, 0.6, 0.6, 0.90))),
        change_at=0.3,
        degraded=0,
        recovery_at=0.6,
        quick_horizon=3_000,
    ),
    *(
        replace(
            _B2A,
            id=f"B5-d{d}",
            title=f"B2a, outcomes delayed by {d} requests",
            delay=d,
            env_key="B2a",
        )
        for d in (10, 100, 500)
    ),
    replace(
        _B2A,
        id="B5-b100",
        title="B2a, outcomes delivered in batches of 100",
        batch=100,
        env_key="B2a",
    ),
    *(
        Scenario(
            f"B5-stat-d{d}",
            f"B1 with outcomes delayed by {d} requests",
            DEFAULT,
            delay=d,
            chain_order=(1, 0, 2, 3, 4),
            env_key="B1",
        )
        for d in (10, 100)
    ),
    *(
        replace(
            _B2A,
            id=f"B6-M{m}",
            title=f"B2a, {m} deciders sharing state synced every 10 decisions each",
            batch=10 * m,
            herding_until=0.2,
            env_key="B2a",
        )
        for m in (1, 8, 64)
    ),
    Scenario(
        "B7-B1-frac",
        "B1 with Beta(mu c, (1-mu) c) scores, c=2, fed as scores",
        replace(DEFAULT, scores=True),
        policies=_NO_MABWISER,
        chain_order=(1, 0, 2, 3, 4),
        env_key="B7-B1",
    ),
    Scenario(
        "B7-B1-bin",
        "B1 with Beta scores, fed binarised (Bernoulli(score))",
        replace(DEFAULT, scores=True),
        binarise=True,
        chain_order=(1, 0, 2, 3, 4),
        env_key="B7-B1",
    ),
    replace(
        _B2A,
        id="B7-B2a-frac",
        title="B2a with Beta scores, fed as scores",
        instance=replace(_drop(0.30), scores=True),
        policies=_NO_MABWISER,
        env_key="B7-B2a",
    ),
    replace(
        _B2A,
        id="B7-B2a-bin",
        title="B2a with Beta scores, fed binarised",
        instance=replace(_drop(0.30), scores=True),
        binarise=True,
        env_key="B7-B2a",
    ),
    Scenario("B8-easy", "cost tie-break, easy: (.90 .88 .80 .60), costs (1 .5 .2 .05)", _B8_EASY),
    Scenario(
        "B8-boundary",
        "cost tie-break, boundary: (.90 .86 .84 .60), costs (1 .5 .2 .05)",
        Instance((0.90, 0.86, 0.84, 0.60), _B8_COSTS),
    ),
    Scenario(
        "B8-degrade",
        "cost tie-break: the cheap .88 path degrades to .60 at T/2",
        replace(_B8_EASY, shifts=(Shift(1, 0.5, 0.5, 0.60),)),
        change_at=0.5,
        degraded=1,
    ),
)

BY_ID = {s.id: s for s in SCENARIOS}


def select_scenarios(spec: str | None) -> list[Scenario]:
    """Scenarios by comma-separated ids or prefixes (``B2`` selects B2a-B2d); None: all."""
    if not spec:
        return list(SCENARIOS)
    chosen: list[Scenario] = []
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        matches = [s for s in SCENARIOS if s.id == token] or [
            s for s in SCENARIOS if s.id.startswith(token)
        ]
        if not matches:
            raise SystemExit(f"unknown scenario {token!r}; known: {', '.join(BY_ID)}")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen
