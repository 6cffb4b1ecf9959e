"""Outcome reporting from LangChain's callbacks: a run's end is its routed calls' outcome.

LangChain already decides whether a chain or an agent run worked: it returns, or it raises.
:class:`KalibrCallbackHandler` collects the trace of every routed call made inside a run
(``response_metadata["kalibr_trace_id"]`` of each answer) and, when the run ends, reports
them together: success when it returned (and ``success_when``, if given, accepts the output),
failure when it raised, under the error's category (``malformed_output`` for a parser that
could not read the answer, ``validation_failed``, ``tool_error``, ``timeout``...).

The run is the outermost run the handler sees start, usually the one it was passed to:
``chain.invoke(inputs, config={"callbacks": [handler]})``. A run that contains several routed
calls (an agent loop) gets one outcome per path used, as ``Router.report`` gives a
conversation; calls already reported (by ``success_when``, as provider failures, by
:func:`with_outcome`) keep their outcome. A run stopped from outside (a stream left early,
a cancelled task) reports nothing. One handler serves any number of concurrent runs: each
reports its own calls.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from langchain_kalibr._messages import trace_id_of
from langchain_kalibr._outcomes import failure_category, failure_reason, report_traces

logger = logging.getLogger("langchain_kalibr")

SuccessWhen = Callable[[Any], bool]

# The root of inner runs still open when their run ended (a stream left early): their own end,
# which LangChain signals later, gives no verdict.
_ENDED = UUID(int=0)


class KalibrCallbackHandler(BaseCallbackHandler):
    """Reports the routed calls of a chain or agent run when the run ends or raises.

    Args:
        success_when: Optional judge of the run's output (``True`` is a success); without
            it, a run that returns is a success.

    Example:
        >>> handler = KalibrCallbackHandler()
        >>> chain = prompt | ChatKalibr(goal="summarize", paths=["gpt-4o", "claude-sonnet-4-6"])
        >>> chain.invoke({"text": "..."}, config={"callbacks": [handler]})  # doctest: +SKIP
    """

    run_inline = True  # report in order with the run's own events, also under asyncio

    def __init__(self, *, success_when: SuccessWhen | None = None) -> None:
        super().__init__()
        self.success_when = success_when
        self._lock = threading.Lock()
        self._root_of: dict[UUID, UUID] = {}  # every open run -> the run it belongs to
        self._open: dict[UUID, set[UUID]] = {}  # a run -> its inner runs still open
        self._traces: dict[UUID, list[str]] = {}  # a run -> the traces of its routed calls

    # -- the run tree --------------------------------------------------------------------------
    def _start(self, run_id: UUID, parent_run_id: UUID | None) -> None:
        with self._lock:
            root = self._root_of.get(parent_run_id) if parent_run_id is not None else None
            if root is None:
                root = run_id
                self._open[root] = set()
                self._traces[root] = []
            elif root != _ENDED:
                self._open[root].add(run_id)
            self._root_of[run_id] = root

    def _end(self, run_id: UUID, output: Any = None, error: BaseException | None = None) -> None:
        with self._lock:
            root = self._root_of.pop(run_id, None)
            if root != run_id:
                if root is not None and root != _ENDED:
                    self._open[root].discard(run_id)
                return  # an inner run: its calls wait for the whole run's verdict
            for inner in self._open.pop(run_id, set()):
                self._root_of[inner] = _ENDED
            traces = self._traces.pop(run_id, [])
        if not traces:
            return
        if error is not None:
            if not isinstance(error, Exception):
                return  # stopped from outside (GeneratorExit, cancellation): no verdict
            report_traces(
                traces,
                False,
                failure_category=failure_category(error),
                reason=failure_reason(error),
            )
        elif self._judge(output):
            report_traces(traces, True)
        else:
            report_traces(
                traces,
                False,
                failure_category="validation_failed",
                reason="success_when rejected the run's output",
            )

    def _judge(self, output: Any) -> bool:
        if self.success_when is None:
            return True
        try:
            return bool(self.success_when(output))
        except Exception:
            logger.exception("success_when raised; the run counts as a failure")
            return False

    # -- starts --------------------------------------------------------------------------------
    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember the run's place in the run tree."""
        self._start(run_id, parent_run_id)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember the model call's place in the run tree."""
        self._start(run_id, parent_run_id)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember the model call's place in the run tree."""
        self._start(run_id, parent_run_id)

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember the tool run's place in the run tree (tools may call models too)."""
        self._start(run_id, parent_run_id)

    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember the retriever run's place in the run tree."""
        self._start(run_id, parent_run_id)

    # -- routed answers ------------------------------------------------------------------------
    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Collect the traces of the routed answers; a model call run alone ends here."""
        traces = _traces_of(response)
        with self._lock:
            if run_id not in self._root_of:  # its start was not seen: a run of its own
                self._root_of[run_id] = run_id
                self._open[run_id] = set()
                self._traces[run_id] = []
            root = self._root_of[run_id]
            if root != _ENDED:
                self._traces[root].extend(traces)
        messages = _chat_messages(response)
        self._end(run_id, output=messages[0] if len(messages) == 1 else response)

    # -- ends ----------------------------------------------------------------------------------
    def on_chain_end(
        self,
        outputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """A run that returned: its calls succeeded (unless ``success_when`` says no)."""
        self._end(run_id, output=outputs)

    def on_tool_end(
        self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """A tool run that returned."""
        self._end(run_id, output=output)

    def on_retriever_end(
        self,
        documents: Sequence[Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """A retriever run that returned."""
        self._end(run_id, output=documents)

    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """A run that raised: its calls failed, under the error's category."""
        self._end(run_id, error=error)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """A model call that raised (the Router has already reported a provider failure)."""
        self._end(run_id, error=error)

    def on_tool_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """A tool run that raised."""
        self._end(run_id, error=error)

    def on_retriever_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """A retriever run that raised."""
        self._end(run_id, error=error)


def _chat_messages(response: LLMResult) -> list[BaseMessage]:
    return [
        generation.message
        for batch in response.generations
        for generation in batch
        if isinstance(generation, ChatGeneration)
    ]


def _traces_of(response: LLMResult) -> list[str]:
    traces = (trace_id_of(message) for message in _chat_messages(response))
    return [trace for trace in traces if trace is not None]
