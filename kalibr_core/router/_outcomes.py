"""How calls become outcomes: failure categories of provider errors, and per-call traces."""

from __future__ import annotations

import contextvars
import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kalibr_core._domain import PathSpec
from kalibr_core._errors import (
    AuthenticationError,
    ConfigurationError,
    ContextExceededError,
    KalibrError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
)

logger = logging.getLogger("kalibr_core.router")

_CONTEXT_MARKERS = (
    "context length",
    "context_length",
    "maximum context",
    "too long",
    "context window",
    "too many tokens",
    "prompt is too long",
    "`inputs` must have less than",  # Hugging Face TGI (HTTP 422)
    "`inputs` tokens + `max_new_tokens`",
)


def classify_error(exc: BaseException) -> tuple[str, type[ProviderError]]:
    """The FAILURE_CATEGORIES value and kalibr error class for a provider SDK exception.

    Works from the HTTP status and the exception's name, so it covers every SDK.
    """
    if isinstance(exc, ProviderError):
        return exc.failure_category, type(exc)
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    name = type(exc).__name__.lower()
    message = str(exc).lower()
    if "timeout" in name or "timedout" in name or status in (408, 504):
        return "timeout", ProviderTimeoutError
    if status == 429 or "ratelimit" in name:
        return "rate_limited", RateLimitedError
    if status in (401, 403) or "authentication" in name or "permission" in name:
        return "auth_error", AuthenticationError
    if (status in (400, 413, 422) or "badrequest" in name) and any(
        marker in message for marker in _CONTEXT_MARKERS
    ):
        return "context_exceeded", ContextExceededError
    return "provider_error", ProviderError


@dataclass(slots=True)
class Trace:
    """One routed (or forced) call and what has been reported for it."""

    trace_id: str
    path: PathSpec
    path_id: str | None
    reason: str
    provider: str = ""
    cost_usd: float | None = None
    latency_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    reported: bool = False
    outcome: str | None = None
    extra_metadata: dict[str, Any] = field(default_factory=dict)


_BOOK_KEYS = itertools.count()
#: Calls an episode (a thread's or task's calls since its last report) holds at most.
EPISODE_LIMIT = 256


class TraceBook:
    """The traces a Router issued (bounded), and each context's unreported episode.

    The episode of the current thread or asyncio task is kept in a ContextVar, so one Router
    shared by many threads or tasks reports every outcome against the caller's own calls.
    """

    _episodes: contextvars.ContextVar[Mapping[int, tuple[str, ...]]] = contextvars.ContextVar(
        "kalibr_router_episodes"
    )

    def __init__(self, capacity: int = 50_000) -> None:
        self._traces: OrderedDict[str, Trace] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity
        # Not id(self): a new book could reuse a collected one's id and see its episodes.
        self._key = next(_BOOK_KEYS)

    def add(self, trace: Trace) -> None:
        """Remember a new trace and add it to the current context's episode."""
        episodes = self._episodes.get({})
        earlier = episodes.get(self._key, ())
        traces = self._traces
        with self._lock:
            traces[trace.trace_id] = trace
            if len(traces) > self._capacity:
                traces.popitem(last=False)
            # Calls are mostly reported in order (success_when reports each at once): drop
            # the reported ones at the front, so this costs nothing per call; report() skips
            # any other reported call.
            start = 0
            while start < len(earlier):
                first = traces.get(earlier[start])
                if first is not None and not first.reported:
                    break
                start += 1
        # A context that never calls report() keeps its latest EPISODE_LIMIT calls only (the
        # others stay reportable by trace id): an episode costs at most that per call.
        start = max(start, len(earlier) - (EPISODE_LIMIT - 1))
        self._episodes.set({**episodes, self._key: (*earlier[start:], trace.trace_id)})

    def cover_earlier(self, trace: Trace) -> None:
        """Mark this context's unreported earlier calls on the same path as covered."""
        ids = self._episodes.get({}).get(self._key, ())
        if len(ids) < 2:
            return  # only this call (or none): nothing earlier to cover
        with self._lock:
            for trace_id in ids:
                earlier = self._traces.get(trace_id)
                if (
                    earlier is not None
                    and earlier is not trace
                    and not earlier.reported
                    and earlier.path.path_id == trace.path.path_id
                ):
                    earlier.reported = True
                    earlier.outcome = "covered"

    def get(self, trace_id: str) -> Trace | None:
        """A trace this router issued (None if unknown or evicted)."""
        with self._lock:
            return self._traces.get(trace_id)

    def episode(self) -> list[Trace]:
        """The current context's traces since its last report."""
        ids = self._episodes.get({}).get(self._key, ())
        with self._lock:
            return [self._traces[t] for t in ids if t in self._traces]

    def end_episode(self) -> None:
        """Forget the current context's episode (after a report)."""
        episodes = self._episodes.get({})
        if episodes.get(self._key):
            self._episodes.set({**episodes, self._key: ()})

    def has_history(self) -> bool:
        """Whether the current context made any call through this router (reported or not)."""
        return self._key in self._episodes.get({})

    def claim(self, trace: Trace, outcome: str) -> bool:
        """Mark a trace reported; False if it already was (a second report is ignored)."""
        with self._lock:
            if trace.reported:
                return False
            trace.reported = True
            trace.outcome = outcome
            return True


def config_failure(exc: ConfigurationError) -> tuple[str, type[KalibrError]]:
    """Missing keys or unregistered tools: the path cannot run here."""
    text = str(exc).lower()
    category = "tool_error" if "tool" in text and "key" not in text else "auth_error"
    return category, ConfigurationError
