"""ChatKalibr: a LangChain chat model whose every call is routed by a kalibr Router."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Literal

from kalibr_core import ProviderError
from kalibr_core.router import Router
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import (
    BaseOutputParser,
    JsonOutputKeyToolsParser,
    JsonOutputParser,
    PydanticOutputParser,
    PydanticToolsParser,
)
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, ConfigDict, Field, model_validator

from langchain_kalibr._errors import is_retryable, to_langchain_error
from langchain_kalibr._messages import StreamConverter, chat_result, to_openai_messages
from langchain_kalibr._parsers import OutcomeParser

_ROUTER_OPTIONS = (
    "success_when",
    "score_when",
    "exploration_rate",
    "pipeline_id",
    "session_id",
    "intelligence",
    "durable_reports",
    "auto_register",
    "prefer_cached",
)
"""``Router`` arguments ``ChatKalibr(goal=..., paths=..., ...)`` passes on to the Router."""

_RETRY_BASE_S = 0.25
_RETRY_MAX_S = 4.0


@dataclass(frozen=True, slots=True)
class _Request:
    messages: list[dict[str, Any]]
    force_model: str | None
    max_tokens: int | None
    params: dict[str, Any]


class ChatKalibr(BaseChatModel):
    """A LangChain chat model routed by outcomes: each call goes to the path that works.

    Every call is one routed decision of the Router's goal (Thompson sampling over the
    outcomes reported so far) and a direct call to the chosen provider's SDK. The answer's
    ``response_metadata`` holds the trace (``kalibr_trace_id``) and the model that answered
    (``model_name``). Outcomes come from the Router's ``success_when`` / ``score_when``, from
    :class:`KalibrCallbackHandler` when the enclosing chain or agent run ends, or from an
    output parser wrapped with :func:`with_outcome`.

    Args:
        router: The Router to route with (or give ``goal`` and ``paths``, and any of
            ``success_when``, ``score_when``, ``exploration_rate``, ``pipeline_id``,
            ``session_id``, ``intelligence``, ``durable_reports``, to build one).
        temperature: Sampling temperature.
        max_tokens: Maximum tokens of the answer.
        timeout: Seconds to wait for the provider, per attempt.
        stop: Stop sequences.
        max_retries: How many times a retryable failure (rate limit, 5xx, timeout) is
            re-routed: each attempt is a routed call of its own, its failure reported, so
            the next decision may pick another path. Default 0: kalibr learns from failures
            instead of hiding them.
        streaming: Stream internally on ``invoke`` too.
        model_kwargs: Other provider arguments (``top_p``, ``seed``, ``response_format``...).

    These settings go with every call, so they win over a path's ``params`` (as the Router's
    caller arguments do): to route over a parameter, set it in the paths only. Per call,
    provider keyword arguments pass through (and win), and ``model="..."`` forces that model
    (``force_model``: the outcome is still recorded).

    Example:
        >>> from langchain_kalibr import ChatKalibr
        >>> llm = ChatKalibr(goal="summarize", paths=["gpt-4o", "claude-sonnet-4-20250514"])
        >>> llm.invoke("Summarize: ...").response_metadata["model_name"]  # doctest: +SKIP
        'gpt-4o-2024-08-06'
    """

    router: Router = Field(exclude=True)
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    max_retries: int = Field(default=0, ge=0)
    streaming: bool = False
    model_kwargs: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _build_router(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        values = dict(values)
        goal, paths = values.pop("goal", None), values.pop("paths", None)
        options = {name: values.pop(name) for name in _ROUTER_OPTIONS if name in values}
        if values.get("router") is not None:
            if goal is not None or paths is not None or options:
                raise ValueError("give ChatKalibr a router, or goal and paths: not both")
            return values
        if goal is None or paths is None:
            raise ValueError("ChatKalibr needs router=Router(...), or goal= and paths=")
        values["router"] = Router(goal, paths, **options)
        return values

    @property
    def goal(self) -> str:
        """The goal every call of this model is routed (and reported) under."""
        return self.router.goal

    # -- LangChain's model description --------------------------------------------------------
    @property
    def _llm_type(self) -> str:
        return "kalibr-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "goal": self.router.goal,
            "paths": [path.path_id for path in self.router.paths],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stop": self.stop,
            **self.model_kwargs,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        model = kwargs.get("model")
        params = LangSmithParams(
            ls_provider="kalibr",
            ls_model_name=model if isinstance(model, str) else self.router.goal,
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if isinstance(temperature, int | float):
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if isinstance(max_tokens, int):
            params["ls_max_tokens"] = max_tokens
        stops = stop or kwargs.get("stop") or self.stop
        if stops:
            params["ls_stop"] = list(stops)
        return params

    # -- the routed call ----------------------------------------------------------------------
    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> _Request:
        params: dict[str, Any] = dict(self.model_kwargs)
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.timeout is not None:
            params["timeout"] = self.timeout
        stops = stop if stop is not None else self.stop
        if stops:
            params["stop"] = list(stops)
        call = dict(kwargs)
        call.pop("stream", None)
        force_model = call.pop("model", None)
        max_tokens = call.pop("max_tokens", self.max_tokens)
        params.update(call)
        return _Request(to_openai_messages(messages), force_model, max_tokens, params)

    def _complete(self, request: _Request, *, stream: bool = False) -> Any:
        try:
            return self.router.completion(
                request.messages,
                force_model=request.force_model,
                max_tokens=request.max_tokens,
                stream=stream,
                **request.params,
            )
        except ProviderError as exc:
            raise to_langchain_error(exc) from exc

    async def _acomplete(self, request: _Request, *, stream: bool = False) -> Any:
        try:
            return await self.router.acompletion(
                request.messages,
                force_model=request.force_model,
                max_tokens=request.max_tokens,
                stream=stream,
                **request.params,
            )
        except ProviderError as exc:
            raise to_langchain_error(exc) from exc

    def _backoff(self, attempt: int, error: BaseException) -> float | None:
        """Seconds to wait before re-routing after ``error``, or None to give up."""
        if attempt >= self.max_retries or not is_retryable(error):
            return None
        return float(min(_RETRY_BASE_S * 2**attempt, _RETRY_MAX_S))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._request(messages, stop, kwargs)
        attempt = 0
        while True:
            try:
                return chat_result(self._complete(request), self.router.goal)
            except ProviderError as exc:
                wait = self._backoff(attempt, exc)
                if wait is None:
                    raise
            attempt += 1
            time.sleep(wait)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        request = self._request(messages, stop, kwargs)
        attempt = 0
        while True:
            try:
                return chat_result(await self._acomplete(request), self.router.goal)
            except ProviderError as exc:
                wait = self._backoff(attempt, exc)
                if wait is None:
                    raise
            attempt += 1
            await asyncio.sleep(wait)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        request = self._request(messages, stop, kwargs)
        attempt = 0
        while True:
            converter = StreamConverter(self.router.goal)
            started = False
            try:
                with self._complete(request, stream=True) as stream:
                    for chunk in stream:
                        converted = converter.convert(chunk)
                        if converted is not None:
                            started = True
                            yield converted
                yield converter.last()
                return
            except ProviderError as exc:
                mapped = to_langchain_error(exc)
                wait = None if started else self._backoff(attempt, mapped)
                if wait is None:
                    if mapped is exc:
                        raise
                    raise mapped from exc
            attempt += 1
            time.sleep(wait)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        request = self._request(messages, stop, kwargs)
        attempt = 0
        while True:
            converter = StreamConverter(self.router.goal)
            started = False
            try:
                stream = await self._acomplete(request, stream=True)
                chunks = stream.__aiter__()
                try:
                    async for chunk in chunks:
                        converted = converter.convert(chunk)
                        if converted is not None:
                            started = True
                            yield converted
                finally:
                    await chunks.aclose()
                yield converter.last()
                return
            except ProviderError as exc:
                mapped = to_langchain_error(exc)
                wait = None if started else self._backoff(attempt, mapped)
                if wait is None:
                    if mapped is exc:
                        raise
                    raise mapped from exc
            attempt += 1
            await asyncio.sleep(wait)

    # -- tools and structured output ----------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (OpenAI tool dicts, Pydantic models, functions, LangChain tools).

        Args:
            tools: The tools; every routed provider gets them in its own format.
            tool_choice: ``"auto"``, ``"none"``, ``"any"``/``"required"``/``True`` (call
                some tool), a tool's name, or an OpenAI ``tool_choice`` dict.
            strict: Ask for schema-exact arguments (OpenAI ``strict``).
            parallel_tool_calls: OpenAI's ``parallel_tool_calls`` (other providers ignore it).
            **kwargs: More arguments bound to every call.
        """
        formatted = [convert_to_openai_tool(tool, strict=strict) for tool in tools]
        if tool_choice is not None and tool_choice is not False:
            kwargs["tool_choice"] = _tool_choice(tool_choice, formatted)
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: Literal["function_calling", "json_schema", "json_mode"] = "function_calling",
        strict: bool | None = None,
        report_outcome: bool = True,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """The model answering in ``schema`` (a Pydantic model, TypedDict or JSON schema).

        Args:
            schema: What the answer must be.
            include_raw: Return ``{"raw", "parsed", "parsing_error"}`` instead of raising.
            method: ``"function_calling"`` (a forced tool call: every provider), or
                ``"json_schema"`` (the provider's structured outputs: OpenAI
                ``response_format``, Anthropic ``output_config``), or ``"json_mode"`` (a JSON
                object, schema in the prompt: OpenAI-compatible providers).
            strict: Ask for schema-exact output (OpenAI ``strict``).
            report_outcome: Report each call's outcome from the parse: success when the
                answer fits the schema, ``malformed_output`` / ``validation_failed`` when
                not (see :func:`with_outcome`). A Router's ``success_when`` still wins.
            **kwargs: Not accepted (raises ValueError), as in ``BaseChatModel``.
        """
        if kwargs:
            raise ValueError(f"Received unsupported arguments {kwargs}")
        pydantic_schema = isinstance(schema, type) and is_basemodel_subclass(schema)
        structured = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        llm: Runnable[LanguageModelInput, AIMessage]
        parser: BaseOutputParser[Any]
        if method == "function_calling":
            tool = convert_to_openai_tool(schema, strict=strict)
            name = tool["function"]["name"]
            llm = self.bind_tools(
                [schema], tool_choice=name, strict=strict, ls_structured_output_format=structured
            )
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
                if pydantic_schema
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        elif method in ("json_schema", "json_mode"):
            if method == "json_schema":
                json_schema = convert_to_json_schema(schema)
                spec: dict[str, Any] = {
                    "name": json_schema.get("title") or "output",
                    "schema": json_schema,
                }
                if strict is not None:
                    spec["strict"] = strict
                response_format: dict[str, Any] = {"type": "json_schema", "json_schema": spec}
            else:
                response_format = {"type": "json_object"}
            llm = self.bind(response_format=response_format, ls_structured_output_format=structured)
            parser = (
                PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
                if pydantic_schema
                else JsonOutputParser()
            )
        else:
            raise ValueError(
                f"method must be 'function_calling', 'json_schema' or 'json_mode', not {method!r}"
            )
        if report_outcome:
            parser = OutcomeParser(parser=parser)
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        failed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([failed], exception_key="parsing_error")


def _tool_choice(
    choice: dict[str, Any] | str | bool, tools: Sequence[Mapping[str, Any]]
) -> dict[str, Any] | str:
    """LangChain's tool_choice values as OpenAI's (which the Router maps for each provider)."""
    if isinstance(choice, dict):
        return choice
    if choice is True or choice in ("any", "required"):
        return "required"
    if choice in ("auto", "none"):
        return str(choice)
    names = [tool["function"]["name"] for tool in tools]
    if isinstance(choice, str) and choice in names:
        return {"type": "function", "function": {"name": choice}}
    raise ValueError(
        f"tool_choice {choice!r} is not 'auto', 'none', 'any', 'required' or one of {names}"
    )
