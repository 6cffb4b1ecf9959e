"""The domain vocabulary: goals, paths, outcomes, failure categories, and their validation.

Every public entry point (functional API, Router, HTTP service) validates its input through the
functions here, so the rules and the error messages are the same everywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from kalibr_core._errors import InvalidFailureCategoryError, ValidationError

FAILURE_CATEGORIES: Final[tuple[str, ...]] = (
    "timeout",
    "context_exceeded",
    "tool_error",
    "rate_limited",
    "validation_failed",
    "hallucination_detected",
    "user_unsatisfied",
    "empty_response",
    "malformed_output",
    "auth_error",
    "provider_error",
    "healed",
    "unknown",
)
"""The 13 structured failure categories accepted by report and update calls."""

RiskLevel = Literal["low", "medium", "high"]
RISK_LEVELS: Final[tuple[str, ...]] = ("low", "medium", "high")

_GOAL_RE: Final = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
_TRACE_RE: Final = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
_PATH_KEYS: Final = frozenset(
    {
        "model",
        "model_id",
        "tools",
        "tool_id",
        "params",
        "risk_level",
        "provider",
        "base_url",
        "api_key_env",
        "pricing",
    }
)
DEFAULT_PIPELINE: Final = ""


def validate_goal(goal: object, *, field_name: str = "goal") -> str:
    """Return ``goal`` if it is a valid goal name, else raise ValidationError.

    A goal name is 1-128 characters of letters, digits and ``_ . : -``.
    """
    if not isinstance(goal, str):
        raise ValidationError(
            f"{field_name} must be a string, got {type(goal).__name__}", field=field_name
        )
    if not _GOAL_RE.fullmatch(goal):
        raise ValidationError(
            f"invalid {field_name} {goal!r}: use 1-128 characters of letters, digits and "
            "'_', '.', ':', '-'",
            field=field_name,
        )
    return goal


def validate_pipeline_id(pipeline_id: object) -> str:
    """Normalise an optional pipeline id (None means the goal-wide default scope)."""
    if pipeline_id is None:
        return DEFAULT_PIPELINE
    return validate_goal(pipeline_id, field_name="pipeline_id")


def validate_trace_id(trace_id: object, *, field_name: str = "trace_id") -> str:
    """Return ``trace_id`` if it is a usable trace id (1-128 chars of ``[A-Za-z0-9_.:-]``).

    Also validates other ids of the same shape (``field_name`` names them in the message).
    """
    if not isinstance(trace_id, str) or not _TRACE_RE.fullmatch(trace_id):
        raise ValidationError(
            f"invalid {field_name} {trace_id!r}: use 1-128 characters of letters, digits and "
            "'_', '.', ':', '-'",
            field=field_name,
        )
    return trace_id


class _TraceIds:
    """Trace ids read from the OS for 256 at a time (see :func:`new_trace_id`)."""

    __slots__ = ("ids",)

    def __init__(self) -> None:
        self.ids: Iterator[str] = iter(())

    def read(self) -> str:
        raw = os.urandom(16 * 256).hex()
        ids = [raw[i : i + 32] for i in range(0, len(raw), 32)]
        # Two threads that both ran out each read their own batch: every id is still unique.
        self.ids = iter(ids[1:])
        return ids[0]

    def forget(self) -> None:
        self.ids = iter(())


_TRACE_IDS = _TraceIds()
os.register_at_fork(after_in_child=_TRACE_IDS.forget)


def new_trace_id() -> str:
    """A fresh trace id: 32 lowercase hex characters (128 random bits from the OS).

    The bits come from ``os.urandom`` as in ``uuid4`` (which fixes 6 of them), read for 256
    ids at a time: a decision then costs no system call and no UUID object. Handing out the
    next id is one step of a list iterator, atomic under the interpreter lock, so threads
    never share one; a forked child drops the ids its parent had read.
    """
    try:
        return next(_TRACE_IDS.ids)
    except StopIteration:
        return _TRACE_IDS.read()


def validate_failure_category(category: object) -> str | None:
    """Return the category if valid (None allowed), else raise InvalidFailureCategoryError."""
    if category is None:
        return None
    if not isinstance(category, str) or category not in FAILURE_CATEGORIES:
        raise InvalidFailureCategoryError(
            f"invalid failure_category {category!r}; valid categories: "
            + ", ".join(FAILURE_CATEGORIES),
            field="failure_category",
        )
    return category


def validate_risk_level(level: object, *, field_name: str = "risk_level") -> RiskLevel:
    """Return the risk level if it is one of low, medium, high."""
    if level not in RISK_LEVELS:
        raise ValidationError(
            f"invalid {field_name} {level!r}; use one of: low, medium, high", field=field_name
        )
    return level  # type: ignore[return-value]


def validate_score(score: object) -> float | None:
    """Validate a quality score: a finite number, clamped to [0, 1]. None passes through."""
    if score is None:
        return None
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise ValidationError(
            f"score must be a number between 0 and 1, got {score!r}", field="score"
        )
    value = float(score)
    if math.isnan(value) or math.isinf(value):
        raise ValidationError(f"score must be a finite number, got {score!r}", field="score")
    return min(1.0, max(0.0, value))


def validate_nonnegative(value: object, field_name: str) -> float | None:
    """Validate an optional non-negative finite number (cost, latency)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"{field_name} must be a number, got {value!r}", field=field_name)
    result = float(value)
    if math.isnan(result) or math.isinf(result) or result < 0:
        raise ValidationError(
            f"{field_name} must be a finite number >= 0, got {value!r}", field=field_name
        )
    return result


def validate_count(value: object, field_name: str) -> int | None:
    """Validate an optional non-negative integer (token counts)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(
            f"{field_name} must be an integer >= 0, got {value!r}", field=field_name
        )
    return value


def validate_mapping(value: object, field_name: str) -> dict[str, Any] | None:
    """Validate an optional JSON-serialisable mapping with string keys."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError(
            f"{field_name} must be a dict, got {type(value).__name__}", field=field_name
        )
    result = dict(value)
    bad_keys = [key for key in result if not isinstance(key, str)]
    if bad_keys:
        # json.dumps would silently turn 1 into "1": the stored dict would differ from this one.
        raise ValidationError(
            f"{field_name} keys must be strings, got {bad_keys[0]!r}", field=field_name
        )
    try:
        json.dumps(result, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"{field_name} must be JSON-serialisable with string keys: {exc}", field=field_name
        ) from exc
    return result


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _normalise_tools(tools: object) -> tuple[str, ...]:
    if tools is None:
        return ()
    if isinstance(tools, str):
        items: Sequence[object] = [tools]
    elif isinstance(tools, list | tuple):
        items = tools
    else:
        raise ValidationError(
            f"tools must be a string or a list of strings, got {type(tools).__name__}",
            field="tools",
        )
    names: list[str] = []
    for item in items:
        if isinstance(item, Mapping):
            # An OpenAI tool definition: identified by its function name.
            function = item.get("function")
            name = function.get("name") if isinstance(function, Mapping) else item.get("name")
        else:
            name = item
        if not isinstance(name, str) or not name.strip():
            raise ValidationError(
                f"each tool must be a non-empty string (or an OpenAI tool dict), got {item!r}",
                field="tools",
            )
        names.append(name.strip())
    return tuple(sorted(set(names)))


@dataclass(frozen=True, slots=True)
class PathSpec:
    """A normalised execution path: a model, optional tools and params, for one goal.

    The ``path_id`` is derived from the goal and the normalised content (model, sorted tool
    names, canonical params), so the same path gets the same id in every process.

    Attributes:
        goal: The goal this path serves.
        model_id: The model string (for example ``"gpt-4o"``).
        tools: Tool names, sorted and de-duplicated.
        params: Execution parameters (for example ``{"temperature": 0.3}``).
        risk_level: ``"low"``, ``"medium"`` or ``"high"``.
        extra: Execution hints that do not change the path's identity (provider, base_url,
            pricing, OpenAI tool definitions).
    """

    goal: str
    model_id: str
    tools: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    risk_level: RiskLevel = "low"
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def tool_id(self) -> str | None:
        """The tools joined by commas, or None when the path has no tools."""
        return ",".join(self.tools) if self.tools else None

    @property
    def path_id(self) -> str:
        """The canonical, stable id of this path."""
        payload = _canonical_json(
            {
                "goal": self.goal,
                "model": self.model_id,
                "tools": list(self.tools),
                "params": dict(self.params),
            }
        )
        return "path_" + hashlib.sha256(payload.encode()).hexdigest()[:20]

    def matches(
        self, model_id: str | None, tool_id: str | None, params: Mapping[str, Any] | None
    ) -> bool:
        """Whether an outcome reported with these attributes belongs to this path."""
        if model_id is not None and model_id != self.model_id:
            return False
        if tool_id is not None and _normalise_tools(tool_id.split(",")) != self.tools:
            return False
        return params is None or _canonical_json(dict(params)) == _canonical_json(dict(self.params))


def normalise_path(goal: str, path: object, *, risk_level: object = None) -> PathSpec:
    """Turn a user path (a model string or a dict) into a validated PathSpec.

    Args:
        goal: The (already validated) goal.
        path: ``"gpt-4o"`` or ``{"model": ..., "tools": ..., "params": ...}``; ``model_id`` and
            ``tool_id`` are accepted as aliases. ``provider``, ``base_url``, ``api_key_env`` and
            ``pricing`` are execution hints kept in ``extra``.
        risk_level: Overrides the dict's ``risk_level``.

    Raises:
        ValidationError: the path is malformed; the message says what is wrong.
    """
    if isinstance(path, str):
        spec: Mapping[str, Any] = {"model": path}
    elif isinstance(path, Mapping):
        spec = path
    else:
        raise ValidationError(
            f"a path must be a model string or a dict with 'model', got {type(path).__name__}",
            field="paths",
        )
    unknown = set(spec) - _PATH_KEYS
    if unknown:
        raise ValidationError(
            f"unknown path keys {sorted(unknown)}; accepted: {sorted(_PATH_KEYS)}", field="paths"
        )
    if "model" in spec and "model_id" in spec and spec["model"] != spec["model_id"]:
        raise ValidationError("give either 'model' or 'model_id', not both", field="paths")
    model = spec.get("model", spec.get("model_id"))
    if not isinstance(model, str) or not model.strip() or len(model) > 256:
        raise ValidationError(
            f"a path needs a non-empty model string (at most 256 characters), got {model!r}",
            field="model_id",
        )
    if "tools" in spec and "tool_id" in spec and spec["tool_id"] is not None:
        raise ValidationError("give either 'tools' or 'tool_id', not both", field="paths")
    raw_tools = spec.get("tools", spec.get("tool_id"))
    tools = _normalise_tools(raw_tools)
    params = validate_mapping(spec.get("params"), "params") or {}
    level = validate_risk_level(
        risk_level if risk_level is not None else spec.get("risk_level", "low")
    )
    extra = {k: spec[k] for k in ("provider", "base_url", "api_key_env", "pricing") if k in spec}
    if isinstance(raw_tools, list | tuple) and any(isinstance(t, Mapping) for t in raw_tools):
        extra["tool_definitions"] = [t for t in raw_tools if isinstance(t, Mapping)]
    return PathSpec(
        goal=goal,
        model_id=model.strip(),
        tools=tools,
        params=params,
        risk_level=level,
        extra=extra,
    )
