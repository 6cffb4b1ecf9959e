"""GoalRouter: the learning state of one routing scope and the selection algorithm over it.

A scope is (tenant, goal, pipeline). Selection, per decision:

1. Eligible paths: enabled, allowed by the task's risk level and the candidate models.
2. A demoted path (a detected drop that left it clearly below the best alternative, or rolled
   back confidently below ``rollback_threshold``) whose probe is due is probed; probes back off
   geometrically so a broken path costs little, come sooner while they look like a recovery,
   and a recovery test on them (or a detected rise) brings the path back, on trial.
3. With an explicit ``exploration_rate``, that share of decisions is uniform exploration.
4. Otherwise Thompson sampling over Beta posteriors of the non-demoted paths. When the sampled
   winner is the best path or within the cost tie set (success rate confidently within 5 points
   of the best, with hysteresis), the cheapest member of the set is used (then the fastest)
   unless the draw puts the winner more than 5 points ahead: success dominates, cost and
   latency only break ties.

Each selection keeps the posterior snapshot it was drawn from, so the probability that the
chosen path would have been chosen (its propensity) can be estimated off the hot path, for
offline evaluation.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from kalibr_core._errors import NoPathAvailableError, NotFoundError
from kalibr_core.engine._config import EngineTuning, ExplorationConfig
from kalibr_core.engine._detector import Change, ChangeKind, bernoulli_kl
from kalibr_core.engine._state import PathInfo, PathState

logger = logging.getLogger("kalibr_core.engine")

Reason = Literal["optimal", "cost_optimized", "exploration", "fallback"]
_DAY = 86_400.0
#: Standard errors by which a path must be below the rollback threshold to be rolled back.
_ROLLBACK_Z = 2.0
#: Standard errors by which a path must fall below the best alternative for a drop to demote it.
_DEMOTE_Z = 2.0
#: Outcomes after which a path that dropped but stayed competitive leaves review.
_SUSPECT_SAMPLES = 50
#: A change followed by this many outcomes of the path is not restored after a restart.
_RESTORED_CHANGE_HORIZON = 500


@dataclass(frozen=True, slots=True)
class Selection:
    """The engine's choice for one decision.

    Attributes:
        path_id: The chosen path.
        reason: ``optimal``, ``cost_optimized``, ``exploration`` or ``fallback`` (learning).
        exploration: True when the path was chosen to gather information.
        inputs: The posterior snapshot, for the propensity estimate.
        confidence: Probability that the chosen path is the best, discounted while learning.
        success_rate: Posterior mean success rate of the chosen path.
        sample_count: Outcomes behind that estimate (since its last restart).
    """

    path_id: str
    reason: Reason
    exploration: bool
    confidence: float
    success_rate: float
    sample_count: int
    inputs: PropensityInputs | None = None

    def propensity(self, rng: np.random.Generator, draws: int = 256) -> float:
        """Probability that this decision rule would have chosen this path.

        Estimated by repeating the posterior draw (Monte Carlo), so it is computed on demand,
        off the decision's hot path. Deterministic choices (probes, single paths) give 1.0.
        """
        if self.inputs is None:
            return 1.0
        return self.inputs.estimate(rng, draws)


#: A decision's posterior snapshot: alphas, betas, tie mapping, tie margin.
PosteriorSnapshot = tuple[tuple[float, ...], tuple[float, ...], tuple[int, ...], float]


@dataclass(frozen=True, slots=True)
class PropensityInputs:
    """The posterior snapshot a decision was drawn from, to estimate its propensity later."""

    alphas: tuple[float, ...]
    betas: tuple[float, ...]
    mapping: tuple[int, ...]
    rate: float
    index: int
    sampled: bool
    margin: float = math.inf

    def estimate(self, rng: np.random.Generator, draws: int) -> float:
        """Monte Carlo estimate of P(choice == index) under the same decision rule."""
        if len(self.alphas) == 1:
            return 1.0
        if not self.sampled:
            return self.with_share(1.0)
        snapshot = self.snapshot
        return self.with_share(snapshot_shares([snapshot], rng, draws)[snapshot][self.index])

    def with_share(self, share: float) -> float:
        """The propensity, given the share of posterior draws that lead to this choice."""
        return round(self.rate / len(self.alphas) + (1.0 - self.rate) * share, 6)

    @property
    def snapshot(self) -> PosteriorSnapshot:
        """What the draws depend on (alphas, betas, tie mapping, tie margin): decisions with
        the same snapshot share their Monte Carlo draws."""
        return (self.alphas, self.betas, self.mapping, self.margin)


def snapshot_shares(
    snapshots: Sequence[PosteriorSnapshot], rng: np.random.Generator, draws: int
) -> dict[PosteriorSnapshot, list[float]]:
    """Each distinct snapshot's share of ``draws`` decisions that go to each of its paths.

    The decision rule: the posterior draw's winner, replaced by the cheaper tie member its
    mapping names unless the winner leads that member by more than the margin. Snapshots with
    as many paths are drawn in one numpy call.
    """
    by_size: dict[int, dict[PosteriorSnapshot, None]] = {}  # insertion-ordered sets
    for snapshot in snapshots:
        by_size.setdefault(len(snapshot[0]), {})[snapshot] = None
    shares: dict[PosteriorSnapshot, list[float]] = {}
    for k, group in by_size.items():
        distinct = list(group)
        n = len(distinct)
        alphas = np.array([a for a, _, _, _ in distinct])[:, None, :]  # (n, 1, k)
        betas = np.array([b for _, b, _, _ in distinct])[:, None, :]
        theta = rng.beta(alphas, betas, size=(n, draws, k))
        chosen = np.argmax(theta, axis=2)  # (n, draws): the winners
        if any(m != tuple(range(k)) for _, _, m, _ in distinct):  # a cost tie somewhere
            mapping = np.array([m for _, _, m, _ in distinct])  # (n, k)
            margins = np.array([margin for _, _, _, margin in distinct])[:, None]
            targets = np.take_along_axis(mapping, chosen, axis=1)
            lead = np.take_along_axis(theta, chosen[:, :, None], axis=2)[:, :, 0]
            lead -= np.take_along_axis(theta, targets[:, :, None], axis=2)[:, :, 0]
            chosen = np.where(lead <= margins, targets, chosen)
        cells = (chosen + (np.arange(n) * k)[:, None]).ravel()
        counts = np.bincount(cells, minlength=n * k).reshape(n, k)
        shares.update(zip(distinct, (counts / draws).tolist(), strict=True))
    return shares


#: From this many paths on, a draw with a random.Random takes its Beta draws from numpy (one
#: call for every path) rather than from random.betavariate (about 1.4 us a path): decide()
#: with 50 paths took 104-108 us at p50, 77 us this way; at 10 paths numpy was no faster.
_NUMPY_DRAW_FROM = 16

#: Seconds after which a decision drawn ahead is no longer taken (it was drawn for its time).
_AHEAD_S = 1.0


@dataclass(frozen=True, slots=True)
class _Ahead:
    """A decision drawn ahead (:meth:`GoalRouter.draw_ahead`) and what it was drawn for."""

    request: tuple[str, tuple[str, ...] | None, float | None]
    version: int
    drawn_at: float | None
    selection: Selection


@dataclass(frozen=True, slots=True)
class RankedPath:
    """A path in a deterministic ranking (policy, alternatives, stats)."""

    state: PathState
    meets_constraints: bool
    unmet: tuple[str, ...]


class GoalRouter:
    """Routing state and decisions for one scope. Pure: no I/O; not thread-safe by itself.

    Example:
        >>> router = GoalRouter(ExplorationConfig())
        >>> state = router.add_path(PathInfo("p1", "gpt-4o"))
        >>> choice = router.select(np.random.default_rng(0))
        >>> choice.path_id, choice.reason
        ('p1', 'fallback')
        >>> router.observe(choice.path_id, 1.0) is None
        True
    """

    def __init__(
        self, config: ExplorationConfig | None = None, tuning: EngineTuning | None = None
    ) -> None:
        self._config = config or ExplorationConfig()
        self.tuning = tuning or EngineTuning()
        self.paths: dict[str, PathState] = {}
        self.tick = 0
        self.seq = 0
        self._tie_dirty = True
        # Bumped by every change a selection depends on (outcomes, paths, settings, the
        # clock): a decision drawn ahead is taken only if it is unchanged.
        self._version = 0
        self._ahead: _Ahead | None = None
        # A numpy generator seeded from the random.Random a caller draws with (many paths).
        self._numpy_source: random.Random | None = None
        self._numpy: np.random.Generator | None = None
        self._suspects: dict[str, PathState] = {}

    @property
    def config(self) -> ExplorationConfig:
        """The scope's exploration settings."""
        return self._config

    @config.setter
    def config(self, config: ExplorationConfig) -> None:
        self._config = config
        self._changed()

    def _changed(self) -> None:
        """What selections depend on changed: refresh the tie set, drop a decision ahead."""
        self._tie_dirty = True
        self._version += 1

    # -- paths ---------------------------------------------------------------------------------
    def add_path(self, info: PathInfo) -> PathState:
        """Add a path, or refresh its info (idempotent); returns its state."""
        state = self.paths.get(info.path_id)
        if state is None:
            state = PathState(info=info, tuning=self.tuning)
            self.paths[info.path_id] = state
        else:
            state.info = info
        self._changed()
        return state

    def set_enabled(self, path_id: str, enabled: bool) -> None:
        """Enable or disable (soft delete) a path."""
        self._state(path_id).info.enabled = enabled
        self._changed()

    def _state(self, path_id: str) -> PathState:
        try:
            return self.paths[path_id]
        except KeyError:
            raise NotFoundError(f"unknown path_id {path_id!r}") from None

    # -- learning ------------------------------------------------------------------------------
    def observe(
        self,
        path_id: str,
        value: float,
        *,
        cost_usd: float | None = None,
        latency_ms: float | None = None,
        now: float | None = None,
        seq: int | None = None,
    ) -> Change | None:
        """Learn from one outcome of value in [0, 1] (1 success, 0 failure, or a score)."""
        state = self._state(path_id)
        if seq is None:
            seq = self.seq
        self.seq = max(self.seq, seq) + 1
        change = state.observe(
            value,
            seq=seq,
            tick=self.tick,
            cost_usd=cost_usd,
            latency_ms=latency_ms,
            now=now,
            reference=self._best_other(state) if state.demoted else None,
        )
        if change is not None and change.kind == "drop" and not state.demoted:
            # Out of exploitation only once the drop takes it clearly below the best
            # alternative: a path still competitive after a drop (or a false alarm) stays in
            # the draw, under review until its restarted statistics are informative.
            self._suspects[state.info.path_id] = state
        if self._suspects:
            self._review_suspects()
        if change is not None:
            logger.info(
                "path %s (%s): %s detected, %.2f -> %.2f",
                path_id,
                state.info.model_id,
                change.kind,
                change.before_mean,
                change.after_mean,
            )
        self._check_rollback(state)
        self._changed()
        return change

    def _review_suspects(self) -> None:
        """Demote paths whose drop left them clearly below the best alternative."""
        for path_id, state in list(self._suspects.items()):
            if state.demoted or not state.info.enabled or state.eff_count >= _SUSPECT_SAMPLES:
                del self._suspects[path_id]
                continue
            other = self._best_other(state)
            if other is None or state.mean + _DEMOTE_Z * state.std_error() < other:
                state.demote(self.tick)
                del self._suspects[path_id]

    def _best_other(self, state: PathState) -> float | None:
        """Posterior mean of the best other path in exploitation, if any."""
        return max(
            (
                s.mean
                for s in self.paths.values()
                if s is not state and s.info.enabled and not s.demoted
            ),
            default=None,
        )

    def correct(self, path_id: str, old_value: float, new_value: float, seq: int | None) -> None:
        """Apply a late correction of one outcome's value."""
        self._state(path_id).correct(old_value, new_value, seq)
        self._changed()

    def restore_changes(self) -> list[str]:
        """Re-derive detected changes from restored statistics (a scope loaded from a store).

        A store keeps a detected change as the start of the path's epoch: the all-time totals
        and the statistics since the change. That is enough to tell what the change was, the
        level before (all-time minus epoch) against the level since, so a restart does not
        forget it: a drop is reviewed as when it was detected (demoted if it left the path
        clearly below the best alternative) and the path reports ``degrading`` again. The
        change's age is not stored; the outcomes since it stand in for it, and a change
        followed by ``_RESTORED_CHANGE_HORIZON`` outcomes or more is history, not restored.
        Call it once, after every path's statistics are restored.

        Returns:
            The ids of the paths whose change was restored.
        """
        restored = []
        for state in self.paths.values():
            since = state.eff_count
            before = state.count - since
            if state.epoch_seq < 0 or since <= 0 or before <= 0:
                continue
            if since >= _RESTORED_CHANGE_HORIZON or state.last_change is not None:
                continue
            after_mean = state.eff_successes / since
            before_mean = max(0.0, state.successes - state.eff_successes) / before
            if after_mean == before_mean:
                continue
            overall = state.successes / state.count
            statistic = before * bernoulli_kl(before_mean, overall) + since * bernoulli_kl(
                after_mean, overall
            )
            kind: ChangeKind = "drop" if after_mean < before_mean else "rise"
            state.last_change = Change(
                kind, since, state.eff_successes, before_mean, after_mean, statistic
            )
            state.last_change_tick = self.tick - since
            if kind == "drop":
                self._suspects[state.info.path_id] = state
            restored.append(state.info.path_id)
        if self._suspects:
            self._review_suspects()
        self._changed()
        return restored

    def _check_rollback(self, state: PathState) -> None:
        threshold = self.config.rollback_threshold
        if (
            state.rolled_back
            or state.eff_count < self.config.min_samples_before_exploit
            or state.mean >= threshold
        ):
            return
        # Confidently below: an unlucky start of a good path (a 50% path can fail 15 of its
        # first 20 calls) must not take it out of exploitation for a long time.
        below = state.mean + _ROLLBACK_Z * state.std_error() < threshold
        if below and not state.rolled_back:
            others_ok = any(
                s.mean >= threshold and s.info.enabled
                for s in self.paths.values()
                if s is not state
            )
            if others_ok:
                state.rolled_back = True
                state.demote(self.tick)
                logger.info("path %s rolled back (%.2f)", state.info.path_id, state.mean)

    # -- selection -----------------------------------------------------------------------------
    def eligible(
        self,
        task_risk_level: str = "low",
        candidate_model_ids: Iterable[str] | None = None,
        exclude_models: Iterable[str] | None = None,
    ) -> list[PathState]:
        """Enabled paths allowed by the risk level, the candidates and the exclusions."""
        states = [s for s in self.paths.values() if s.info.enabled]
        if candidate_model_ids is not None:
            wanted = set(candidate_model_ids)
            states = [s for s in states if s.info.model_id in wanted]
        if exclude_models:
            banned = set(exclude_models)
            states = [s for s in states if s.info.model_id not in banned]
        if task_risk_level == "medium":
            allowed = [s for s in states if s.info.risk_level != "high"]
            states = allowed or states
        elif task_risk_level == "high":
            allowed = [s for s in states if s.info.risk_level == "low"]
            states = allowed or states
        return states

    def select(
        self,
        rng: np.random.Generator | random.Random,
        *,
        task_risk_level: str = "low",
        candidate_model_ids: Sequence[str] | None = None,
        now: float | None = None,
        exploration_rate: float | None = None,
    ) -> Selection:
        """Choose a path for one decision and advance the decision clock.

        ``rng`` is a numpy ``Generator`` (one vectorised draw for all paths: the cheapest for
        many decisions in a tight loop, as in the benchmarks) or a ``random.Random`` (one
        scalar draw per path: far cheaper for a single decision made after the process has
        waited on the network, where numpy's array set-up costs hundreds of microseconds
        on a cold cache; what :class:`~kalibr_core.Intelligence` uses). Both draw from the
        same Beta posteriors. ``exploration_rate`` overrides the configured rate for this
        decision only.

        A decision drawn ahead by :meth:`draw_ahead` for the same arguments is taken instead
        of a new draw when nothing this router holds has changed since: it is the decision
        this call would have drawn, from the same posteriors.

        Raises:
            NoPathAvailableError: no enabled path matches (none registered, all disabled, or
                none among ``candidate_model_ids``).
        """
        candidates = None if candidate_model_ids is None else tuple(candidate_model_ids)
        ahead, self._ahead = self._ahead, None
        if (
            ahead is not None
            and ahead.version == self._version
            and ahead.request == (task_risk_level, candidates, exploration_rate)
            and (now is None or ahead.drawn_at is None or abs(now - ahead.drawn_at) <= _AHEAD_S)
        ):
            self.tick += 1
            self._version += 1
            self.paths[ahead.selection.path_id].pulls += 1
            return ahead.selection
        states = self.eligible(task_risk_level, candidates)
        if not states:
            raise NoPathAvailableError(
                "no enabled path is available"
                + (f" among models {list(candidates)}" if candidates else "")
            )
        self.tick += 1
        self._version += 1
        may_explore = self._may_explore(task_risk_level)
        if may_explore:
            due = self._due_probe(states, now, self.tick)
            if due is not None:
                probe, demoted = due
                if demoted:
                    probe.schedule_probe(self.tick)
                else:
                    probe.last_probe_at = now
                probe.pulls += 1
                return self._selection(probe, "exploration", True, None, None)
        state, selection = self._draw(rng, states, may_explore, exploration_rate)
        state.pulls += 1
        return selection

    def draw_ahead(
        self,
        rng: np.random.Generator | random.Random,
        *,
        task_risk_level: str = "low",
        candidate_model_ids: Sequence[str] | None = None,
        now: float | None = None,
        exploration_rate: float | None = None,
    ) -> bool:
        """Draw the next decision for these arguments now, for :meth:`select` to take later.

        For a caller with idle time before a decision (a background thread while the
        decision-maker waits on the network): the draw moves off the decision's path. It
        changes nothing that a decision changes (the clock, the path's pulls) until it is
        taken, and it is dropped as soon as anything it was drawn from changes (an outcome,
        a path, the settings, another decision) or after a second. A decision due
        to probe a path is never drawn ahead.

        Returns:
            True if a decision is now waiting (drawn here or earlier), False if none can be.
        """
        candidates = None if candidate_model_ids is None else tuple(candidate_model_ids)
        request = (task_risk_level, candidates, exploration_rate)
        ahead = self._ahead
        if ahead is not None and ahead.version == self._version and ahead.request == request:
            return True
        states = self.eligible(task_risk_level, candidates)
        if not states:
            return False
        may_explore = self._may_explore(task_risk_level)
        if may_explore and self._due_probe(states, now, self.tick + 1) is not None:
            return False
        _, selection = self._draw(rng, states, may_explore, exploration_rate)
        self._ahead = _Ahead(request, self._version, now, selection)
        return True

    def _may_explore(self, task_risk_level: str) -> bool:
        return task_risk_level != "high" or self.config.exploration_on_high_risk

    def _draw(
        self,
        rng: np.random.Generator | random.Random,
        states: list[PathState],
        may_explore: bool,
        exploration_rate: float | None,
    ) -> tuple[PathState, Selection]:
        """One Thompson-sampling draw over ``states`` (no probe); changes nothing."""
        active = [s for s in states if not s.demoted] or states
        if self._tie_dirty:
            self._refresh_tie_set()
        k = len(active)
        alphas = [s.eff_successes + 1.0 for s in active]
        betas = [s.eff_failures + 1.0 for s in active]
        means = [a / (a + b) for a, b in zip(alphas, betas, strict=True)]
        best = max(range(k), key=means.__getitem__)
        mapping = self._tie_mapping(active, best)
        if exploration_rate is None:
            exploration_rate = self.config.exploration_rate
        rate = (exploration_rate or 0.0) if may_explore else 0.0
        uniform = False
        if k == 1:
            index, exploration = 0, False
        elif rate > 0.0 and rng.random() < rate:
            index = rng.randrange(k) if isinstance(rng, random.Random) else int(rng.integers(k))
            exploration, uniform = True, True
        elif may_explore:
            if isinstance(rng, random.Random) and k < _NUMPY_DRAW_FROM:
                draw = rng.betavariate
                theta = [draw(alphas[i], betas[i]) for i in range(k)]
            else:
                # Beta(a, b) draws as G(a) / (G(a) + G(b)) from one gamma call: the same
                # distribution as ``rng.beta``, with a third of its per-call overhead.
                source = rng if isinstance(rng, np.random.Generator) else self._numpy_rng(rng)
                gammas = source.standard_gamma(alphas + betas).tolist()
                theta = [gammas[i] / (gammas[i] + gammas[i + k]) for i in range(k)]
            winner = max(range(k), key=theta.__getitem__)
            index = winner
            if mapping is not None:
                # The cheaper tie member replaces the winner unless this draw says the winner
                # is more than the margin better: the costlier paths keep being verified.
                target = mapping[winner]
                if theta[winner] - theta[target] <= self.tuning.tie_margin:
                    index = target
            exploration = index != best and not active[index].in_tie_set
        else:
            index = mapping[best] if mapping is not None else best
            exploration = False
        state = active[index]
        reason = self._reason(state, active[best], k == 1)
        if exploration and (uniform or reason != "fallback"):
            # While learning, a posterior draw is a fallback whichever path it favours; the
            # configured uniform exploration is always exploration.
            reason = "exploration"
        inputs = PropensityInputs(
            tuple(alphas),
            tuple(betas),
            tuple(mapping or range(k)),
            rate,
            index,
            may_explore,
            self.tuning.tie_margin,
        )
        runner_up = max((means[i] for i in range(k) if i != index), default=None)
        return state, self._selection(state, reason, exploration, inputs, runner_up)

    def _numpy_rng(self, rng: random.Random) -> np.random.Generator:
        """The numpy generator that draws for ``rng`` (seeded from it: still reproducible)."""
        if self._numpy_source is not rng or self._numpy is None:
            self._numpy_source = rng
            self._numpy = np.random.default_rng(rng.getrandbits(64))
        return self._numpy

    def _reason(self, state: PathState, best: PathState, single: bool) -> Reason:
        if state.eff_count < self.config.min_samples_before_exploit or (
            best.eff_count < self.config.min_samples_before_exploit
        ):
            return "fallback"
        if state is not best and not single:
            return "cost_optimized"
        return "optimal"

    def _selection(
        self,
        state: PathState,
        reason: Reason,
        exploration: bool,
        inputs: PropensityInputs | None,
        runner_up: float | None,
    ) -> Selection:
        learning = min(1.0, state.eff_count / self.config.min_samples_before_exploit)
        mean = state.mean
        if runner_up is None:
            lead = 1.0
        else:
            # Normal approximation of P(chosen beats the strongest competitor).
            se = math.sqrt(state.std_error() ** 2 + runner_up * (1.0 - runner_up) / 50.0)
            lead = 0.5 * (1.0 + math.erf((mean - runner_up) / (se * math.sqrt(2.0))))
        return Selection(
            path_id=state.info.path_id,
            reason=reason,
            exploration=exploration,
            confidence=round(lead * learning, 4),
            success_rate=round(mean, 4),
            sample_count=state.eff_count,
            inputs=inputs,
        )

    def _due_probe(
        self, states: list[PathState], now: float | None, tick: int
    ) -> tuple[PathState, bool] | None:
        """The path to probe at this decision (clock ``tick``), if any; changes nothing.

        Returns:
            The path, and True for a demoted path's scheduled probe (False: a stale path's).
        """
        stale_after = self.config.staleness_days * _DAY
        for state in states:
            if state.demoted and tick >= state.next_probe_tick:
                return state, True
            if (
                now is not None
                and state.last_outcome_at is not None
                and now - state.last_outcome_at > stale_after
                and (state.last_probe_at is None or now - state.last_probe_at > stale_after)
            ):
                return state, False
        return None

    # -- cost tie-break ------------------------------------------------------------------------
    def _refresh_tie_set(self) -> None:
        """Update tie-set membership with hysteresis (called lazily after new outcomes)."""
        t = self.tuning
        minimum = max(self.config.min_samples_before_exploit, t.tie_min_samples)
        ready = []
        for s in self.paths.values():
            if s.info.enabled and not s.demoted and s.eff_count >= minimum:
                ready.append(s)
            else:
                s.in_tie_set = False
        self._tie_dirty = False
        if len(ready) < 2:
            for s in ready:
                s.in_tie_set = False
            return
        best = max(ready, key=lambda s: s.mean)
        best_se2 = best.std_error() ** 2
        best.in_tie_set = False
        for s in ready:
            if s is best:
                continue
            gap = best.mean - s.mean
            se = math.sqrt(best_se2 + s.std_error() ** 2)
            if s.in_tie_set:
                if gap + t.tie_exit_z * se > t.tie_margin:
                    s.in_tie_set = False
            elif gap + t.tie_enter_z * se <= t.tie_margin:
                s.in_tie_set = True

    def _tie_mapping(self, active: list[PathState], best: int) -> list[int] | None:
        """Map each sampled winner to the path actually used (None: identity)."""
        members = [i for i, s in enumerate(active) if s.in_tie_set]
        if not members:
            return None
        group = [best, *members]
        target = min(group, key=lambda i: self._cost_key(active[i], i == best))
        mapping = list(range(len(active)))
        for i in group:
            mapping[i] = target
        return mapping

    @staticmethod
    def _cost_key(state: PathState, is_best: bool) -> tuple[float, float, int]:
        cost = state.avg_cost
        latency = state.avg_latency
        return (
            cost if cost is not None else math.inf,
            latency if latency is not None else math.inf,
            0 if is_best else 1,
        )

    # -- deterministic views -------------------------------------------------------------------
    def ranking(
        self,
        states: Iterable[PathState] | None = None,
        *,
        max_cost_usd: float | None = None,
        max_latency_ms: float | None = None,
        min_quality: float | None = None,
    ) -> list[RankedPath]:
        """Paths best first: by success rate, cost breaking ties within the tie set.

        Paths with outcomes rank before paths without. Each entry says whether it meets the
        constraints and, if not, which ones it misses.
        """
        if self._tie_dirty:
            self._refresh_tie_set()
        pool = list(states if states is not None else self.paths.values())
        ordered = sorted(pool, key=lambda s: (s.eff_count == 0, -s.mean))
        if ordered and any(s.in_tie_set for s in ordered):
            head = [ordered[0], *[s for s in ordered[1:] if s.in_tie_set]]
            head.sort(key=lambda s: self._cost_key(s, s is ordered[0]))
            ordered = head + [s for s in ordered if s not in head]
        ranked = []
        for s in ordered:
            unmet: list[str] = []
            cost, latency = s.avg_cost, s.avg_latency
            if max_cost_usd is not None and (cost is None or cost > max_cost_usd):
                unmet.append("max_cost_usd")
            if max_latency_ms is not None and (latency is None or latency > max_latency_ms):
                unmet.append("max_latency_ms")
            rate = s.success_rate
            if min_quality is not None and (rate is None or rate < min_quality):
                unmet.append("min_quality")
            ranked.append(RankedPath(s, not unmet, tuple(unmet)))
        return ranked
