"""Outcomes from where LlamaIndex decides whether a step worked: its events and its evaluators.

:class:`KalibrEventHandler` listens to LlamaIndex's instrumentation. It groups the routed calls
of :class:`~llama_index.llms.kalibr.Kalibr` LLMs by the unit of work that made them:

* a **structured prediction** (``structured_predict``, Pydantic programs, structured LLMs) is
  reported when LlamaIndex finishes it: a success when the output parsed and validated, a
  ``validation_failed`` failure when it raised;
* a **query** (any query engine) is remembered once it ends (a streaming one also while its
  answer is read, since LlamaIndex calls the LLM only then), until an evaluation of its answer
  is reported with :meth:`KalibrEventHandler.report_evaluation` (the evaluator's verdict,
  through :func:`score_from_evaluation`) or :meth:`KalibrEventHandler.report_query`.

A unit's calls get one outcome per path used, through ``Router.report(trace_ids=...)``; calls
already judged (by ``success_when``, or as provider failures) keep their outcome.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from kalibr_core import NotFoundError
from kalibr_core.router import Router
from llama_index.core.base.response.schema import AsyncStreamingResponse, StreamingResponse
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.evaluation import EvaluationResult
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import (
    LLMStructuredPredictEndEvent,
    LLMStructuredPredictStartEvent,
)
from llama_index.core.instrumentation.events.query import QueryEndEvent, QueryStartEvent
from llama_index.core.instrumentation.events.span import SpanDropEvent
from llama_index.core.schema import QueryBundle

from llama_index.llms.kalibr._events import KalibrRoutedEvent

logger = logging.getLogger("llama_index.llms.kalibr")

_MAX_OPEN_UNITS = 64  # nesting deeper than this in one context is a leak, not a pipeline


def score_from_evaluation(
    result: EvaluationResult, *, scale: tuple[float, float] = (0.0, 1.0)
) -> float | None:
    """An evaluator's verdict as a kalibr score in [0, 1].

    The score is ``result.score`` mapped from ``scale`` to [0, 1]; an evaluation with a
    ``passing`` verdict and no score counts 1.0 or 0.0. Faithfulness, relevancy, guideline,
    pairwise, answer and context relevancy evaluators score on [0, 1] already; pass
    ``scale=(1, 5)`` for ``CorrectnessEvaluator``.

    Args:
        result: The evaluator's result.
        scale: The (worst, best) scores of the evaluator.

    Returns:
        The score, or None when the evaluation is invalid or says nothing.

    Raises:
        ValueError: the scale is empty, or the score lies outside it (a scale mistake that
            would otherwise teach the router the opposite of the verdict).

    Example:
        >>> from llama_index.core.evaluation import EvaluationResult
        >>> score_from_evaluation(EvaluationResult(score=4.0, passing=True), scale=(1, 5))
        0.75
    """
    worst, best = float(scale[0]), float(scale[1])
    if not best > worst:
        raise ValueError(f"scale must be (worst, best) with best > worst, got {scale!r}")
    if result.invalid_result:
        return None
    if result.score is None:
        return None if result.passing is None else float(result.passing)
    score = float(result.score)
    if not worst <= score <= best:
        raise ValueError(
            f"evaluation score {score} is outside the scale {scale!r}; pass the evaluator's "
            "scale, e.g. scale=(1, 5) for CorrectnessEvaluator"
        )
    return (score - worst) / (best - worst)


@dataclass(eq=False)
class _Unit:
    """A query or structured prediction, and the routed calls made while it ran."""

    kind: str
    span_id: str | None
    query: str | None = None
    calls: list[tuple[Router, str]] = field(default_factory=list)
    answer: str | None = None
    response: Callable[[], object] | None = None

    def answered(self, response: object) -> None:
        text = getattr(response, "response", None)
        if text is None:
            text = getattr(response, "response_txt", None)
        self.answer = text if isinstance(text, str) else None
        try:
            self.response = weakref.ref(response)
        except TypeError:
            self.response = None


class KalibrEventHandler(BaseEventHandler):
    """Reports the outcomes of routed calls from LlamaIndex's instrumentation events.

    Attach it once to the root dispatcher; it serves every ``Kalibr`` LLM of the process.

    Args:
        structured_outputs: Report structured predictions as they finish (success when the
            output validated, ``validation_failed`` when it raised). Turn off to judge them
            yourself.
        remember: How many finished queries wait for an evaluation (oldest forgotten first).

    Example:
        >>> import llama_index.core.instrumentation as instrument
        >>> handler = KalibrEventHandler()
        >>> instrument.get_dispatcher().add_event_handler(handler)  # doctest: +SKIP
        >>> response = query_engine.query(question)  # doctest: +SKIP
        >>> result = FaithfulnessEvaluator(llm=judge).evaluate_response(
        ...     query=question, response=response)  # doctest: +SKIP
        >>> handler.report_evaluation(result, response=response)  # doctest: +SKIP
    """

    structured_outputs: bool = True
    remember: int = 1000

    _open: contextvars.ContextVar[tuple[_Unit, ...]] = PrivateAttr()
    _finished: OrderedDict[int, _Unit] = PrivateAttr(default_factory=OrderedDict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _ids: Any = PrivateAttr(default_factory=count)

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        self._open = contextvars.ContextVar(f"kalibr_units_{id(self):x}", default=())

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "KalibrEventHandler"

    # -- events --------------------------------------------------------------------------------
    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        """Track units of work and their routed calls; report the ones LlamaIndex judged.

        The dispatcher discards a handler's exceptions, so failures are logged here.
        """
        try:
            self._handle(event)
        except Exception:
            logger.exception("KalibrEventHandler failed on %s", event.class_name())

    def _handle(self, event: BaseEvent) -> None:
        unit: _Unit | None
        if isinstance(event, KalibrRoutedEvent):
            for unit in self._open.get():
                unit.calls.append((event.router, event.trace_id))
        elif isinstance(event, QueryStartEvent):
            self._push(_Unit("query", event.span_id, query=_query_text(event.query)))
        elif isinstance(event, QueryEndEvent):
            unit = self._pop(event.span_id, "query")
            if unit is None:
                return
            streaming = self._follow_stream(unit, event.response)
            if unit.calls or streaming:
                unit.answered(event.response)
                self._remember(unit)
        elif isinstance(event, LLMStructuredPredictStartEvent):
            self._push(_Unit("structured", event.span_id))
        elif isinstance(event, LLMStructuredPredictEndEvent):
            unit = self._pop(event.span_id, "structured")
            if unit is not None and self.structured_outputs:
                _report(unit, success=True)
        elif isinstance(event, SpanDropEvent):
            unit = self._pop(event.span_id, None)
            if unit is not None and unit.kind == "structured" and self.structured_outputs:
                _report(
                    unit,
                    success=False,
                    reason=f"structured output failed: {event.err_str}",
                    failure_category="validation_failed",
                )

    def _push(self, unit: _Unit) -> None:
        units = self._open.get()
        if len(units) >= _MAX_OPEN_UNITS:
            logger.warning("more than %d open LlamaIndex units; forgetting the oldest", len(units))
            units = units[1:]
        self._open.set((*units, unit))

    def _pop(self, span_id: str | None, kind: str | None) -> _Unit | None:
        units = self._open.get()
        for index in range(len(units) - 1, -1, -1):
            unit = units[index]
            if unit.span_id == span_id and (kind is None or unit.kind == kind):
                self._open.set(units[:index] + units[index + 1 :])
                return unit
        return None

    def _follow_stream(self, unit: _Unit, response: object) -> bool:
        """Keep the unit open while a streaming response is read: LlamaIndex calls the LLM
        only then, after the query has ended. Returns whether the response streams."""
        if getattr(response, "response_txt", "") is not None:
            return False
        if isinstance(response, StreamingResponse) and response.response_gen is not None:
            response.response_gen = self._within(unit, response.response_gen)
            return True
        if isinstance(response, AsyncStreamingResponse) and response.response_gen is not None:
            response.response_gen = self._awithin(unit, response.response_gen)
            return True
        return False

    def _within(self, unit: _Unit, tokens: Iterator[str]) -> Generator[str, None, None]:
        try:
            while True:
                token = self._open.set((*self._open.get(), unit))
                try:
                    text = next(tokens)
                except StopIteration:
                    return
                finally:
                    self._open.reset(token)
                yield text
        finally:
            close = getattr(tokens, "close", None)
            if close is not None:
                close()

    async def _awithin(self, unit: _Unit, tokens: AsyncIterator[str]) -> AsyncGenerator[str, None]:
        try:
            while True:
                token = self._open.set((*self._open.get(), unit))
                try:
                    text = await anext(tokens)
                except StopAsyncIteration:
                    return
                finally:
                    self._open.reset(token)
                yield text
        finally:
            aclose = getattr(tokens, "aclose", None)
            if aclose is not None:
                await aclose()

    def _remember(self, unit: _Unit) -> None:
        with self._lock:
            self._finished[next(self._ids)] = unit
            while len(self._finished) > self.remember:
                self._finished.popitem(last=False)

    # -- reporting finished queries ------------------------------------------------------------
    def report_evaluation(
        self,
        result: EvaluationResult,
        *,
        response: object | None = None,
        scale: tuple[float, float] = (0.0, 1.0),
        failure_category: str = "validation_failed",
    ) -> list[str]:
        """Report an evaluator's verdict on a query's answer as the outcome of its routed calls.

        Success is the evaluator's ``passing`` (a score of at least 0.5 when it has none); the
        score comes from :func:`score_from_evaluation`; a failure carries the feedback.

        Args:
            result: The evaluation (``evaluator.evaluate_response(query=..., response=...)``).
            response: The query's response object, to find the query exactly; without it the
                latest finished query with the result's query text (and answer) is used.
            scale: The evaluator's (worst, best) scores, e.g. ``(1, 5)`` for correctness.
            failure_category: The category of a failed evaluation (``"hallucination_detected"``
                suits faithfulness).

        Returns:
            The trace ids of the query's routed calls ([] for an invalid evaluation, which
            says nothing about the answer and is not reported).

        Raises:
            NotFoundError: no finished query matches (the handler was not attached when it
                ran, it made no routed call, or it was already reported).
            ValueError: the score lies outside ``scale``.
        """
        score = score_from_evaluation(result, scale=scale)
        if score is None:
            logger.warning(
                "evaluation not reported: it is invalid (%s)",
                result.invalid_reason or "no score and no verdict",
            )
            return []
        success = result.passing if result.passing is not None else score >= 0.5
        unit = self._take(response, result.query, result.response)
        _report(
            unit,
            success=success,
            score=score,
            reason=None if success else (result.feedback or "the evaluation did not pass"),
            failure_category=None if success else failure_category,
        )
        return [trace_id for _, trace_id in unit.calls]

    def report_query(
        self,
        query_or_response: object,
        success: bool,
        *,
        score: float | None = None,
        reason: str | None = None,
        failure_category: str | None = None,
    ) -> list[str]:
        """Report the outcome of a finished query's routed calls (a user's verdict, say).

        Args:
            query_or_response: The query's response object, or its query text (the latest
                finished query with that text).
            success: Whether the answer was good.
            score: Quality in [0, 1].
            reason: Why not.
            failure_category: One of kalibr-core's ``FAILURE_CATEGORIES``.

        Returns:
            The trace ids of the query's routed calls.

        Raises:
            NotFoundError: no finished query matches.
        """
        if isinstance(query_or_response, str | QueryBundle):
            unit = self._take(None, _query_text(query_or_response), None)
        else:
            unit = self._take(query_or_response, None, None)
        _report(
            unit, success=success, score=score, reason=reason, failure_category=failure_category
        )
        return [trace_id for _, trace_id in unit.calls]

    def _take(self, response: object | None, query: str | None, answer: str | None) -> _Unit:
        """Remove and return the finished query that matches."""
        with self._lock:
            for key in reversed(self._finished):
                unit = self._finished[key]
                if _matches(unit, response, query, answer):
                    del self._finished[key]
                    if not unit.calls:
                        logger.warning(
                            "the query %r made no routed call yet: read a streaming answer "
                            "before reporting it",
                            unit.query,
                        )
                    return unit
        raise NotFoundError(
            "no finished query with routed calls matches this "
            + ("response" if response is not None else f"query {query!r}")
            + ": attach the handler (get_dispatcher().add_event_handler(handler)) before "
            "querying; each query is reported once"
        )


def _matches(unit: _Unit, response: object | None, query: str | None, answer: str | None) -> bool:
    if response is not None:
        return unit.response is not None and unit.response() is response
    if query is not None and unit.query != query:
        return False
    if answer is not None and unit.answer is not None and _words(answer) != _words(unit.answer):
        return False
    return query is not None or answer is not None


def _words(text: str) -> list[str]:
    return text.split()


def _query_text(query: object) -> str:
    return query.query_str if isinstance(query, QueryBundle) else str(query)


def _report(
    unit: _Unit,
    *,
    success: bool,
    score: float | None = None,
    reason: str | None = None,
    failure_category: str | None = None,
) -> None:
    """One report per router for the unit's calls (one outcome per path used)."""
    by_router: dict[int, tuple[Router, list[str]]] = {}
    for router, trace_id in unit.calls:
        by_router.setdefault(id(router), (router, []))[1].append(trace_id)
    for router, trace_ids in by_router.values():
        router.report(
            success,
            reason=reason,
            score=score,
            failure_category=failure_category,
            trace_ids=trace_ids,
        )
