"""KalibrLLM: a CrewAI LLM whose calls kalibr-core routes between paths, by outcome.

CrewAI's agent loop calls ``llm.call(messages, tools=..., available_functions=...)`` once per
turn. Each call here goes through :meth:`kalibr_core.router.Router.completion`: CrewAI's
messages and tool schemas are already OpenAI-shaped, so the conversion is a matter of
dropping CrewAI's private message keys; the answer comes back as text (ReAct), as a list of
OpenAI tool calls (native function calling: CrewAI runs them), or as the result of the first
tool call when CrewAI passes ``available_functions``.

One task attempt is one conversation (the spec's multi-turn pattern): its first call is routed
and the later calls of the attempt stay on that path (``force_model``) until a verdict on the
task (see :mod:`crewai_kalibr._outcomes`) reports them, as one outcome per path used. The next
attempt, after a guardrail blocked, is routed afresh. A call that fails is reported by the
Router at once, and the attempt's next call is routed afresh too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from crewai.events.types.llm_events import LLMCallType
from crewai.hooks.dispatch import HookAborted
from crewai.llms.base_llm import BaseLLM, LLMCallBlockedError, llm_call_context
from crewai.llms.context_window import (
    CONTEXT_WINDOW_USAGE_RATIO,
    DEFAULT_CONTEXT_WINDOW_SIZE,
    LLM_CONTEXT_WINDOW_SIZES,
    resolve_context_window_size,
)
from crewai.utilities.exceptions.context_window_exceeding_exception import (
    LLMContextLengthExceededError,
)
from crewai.utilities.message_utils import message_content_text
from pydantic import BaseModel, Field, PrivateAttr, model_validator

from crewai_kalibr._outcomes import TASK_CALLS, RoutedCall, Verdict, task_id_of
from kalibr_core import ContextExceededError, KalibrError
from kalibr_core.router import Router

if TYPE_CHECKING:
    from crewai.agents.agent_builder.base_agent import BaseAgent
    from crewai.task import Task
    from crewai.tools.base_tool import BaseTool
    from crewai.utilities.types import LLMMessage

    from kalibr_core.router import ChatCompletion

logger = logging.getLogger("crewai_kalibr")

# The message keys of the OpenAI chat format; CrewAI adds private ones (files, cache marks).
_MESSAGE_KEYS: Final = frozenset({"role", "content", "name", "tool_calls", "tool_call_id"})
# OpenAI accepts at most four stop sequences; the rest are applied to the answer afterwards.
_MAX_PROVIDER_STOPS: Final = 4
_SAMPLING_FIELDS: Final = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty")
_ROUTER_OPTIONS: Final = (
    "paths",
    "success_when",
    "score_when",
    "exploration_rate",
    "pipeline_id",
    "intelligence",
)


class _RouterCalls:
    """Reports a task's LLM calls through the Router: one outcome per path used."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def report_calls(self, calls: Sequence[RoutedCall], verdict: Verdict) -> None:
        try:
            self.router.report(
                verdict.success,
                reason=verdict.reason,
                score=verdict.score,
                failure_category=verdict.failure_category,
                trace_ids=[call.trace_id for call in calls],
            )
        except KalibrError:  # fail open: a reporting problem never fails the task
            logger.exception("reporting %d call(s) of %s failed", len(calls), self.router.goal)


class KalibrLLM(BaseLLM):
    """A CrewAI LLM routed by kalibr-core: each task runs on the path that works.

    Give it a goal and its paths (model strings or path dicts, as for
    :class:`kalibr_core.router.Router`), or a ready ``router``. Everything else is CrewAI's
    ``BaseLLM``: ``temperature``, ``max_tokens``, ``stop``... are sent with every call (they
    win over a path's ``params``).

    Args:
        goal: The goal the calls serve (default: the router's).
        paths: The paths to route between; the first is the fail-open fallback.
        router: A ready Router (instead of ``goal``/``paths``).
        success_when: ``f(answer_text) -> bool`` judging every answer (tool-calling turns are
            not judged); without it the task's guardrails and callbacks report outcomes.
        score_when: ``f(answer_text) -> float`` in [0, 1], instead of ``success_when``.
        exploration_rate: As for Router.
        pipeline_id: As for Router.
        intelligence: The Intelligence to use (default: the process-wide one).
        function_calling: Offer CrewAI native tool calling (``supports_function_calling``);
            False makes CrewAI use its ReAct text format.
        context_window_size: The context window (tokens) CrewAI should plan for; by default
            the smallest known window among the paths, since any of them may serve a call.
        route_each_call: Route every call, instead of keeping a task attempt on one path.

    Example:
        >>> llm = KalibrLLM(goal="research", paths=["gpt-4o", "claude-haiku-4-5"])  # doctest: +SKIP
        >>> agent = Agent(role="Researcher", goal="...", backstory="...", llm=llm)  # doctest: +SKIP
    """

    llm_type: str = "kalibr"
    provider: str = "kalibr"
    goal: str | None = None
    paths: list[str | dict[str, Any]] | None = None
    router: Router | None = Field(default=None, exclude=True)
    success_when: Callable[[str], bool] | None = Field(default=None, exclude=True)
    score_when: Callable[[str], float] | None = Field(default=None, exclude=True)
    exploration_rate: float | None = None
    pipeline_id: str | None = None
    intelligence: Any = Field(default=None, exclude=True)
    function_calling: bool = True
    context_window_size: int | None = Field(default=None, gt=0)
    route_each_call: bool = False

    _calls: _RouterCalls = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _name_the_model(cls, data: Any) -> Any:
        # CrewAI requires a model name; ours names the goal ("kalibr/research").
        if isinstance(data, dict) and not data.get("model"):
            router = data.get("router")
            goal = data.get("goal") or getattr(router, "goal", None)
            data = {**data, "model": f"kalibr/{goal}" if goal else "kalibr"}
        return data

    @model_validator(mode="after")
    def _build_router(self) -> KalibrLLM:
        if self.router is None:
            if not self.goal or not self.paths:
                raise ValueError("KalibrLLM needs goal= and paths=, or router=")
            self.router = Router(
                self.goal,
                self.paths,
                success_when=self.success_when,
                score_when=self.score_when,
                exploration_rate=self.exploration_rate,
                pipeline_id=self.pipeline_id,
                intelligence=self.intelligence,
            )
        else:
            given = [name for name in _ROUTER_OPTIONS if getattr(self, name) is not None]
            if given:
                raise ValueError(f"with router=, give {', '.join(given)} to the Router itself")
            if self.goal is not None and self.goal != self.router.goal:
                raise ValueError(f"goal {self.goal!r} is not the router's ({self.router.goal!r})")
        self.goal = self.router.goal
        self._calls = _RouterCalls(self.router)
        return self

    @property
    def routed(self) -> Router:
        """The Router behind this LLM (for ``report()``, ``flush()``, policies)."""
        assert self.router is not None  # set by the validator
        return self.router

    # -- CrewAI's capabilities -------------------------------------------------------------------
    def supports_function_calling(self) -> bool:
        """Whether CrewAI should pass tools natively (every routed provider takes them)."""
        return self.function_calling

    def supports_stop_words(self) -> bool:
        """Stop words are sent to the provider and applied to the answer."""
        return True

    def get_context_window_size(self) -> int:
        """The usable window: CrewAI's share of the smallest window among the paths."""
        if self.context_window_size is not None:
            return int(self.context_window_size * CONTEXT_WINDOW_USAGE_RATIO)
        return min(
            resolve_context_window_size(
                spec.model_id, LLM_CONTEXT_WINDOW_SIZES, default=DEFAULT_CONTEXT_WINDOW_SIZE
            )
            for spec in self.routed.paths
        )

    def get_input_tokens_count(
        self,
        messages: str | list[LLMMessage],
        tools: list[dict[str, BaseTool]] | None = None,
        response_model: type[BaseModel] | None = None,
    ) -> int:
        """An estimate (four characters a token): the paths' tokenizers differ."""
        if isinstance(messages, str):
            characters = len(messages)
        else:
            characters = sum(len(message_content_text(message)) for message in messages)
        if tools:
            characters += len(json.dumps(tools, default=str))
        if response_model is not None:
            characters += len(json.dumps(response_model.model_json_schema()))
        return (characters + 3) // 4

    # -- calls -----------------------------------------------------------------------------------
    def call(
        self,
        messages: str | list[LLMMessage],
        tools: list[dict[str, BaseTool]] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Task | None = None,
        from_agent: BaseAgent | None = None,
        response_model: type[BaseModel] | None = None,
    ) -> str | Any:
        """One routed call (CrewAI's ``BaseLLM.call`` contract).

        Returns:
            The answer text; the OpenAI tool calls when the model calls tools and CrewAI
            runs them itself; the first tool's result when CrewAI passes
            ``available_functions``; a ``response_model`` instance for structured output.

        Raises:
            LLMContextLengthExceededError: the prompt does not fit the chosen path (CrewAI
                summarises and retries; the next call is routed afresh).
            kalibr_core.ProviderError: the provider call failed (already reported).
        """
        with llm_call_context():
            self._emit_call_started_event(
                messages=messages,
                tools=tools,
                callbacks=callbacks,
                available_functions=available_functions,
                from_task=from_task,
                from_agent=from_agent,
            )
            try:
                request = self._request(messages, tools, response_model, from_task, from_agent)
                try:
                    response = self.routed.completion(
                        request.messages,
                        force_model=request.force_model,
                        max_tokens=request.max_tokens,
                        **request.params,
                    )
                except KalibrError as exc:
                    raise self._failed(request, exc) from exc
                return self._answer(
                    request, response, available_functions, from_task, from_agent, response_model
                )
            except (HookAborted, LLMCallBlockedError) as exc:
                self._emit_call_denied_event(exc, from_task, from_agent)
                raise
            except Exception as exc:
                self._emit_call_failed_event(
                    error=f"routed call of {self.goal} failed: {exc}",
                    from_task=from_task,
                    from_agent=from_agent,
                )
                raise

    async def acall(
        self,
        messages: str | list[LLMMessage],
        tools: list[dict[str, BaseTool]] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Task | None = None,
        from_agent: BaseAgent | None = None,
        response_model: type[BaseModel] | None = None,
    ) -> str | Any:
        """Async form of :meth:`call` (``Router.acompletion``)."""
        with llm_call_context():
            self._emit_call_started_event(
                messages=messages,
                tools=tools,
                callbacks=callbacks,
                available_functions=available_functions,
                from_task=from_task,
                from_agent=from_agent,
            )
            try:
                request = self._request(messages, tools, response_model, from_task, from_agent)
                try:
                    response = await self.routed.acompletion(
                        request.messages,
                        force_model=request.force_model,
                        max_tokens=request.max_tokens,
                        **request.params,
                    )
                except KalibrError as exc:
                    raise self._failed(request, exc) from exc
                return self._answer(
                    request, response, available_functions, from_task, from_agent, response_model
                )
            except (HookAborted, LLMCallBlockedError) as exc:
                self._emit_call_denied_event(exc, from_task, from_agent)
                raise
            except Exception as exc:
                self._emit_call_failed_event(
                    error=f"routed call of {self.goal} failed: {exc}",
                    from_task=from_task,
                    from_agent=from_agent,
                )
                raise

    # -- conversion ------------------------------------------------------------------------------
    def _request(
        self,
        messages: str | list[LLMMessage],
        tools: list[dict[str, BaseTool]] | None,
        response_model: type[BaseModel] | None,
        from_task: Task | None,
        from_agent: BaseAgent | None,
    ) -> _Request:
        formatted = self._format_messages(messages)
        self._invoke_before_llm_call_hooks(formatted, from_agent)
        params: dict[str, Any] = dict(self.additional_params)
        for name in _SAMPLING_FIELDS:
            value = getattr(self, name)
            if value is not None:
                params[name] = value
        if tools:
            params["tools"] = [openai_tool(tool) for tool in tools]
            params["tool_choice"] = "auto"
        stops = self.stop_sequences
        if stops:
            params["stop"] = stops[:_MAX_PROVIDER_STOPS]
        if response_model is not None:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": response_model.__name__,
                    "schema": response_model.model_json_schema(),
                },
            }
        task_id = task_id_of(from_task)
        force = None
        if task_id is not None and not self.route_each_call:
            force = TASK_CALLS.sticky_path(task_id, self._calls)
        return _Request(
            formatted=formatted,
            messages=[
                {key: value for key, value in message.items() if key in _MESSAGE_KEYS}
                for message in formatted
            ],
            params=params,
            max_tokens=int(self.max_tokens) if self.max_tokens else None,
            task_id=task_id,
            force_model=force,
        )

    def _failed(self, request: _Request, exc: KalibrError) -> Exception:
        # The Router reported the failure; the attempt's next call is routed afresh.
        if request.task_id is not None:
            TASK_CALLS.release(request.task_id, self._calls)
        if isinstance(exc, ContextExceededError):
            return LLMContextLengthExceededError(str(exc))
        return exc

    def _answer(
        self,
        request: _Request,
        response: ChatCompletion,
        available_functions: dict[str, Any] | None,
        from_task: Task | None,
        from_agent: BaseAgent | None,
        response_model: type[BaseModel] | None,
    ) -> str | Any:
        if request.task_id is not None:
            TASK_CALLS.record(
                request.task_id,
                self._calls,
                RoutedCall(
                    response.kalibr_trace_id, request.force_model or self._model_of(response)
                ),
            )
        usage = response.usage.model_dump()
        self._track_token_usage_internal(usage)
        message = response.choices[0].message

        def completed(answer: Any, call_type: LLMCallType) -> None:
            self._emit_call_completed_event(
                response=answer,
                call_type=call_type,
                from_task=from_task,
                from_agent=from_agent,
                messages=request.formatted,
                usage=usage,
                finish_reason=response.choices[0].finish_reason,
                response_id=response.id or None,
            )

        if message.tool_calls:
            calls = [
                call.model_dump(include={"id", "type", "function"}) for call in message.tool_calls
            ]
            if not available_functions:
                completed(calls, LLMCallType.TOOL_CALL)
                return calls
            first = message.tool_calls[0].function
            try:
                arguments = json.loads(first.arguments or "{}")
            except json.JSONDecodeError:
                logger.warning("the arguments of tool call %s are not JSON", first.name)
                arguments = {}
            result = self._handle_tool_execution(
                function_name=first.name,
                function_args=arguments if isinstance(arguments, dict) else {},
                available_functions=available_functions,
                from_task=from_task,
                from_agent=from_agent,
            )
            if result is not None:
                return result
        content = message.content or ""
        if response_model is not None and content:
            try:
                structured = self._validate_structured_output(content, response_model)
            except ValueError:
                logger.warning("the answer is not a %s; returning it as text", response_model)
            else:
                completed(content, LLMCallType.LLM_CALL)
                return structured
        content = self._apply_stop_words(content)
        if self._effective_stream():
            # Routed calls are not streamed: the answer arrives as one chunk.
            self._emit_stream_chunk_event(
                chunk=content,
                from_task=from_task,
                from_agent=from_agent,
                call_type=LLMCallType.LLM_CALL,
                response_id=response.id or None,
            )
        completed(content, LLMCallType.LLM_CALL)
        answer: str = self._invoke_after_llm_call_hooks(request.formatted, content, from_agent)
        return answer

    def _model_of(self, response: ChatCompletion) -> str:
        for spec in self.routed.paths:
            if spec.path_id == response.kalibr_path_id:
                return spec.model_id
        return response.model


@dataclass(frozen=True, slots=True)
class _Request:
    formatted: list[LLMMessage]  # CrewAI's messages, for its hooks and events
    messages: list[dict[str, Any]]  # what the provider gets
    params: dict[str, Any]
    max_tokens: int | None
    task_id: str | None
    force_model: str | None


def openai_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI function tool from CrewAI's tool schema (OpenAI's, or a bare function)."""
    function = tool.get("function") if tool.get("type") == "function" else tool
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise ValueError(f"not a function tool schema: {tool!r}")
    spec: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        spec["description"] = function["description"]
    parameters = function.get("parameters")
    spec["parameters"] = dict(parameters) if isinstance(parameters, Mapping) else {"type": "object"}
    return {"type": "function", "function": spec}
