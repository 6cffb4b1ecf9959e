"""Reporting outcomes by trace id, and the failure category of a LangChain error.

The callback handler and the output-parser wrapper hold messages, not Routers: each message
carries the trace of the routed call that made it (``response_metadata["kalibr_trace_id"]``)
and :func:`kalibr_core.router.router_for_trace` finds the Router that issued it. Calls that
were already reported (by ``success_when``, as provider failures, or by another reporter)
keep their outcome: an adapter cannot know which, so it never warns about them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kalibr_core import KalibrError, ProviderError
from kalibr_core.router import Router, router_for_trace
from langchain_core.exceptions import OutputParserException
from langchain_core.tools import ToolException
from pydantic import ValidationError as PydanticValidationError

logger = logging.getLogger("langchain_kalibr")

_REASON_LIMIT = 1000


def report_traces(
    trace_ids: Iterable[str],
    success: bool,
    *,
    failure_category: str | None = None,
    reason: str | None = None,
    score: float | None = None,
) -> int:
    """Report routed calls as one unit of work: one outcome per Router and path used.

    Unknown trace ids (not issued in this process, or evicted) are skipped with a log line;
    a reporting error is logged, never raised into the user's chain.

    Returns:
        How many of the trace ids belong to a live Router (and were reported or covered,
        unless already reported).
    """
    groups: dict[int, tuple[Router, list[str]]] = {}
    for trace_id in dict.fromkeys(trace_ids):
        router = router_for_trace(trace_id)
        if router is None:
            logger.warning("no Router of this process issued trace %s; not reported", trace_id)
            continue
        groups.setdefault(id(router), (router, []))[1].append(trace_id)
    if reason is not None and len(reason) > _REASON_LIMIT:
        reason = reason[: _REASON_LIMIT - 3] + "..."
    for router, ids in groups.values():
        try:
            router.report(
                success,
                reason=reason,
                score=score,
                failure_category=None if success else failure_category,
                trace_ids=ids,
            )
        except KalibrError:
            logger.exception("reporting the calls %s of goal %s failed", ids, router.goal)
    return sum(len(ids) for _, ids in groups.values())


def failure_category(error: BaseException) -> str:
    """The FAILURE_CATEGORIES value for an error that ended a run or a parse.

    A parser that cannot read the answer is ``malformed_output``; a schema or a validator
    that rejects it is ``validation_failed``; a tool that raised is ``tool_error``; a
    provider failure keeps its own category (``timeout``, ``rate_limited``...).
    """
    if isinstance(error, ProviderError):
        return error.failure_category
    if isinstance(error, PydanticValidationError) or (
        isinstance(error, OutputParserException)
        and isinstance(error.__cause__, PydanticValidationError)
    ):
        return "validation_failed"
    if isinstance(error, OutputParserException):
        return "malformed_output"
    if isinstance(error, ToolException):
        return "tool_error"
    if isinstance(error, TimeoutError):
        return "timeout"
    return "unknown"


def failure_reason(error: BaseException) -> str:
    """A short reason for a failure: the error's type and message."""
    return f"{type(error).__name__}: {error}"[:_REASON_LIMIT]
