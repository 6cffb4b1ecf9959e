"""``Kalibr``: a LlamaIndex function-calling LLM whose every call is routed by kalibr-core."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kalibr_core.router import AsyncRoutedStream, ChatCompletion, RoutedStream, Router
from llama_index.core.base.llms.generic_utils import (
    achat_to_completion_decorator,
    astream_chat_to_completion_decorator,
    chat_to_completion_decorator,
    stream_chat_to_completion_decorator,
)
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW, DEFAULT_NUM_OUTPUTS
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection

from llama_index.llms.kalibr import _convert
from llama_index.llms.kalibr._events import KalibrRoutedEvent

if TYPE_CHECKING:
    from llama_index.core.tools.types import BaseTool

dispatcher = get_dispatcher(__name__)


class Kalibr(FunctionCallingLLM):
    """A LlamaIndex LLM that routes every call of one goal to the path that works.

    Each call (chat, complete, their stream and async forms, tool calls) goes through a
    kalibr-core :class:`~kalibr_core.router.Router`: Thompson sampling over the outcomes
    reported for the goal picks a path, and the provider SDK is called directly. Outcomes come
    from ``success_when`` / ``score_when``, from :class:`KalibrEventHandler` (structured
    outputs, evaluations of queries) or from :meth:`report`. Every response carries
    ``additional_kwargs["kalibr_trace_id"]`` and the core response as ``raw``.

    Args:
        goal: The goal (a task with one success criterion), e.g. ``"support_answers"``.
        paths: Model strings or path dicts (see ``Router``); the first is the fail-open path.
        router: A Router to use instead of ``goal`` / ``paths`` (for the Router's other options:
            ``exploration_rate``, ``pipeline_id``, ``intelligence``...).
        success_when: ``f(output_text) -> bool``, judging every answer as it arrives.
        score_when: ``f(output_text) -> float`` in [0, 1]; wins over ``success_when``.
        **kwargs: Fields below (``max_tokens``, ``temperature``, ``context_window``,
            ``additional_kwargs``) and LlamaIndex's LLM options (``callback_manager``,
            ``system_prompt``, ``pydantic_program_mode``...).

    Example:
        >>> from llama_index.core import Settings
        >>> from llama_index.llms.kalibr import Kalibr
        >>> Settings.llm = Kalibr(goal="docs_qa", paths=["gpt-4o-mini", "claude-haiku-4-5"])
        ... # doctest: +SKIP
    """

    goal: str = Field(description="The goal every call of this LLM serves.")
    paths: list[str] = Field(description="The models this LLM routes between, fallback first.")
    max_tokens: int | None = Field(
        default=None, gt=0, description="Maximum tokens of an answer (None: the path's own)."
    )
    temperature: float | None = Field(
        default=None, ge=0.0, le=2.0, description="Sampling temperature (None: the path's own)."
    )
    context_window: int = Field(
        default=DEFAULT_CONTEXT_WINDOW,
        gt=0,
        description="The smallest context window among the paths (LlamaIndex packs prompts to it).",
    )
    additional_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra provider parameters sent with every call."
    )

    _router: Router = PrivateAttr()

    def __init__(
        self,
        goal: str | None = None,
        paths: Sequence[str | Mapping[str, Any]] | None = None,
        *,
        router: Router | None = None,
        success_when: Callable[[str], bool] | None = None,
        score_when: Callable[[str], float] | None = None,
        **kwargs: Any,
    ) -> None:
        if router is None:
            if goal is None or paths is None:
                raise ValueError("Kalibr needs goal and paths, or a router")
            router = Router(goal, paths, success_when=success_when, score_when=score_when)
        elif goal is not None or paths is not None or success_when or score_when:
            raise ValueError(
                "pass either router or goal/paths/success_when/score_when, not both: "
                "the router already has them"
            )
        super().__init__(goal=router.goal, paths=[spec.model_id for spec in router.paths], **kwargs)
        self._router = router

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "kalibr_llm"

    @property
    def router(self) -> Router:
        """The kalibr-core Router that decides and records every call."""
        return self._router

    @property
    def metadata(self) -> LLMMetadata:
        """A chat, function-calling model named after the goal."""
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_tokens or DEFAULT_NUM_OUTPUTS,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=f"kalibr/{self.goal}",
            system_role=MessageRole.SYSTEM,
        )

    def report(
        self,
        success: bool,
        *,
        reason: str | None = None,
        score: float | None = None,
        failure_category: str | None = None,
        trace_id: str | None = None,
        trace_ids: Sequence[str] | None = None,
    ) -> None:
        """Report an outcome to the router (see ``Router.report``).

        Without ``trace_id`` / ``trace_ids`` it covers this thread's or task's calls since its
        last report; ``response.additional_kwargs["kalibr_trace_id"]`` names one call.
        """
        self._router.report(
            success,
            reason=reason,
            score=score,
            failure_category=failure_category,
            trace_id=trace_id,
            trace_ids=trace_ids,
        )

    # -- chat ----------------------------------------------------------------------------------
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Routed chat completion."""
        return self._chat(messages, **kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Routed streaming chat; the path is chosen now, the outcome judged at the end."""
        return self._stream_chat(messages, **kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async routed chat completion."""
        return await self._achat(messages, **kwargs)

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        """Async routed streaming chat."""
        return await self._astream_chat(messages, **kwargs)

    # -- complete (a chat with one user message) -----------------------------------------------
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Routed completion of a prompt."""
        return chat_to_completion_decorator(self._chat)(prompt, **kwargs)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        """Routed streaming completion of a prompt."""
        return stream_chat_to_completion_decorator(self._stream_chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        """Async routed completion of a prompt."""
        return await achat_to_completion_decorator(self._achat)(prompt, **kwargs)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Async routed streaming completion of a prompt."""
        return await astream_chat_to_completion_decorator(self._astream_chat)(prompt, **kwargs)

    # -- tools ---------------------------------------------------------------------------------
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The chat arguments offering ``tools`` (OpenAI function tools)."""
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            user_msg = ChatMessage(role=MessageRole.USER, content=user_msg)
        if user_msg is not None:
            messages.append(user_msg)
        specs = _convert.to_openai_tools(tools)
        return {
            "messages": messages,
            "tools": specs or None,
            "tool_choice": _convert.to_openai_tool_choice(tool_choice, tool_required)
            if specs
            else None,
            **kwargs,
        }

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """Keep one tool call unless parallel calls were allowed."""
        if not allow_parallel_tool_calls:
            _convert.keep_first_tool_call(response)
        return response

    def get_tool_calls_from_response(
        self,
        response: ChatResponse,
        error_on_no_tool_call: bool = True,
        **kwargs: Any,
    ) -> list[ToolSelection]:
        """The tool calls of a response.

        Raises:
            ValueError: no tool call and ``error_on_no_tool_call``.
        """
        return _convert.tool_selections(response, error_on_no_tool_call=error_on_no_tool_call)

    # -- the routed calls ----------------------------------------------------------------------
    def _params(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Provider parameters: unset ones are left to the path's own ``params``."""
        params = {**self.additional_kwargs, **kwargs}
        if self.temperature is not None:
            params.setdefault("temperature", self.temperature)
        if self.max_tokens is not None:
            params.setdefault("max_tokens", self.max_tokens)
        for key in ("tools", "tool_choice"):
            if params.get(key) is None:
                params.pop(key, None)
        return params

    def _announce(self, trace_id: str, model: str | None) -> None:
        dispatcher.event(
            KalibrRoutedEvent(goal=self.goal, trace_id=trace_id, model=model, router=self._router)
        )

    def _chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        completion: ChatCompletion = self._router.completion(
            _convert.to_openai_messages(messages), **self._params(kwargs)
        )
        self._announce(completion.kalibr_trace_id, completion.model)
        return _convert.chat_response(completion, self.goal)

    async def _achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        completion: ChatCompletion = await self._router.acompletion(
            _convert.to_openai_messages(messages), **self._params(kwargs)
        )
        self._announce(completion.kalibr_trace_id, completion.model)
        return _convert.chat_response(completion, self.goal)

    def _stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        # The path is chosen before the generator is returned, so the call belongs to the
        # query that asked for it even when the caller reads the stream later.
        stream: RoutedStream = self._router.completion(
            _convert.to_openai_messages(messages), stream=True, **self._params(kwargs)
        )
        self._announce(stream.trace_id, None)
        assembler = _convert.StreamAssembler(self.goal, stream.trace_id)

        def gen() -> ChatResponseGen:
            with stream:
                for chunk in stream:
                    yield assembler.add(chunk)

        return gen()

    async def _astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        stream: AsyncRoutedStream = await self._router.acompletion(
            _convert.to_openai_messages(messages), stream=True, **self._params(kwargs)
        )
        self._announce(stream.trace_id, None)
        assembler = _convert.StreamAssembler(self.goal, stream.trace_id)

        async def gen() -> ChatResponseAsyncGen:
            async for chunk in stream:
                yield assembler.add(chunk)

        return gen()
