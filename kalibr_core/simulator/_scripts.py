"""Model behaviour scripts: how often a simulated model is right, slow or failing.

A :class:`ModelScript` describes one simulated model. Every probability in it is a
:class:`Schedule`, a function of the model's request number ``n`` (0-based, counted per model),
so a script can degrade suddenly (``Schedule.step``), drift (``Schedule.linear``) or degrade and
recover (``Schedule.piecewise``). :func:`draw_decision` turns a script, ``n`` and a seeded random
generator into the fate of one request; the server then renders that fate in the wire format of
the provider that was called.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final, Literal

from kalibr_core._errors import ValidationError

__all__ = [
    "ERROR_KINDS",
    "Decision",
    "ErrorKind",
    "ModelScript",
    "Schedule",
    "draw_decision",
    "script_for_unknown_model",
]

ErrorKind = Literal[
    "rate_limit", "overloaded", "server_error", "timeout", "malformed_json", "empty"
]

#: The injectable failure kinds, in the order they are drawn.
ERROR_KINDS: Final[tuple[ErrorKind, ...]] = (
    "rate_limit",
    "overloaded",
    "server_error",
    "timeout",
    "malformed_json",
    "empty",
)

_KINDS: Final[tuple[str, ...]] = ("constant", "step", "linear", "piecewise")
_EPSILON: Final[float] = 1e-9


def _check_probability(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{what} must be a number between 0 and 1, got {value!r}", field=what)
    result = float(value)
    if math.isnan(result) or not 0.0 <= result <= 1.0:
        raise ValidationError(f"{what} must be between 0 and 1, got {value!r}", field=what)
    return result


def _check_index(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(
            f"{what} must be a non-negative integer request number, got {value!r}", field=what
        )
    return value


@dataclass(frozen=True)
class Schedule:
    """A probability as a function of the model's request number ``n`` (0-based).

    Build one with the class methods; the constructor is the serialised form.

    Attributes:
        kind: ``"constant"``, ``"step"``, ``"linear"`` or ``"piecewise"``.
        points: The breakpoints ``(n, p)``; their meaning depends on ``kind``.
    """

    kind: str
    points: tuple[tuple[int, float], ...]

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValidationError(
                f"schedule kind must be one of {', '.join(_KINDS)}, got {self.kind!r}",
                field="kind",
            )
        if not self.points:
            raise ValidationError("a schedule needs at least one point", field="points")
        previous = -1
        for n, p in self.points:
            _check_index(n, "schedule point n")
            _check_probability(p, "schedule point probability")
            if n <= previous:
                raise ValidationError(
                    f"schedule points must have strictly increasing n, got {list(self.points)}",
                    field="points",
                )
            previous = n
        expected = {"constant": 1, "step": 2, "linear": 2}.get(self.kind)
        if expected is not None and len(self.points) != expected:
            raise ValidationError(
                f"a {self.kind} schedule has exactly {expected} point(s), got {len(self.points)}",
                field="points",
            )

    @classmethod
    def constant(cls, p: float) -> Schedule:
        """The same probability for every request.

        Args:
            p: The probability, between 0 and 1.
        """
        return cls("constant", ((0, _check_probability(p, "p")),))

    @classmethod
    def step(cls, at: int, before: float, after: float) -> Schedule:
        """A sudden change: ``before`` for requests ``n < at``, ``after`` from request ``at`` on.

        Args:
            at: The first request number with the new probability (at least 1).
            before: The probability before the change.
            after: The probability from the change on.
        """
        at = _check_index(at, "at")
        if at == 0:
            raise ValidationError("step(at=0) never uses 'before'; use constant(after)", field="at")
        return cls(
            "step",
            ((0, _check_probability(before, "before")), (at, _check_probability(after, "after"))),
        )

    @classmethod
    def linear(cls, start: float, end: float, from_: int, to: int) -> Schedule:
        """A gradual drift from ``start`` (up to request ``from_``) to ``end`` (from ``to`` on).

        Args:
            start: The probability up to request ``from_``.
            end: The probability from request ``to`` on.
            from_: The request number where the drift begins.
            to: The request number where the drift ends (greater than ``from_``).
        """
        from_ = _check_index(from_, "from_")
        to = _check_index(to, "to")
        if to <= from_:
            raise ValidationError(
                f"linear() needs to > from_, got from_={from_}, to={to}", field="to"
            )
        return cls(
            "linear",
            ((from_, _check_probability(start, "start")), (to, _check_probability(end, "end"))),
        )

    @classmethod
    def piecewise(cls, points: Iterable[tuple[int, float]]) -> Schedule:
        """A step function: ``p_i`` holds from request ``n_i`` until the next point.

        Requests before the first point use the first probability. Example: degrade at request
        50, recover at 100: ``Schedule.piecewise([(0, 0.95), (50, 0.3), (100, 0.9)])``.

        Args:
            points: ``(n, p)`` pairs with strictly increasing ``n``.
        """
        pairs: list[tuple[int, float]] = []
        for point in points:
            if not isinstance(point, Sequence) or len(point) != 2:
                raise ValidationError(
                    f"piecewise() takes (n, p) pairs, got {point!r}", field="points"
                )
            pairs.append(
                (_check_index(point[0], "piecewise n"), _check_probability(point[1], "piecewise p"))
            )
        return cls("piecewise", tuple(pairs))

    def value(self, n: int) -> float:
        """The probability for request number ``n``.

        Args:
            n: The 0-based request number of the model.
        """
        if self.kind == "constant":
            return self.points[0][1]
        if self.kind == "linear":
            (n0, p0), (n1, p1) = self.points
            if n <= n0:
                return p0
            if n >= n1:
                return p1
            return p0 + (p1 - p0) * (n - n0) / (n1 - n0)
        result = self.points[0][1]
        for start, p in self.points:
            if n >= start:
                result = p
            else:
                break
        return result

    __call__ = value

    def breakpoints(self) -> tuple[int, ...]:
        """The request numbers where the schedule changes (its maximum is at one of them)."""
        return (0, *(n for n, _ in self.points))

    def to_json(self) -> float | dict[str, Any]:
        """The JSON form accepted by :meth:`from_json` (a bare number for a constant)."""
        if self.kind == "constant":
            return self.points[0][1]
        if self.kind == "step":
            (_, before), (at, after) = self.points
            return {"step": {"at": at, "before": before, "after": after}}
        if self.kind == "linear":
            (from_, start), (to, end) = self.points
            return {"linear": {"start": start, "end": end, "from": from_, "to": to}}
        return {"piecewise": [[n, p] for n, p in self.points]}

    @classmethod
    def from_json(cls, data: object) -> Schedule:
        """Parse a schedule from its JSON form.

        Accepted forms: a number (constant), ``{"constant": p}``,
        ``{"step": {"at", "before", "after"}}``, ``{"linear": {"start", "end", "from", "to"}}``,
        ``{"piecewise": [[n, p], ...]}``.

        Args:
            data: The decoded JSON value.
        """
        if isinstance(data, Schedule):
            return data
        if isinstance(data, int | float) and not isinstance(data, bool):
            return cls.constant(float(data))
        if isinstance(data, Mapping) and len(data) == 1:
            ((kind, args),) = data.items()
            try:
                if kind == "constant":
                    return cls.constant(args)
                if kind == "step" and isinstance(args, Mapping):
                    return cls.step(at=args["at"], before=args["before"], after=args["after"])
                if kind == "linear" and isinstance(args, Mapping):
                    return cls.linear(
                        start=args["start"],
                        end=args["end"],
                        from_=args.get("from", args.get("from_")),
                        to=args["to"],
                    )
                if kind == "piecewise" and isinstance(args, list):
                    return cls.piecewise(tuple(p) for p in args)
            except KeyError as exc:
                raise ValidationError(
                    f"schedule {kind!r} is missing the key {exc.args[0]!r}", field="schedule"
                ) from exc
        raise ValidationError(
            "a schedule is a number or one of {'constant': p}, {'step': {...}}, "
            f"{{'linear': {{...}}}}, {{'piecewise': [[n, p], ...]}}; got {data!r}",
            field="schedule",
        )


def _as_schedule(value: Schedule | float, what: str) -> Schedule:
    if isinstance(value, Schedule):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(
            f"{what} must be a probability or a Schedule, got {value!r}", field=what
        )
    return Schedule.constant(_check_probability(value, what))


@dataclass(frozen=True)
class ModelScript:
    """How one simulated model behaves.

    Probabilities accept a number or a :class:`Schedule` (a function of the request number);
    numbers are turned into constant schedules. At any request the error probabilities must add
    up to at most 1; they are drawn in the order of :data:`ERROR_KINDS`, then accuracy decides
    whether a delivered answer is correct.

    Attributes:
        accuracy: Probability that a delivered answer is correct.
        latency_ms: Mean added latency per request, in milliseconds.
        jitter_ms: Half-width of the uniform jitter around ``latency_ms``.
        rate_limit: Probability of HTTP 429 with the provider's error JSON and ``retry-after``.
        overloaded: Probability of the provider's overload error (Anthropic 529, others 503).
        server_error: Probability of HTTP 500.
        timeout: Probability that the server sleeps ``timeout_s`` before answering.
        malformed_json: Probability of HTTP 200 with a body that is not valid JSON.
        empty: Probability of a valid response whose content is empty.
        timeout_s: How long an injected timeout sleeps (set it above the client's timeout).
        retry_after_s: The ``retry-after`` value sent with rate-limit errors, in seconds.
        context_window: Maximum prompt size in (estimated) tokens; larger prompts get the
            provider's context-length error. ``None`` means unlimited.
    """

    accuracy: Schedule | float = 1.0
    latency_ms: float = 1.0
    jitter_ms: float = 0.0
    rate_limit: Schedule | float = 0.0
    overloaded: Schedule | float = 0.0
    server_error: Schedule | float = 0.0
    timeout: Schedule | float = 0.0
    malformed_json: Schedule | float = 0.0
    empty: Schedule | float = 0.0
    timeout_s: float = 0.25
    retry_after_s: float = 1.0
    context_window: int | None = None
    _schedules: dict[str, Schedule] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        for name in ("accuracy", *ERROR_KINDS):
            schedule = _as_schedule(getattr(self, name), name)
            object.__setattr__(self, name, schedule)
            self._schedules[name] = schedule
        for name in ("latency_ms", "jitter_ms", "timeout_s", "retry_after_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValidationError(
                    f"{name} must be a non-negative number, got {value!r}", field=name
                )
            if math.isnan(value) or math.isinf(value):
                raise ValidationError(f"{name} must be finite, got {value!r}", field=name)
        if self.jitter_ms > self.latency_ms:
            raise ValidationError(
                f"jitter_ms ({self.jitter_ms}) cannot exceed latency_ms ({self.latency_ms})",
                field="jitter_ms",
            )
        if self.context_window is not None and (
            isinstance(self.context_window, bool)
            or not isinstance(self.context_window, int)
            or self.context_window < 1
        ):
            raise ValidationError(
                f"context_window must be a positive integer or None, got {self.context_window!r}",
                field="context_window",
            )
        checkpoints = sorted({n for kind in ERROR_KINDS for n in self.schedule(kind).breakpoints()})
        for n in checkpoints:
            total = sum(self.schedule(kind).value(n) for kind in ERROR_KINDS)
            if total > 1.0 + _EPSILON:
                raise ValidationError(
                    f"the error probabilities add up to {total:.3f} > 1 at request {n}; "
                    f"lower some of {', '.join(ERROR_KINDS)}",
                    field="errors",
                )

    def schedule(self, name: str) -> Schedule:
        """The schedule of ``accuracy`` or of an error kind from :data:`ERROR_KINDS`.

        Args:
            name: ``"accuracy"`` or an error kind.
        """
        try:
            return self._schedules[name]
        except KeyError:
            raise ValidationError(
                f"unknown schedule {name!r}; expected accuracy or one of {', '.join(ERROR_KINDS)}",
                field="name",
            ) from None

    def to_json(self) -> dict[str, Any]:
        """The JSON form accepted by :meth:`from_json`."""
        result: dict[str, Any] = {}
        for item in fields(self):
            if not item.init:
                continue
            value = getattr(self, item.name)
            result[item.name] = value.to_json() if isinstance(value, Schedule) else value
        return result

    @classmethod
    def from_json(cls, data: object) -> ModelScript:
        """Build a script from a JSON object (keys are the attribute names).

        Args:
            data: The decoded JSON object; probabilities may use any :meth:`Schedule.from_json`
                form.
        """
        if not isinstance(data, Mapping):
            raise ValidationError(f"a model script is a JSON object, got {data!r}", field="script")
        known = {item.name for item in fields(cls) if item.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValidationError(
                f"unknown model script key(s) {unknown}; known keys: {sorted(known)}",
                field="script",
            )
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("accuracy", *ERROR_KINDS):
                kwargs[key] = Schedule.from_json(value)
            else:
                kwargs[key] = value
        return cls(**kwargs)


_CONTEXT_SUFFIX: Final[re.Pattern[str]] = re.compile(r"-ctx(\d+)$")


def script_for_unknown_model(model: str, default: ModelScript) -> ModelScript:
    """The script of a model that was not configured.

    A name ending in ``-ctx<N>`` (for example ``tiny-ctx64``) gets ``default`` with a context
    window of ``N`` tokens, which makes context-overflow errors easy to provoke.

    Args:
        model: The model name from the request.
        default: The simulator's default script.
    """
    match = _CONTEXT_SUFFIX.search(model)
    if match is None:
        return default
    return dataclasses.replace(default, context_window=max(1, int(match.group(1))))


@dataclass(frozen=True)
class Decision:
    """The fate of one request to one model.

    Attributes:
        n: The model's 0-based request number.
        error: The injected failure, or ``None`` for a normal answer.
        correct: Whether the answer (when one is delivered) is correct.
        latency_s: The added latency, in seconds.
        content_seed: Seed for everything random in the answer's content.
    """

    n: int
    error: ErrorKind | None
    correct: bool
    latency_s: float
    content_seed: int


def draw_decision(script: ModelScript, n: int, rng: random.Random) -> Decision:
    """Draw the fate of request ``n`` from ``script``.

    Always consumes the same amount of randomness, so the sequence of decisions of a model
    depends only on the seed and on the order of its requests.

    Args:
        script: The model's script.
        n: The model's 0-based request number.
        rng: The model's random generator.
    """
    u_error, u_correct, u_latency = rng.random(), rng.random(), rng.random()
    content_seed = rng.getrandbits(63)
    error: ErrorKind | None = None
    threshold = 0.0
    for kind in ERROR_KINDS:
        threshold += script.schedule(kind).value(n)
        if u_error < threshold:
            error = kind
            break
    correct = u_correct < script.schedule("accuracy").value(n)
    latency_ms = script.latency_ms + script.jitter_ms * (2.0 * u_latency - 1.0)
    return Decision(
        n=n,
        error=error,
        correct=correct,
        latency_s=max(0.0, latency_ms) / 1000.0,
        content_seed=content_seed,
    )
