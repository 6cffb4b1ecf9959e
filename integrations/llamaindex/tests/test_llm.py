"""Kalibr as a LlamaIndex LLM against the provider simulator: every entry point, routed.

The simulator answers arithmetic exactly ("What is 17 + 25?" -> "42"), so each entry point is
checked on a real answer, on the trace it reports, and on what the router stored.
"""

from __future__ import annotations

from typing import Any

import pytest
from kalibr_core import ProviderError
from kalibr_core.router import ChatCompletion, ChatCompletionChunk
from kalibr_core.simulator import ModelScript, ProviderSimulator
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMCompletionEndEvent

from llama_index.llms.kalibr import KalibrRoutedEvent

pytestmark = pytest.mark.simulator

SUM = "What is 17 + 25?"
PATHS = ["gpt-4o-mini", "claude-haiku-4-5"]


def ask(text: str = SUM) -> list[ChatMessage]:
    return [ChatMessage(role=MessageRole.USER, content=text)]


def is_42(output: str) -> bool:
    return output.strip() == "42"


class Recorder(BaseEventHandler):
    events: list[BaseEvent] = Field(default_factory=list)

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def recorder() -> Any:
    root = get_dispatcher()
    instance = Recorder()
    root.add_event_handler(instance)
    yield instance
    root.event_handlers = [h for h in root.event_handlers if h is not instance]


def test_chat_routes_and_reports_through_success_when(
    sim_env: ProviderSimulator, make_llm: Any, stored: Any, recorder: Any
) -> None:
    llm = make_llm("chat_sum", PATHS, success_when=is_42)

    response = llm.chat(ask())

    assert response.message.role == MessageRole.ASSISTANT
    assert response.message.content == "42"
    assert isinstance(response.raw, ChatCompletion)
    trace_id = response.additional_kwargs["kalibr_trace_id"]
    assert response.additional_kwargs["model"] in PATHS
    assert response.additional_kwargs["total_tokens"] > 0
    [outcome] = stored("chat_sum")
    assert (outcome.trace_id, outcome.success, outcome.model_id) == (
        trace_id,
        True,
        response.additional_kwargs["model"],
    )
    routed = [e for e in recorder.events if isinstance(e, KalibrRoutedEvent)]
    ended = [e for e in recorder.events if isinstance(e, LLMChatEndEvent)]
    assert [e.trace_id for e in routed] == [trace_id]
    assert ended[0].response is not None and ended[0].response.message.content == "42"
    assert "router" not in routed[0].model_dump()  # events stay serializable


def test_complete_is_a_routed_chat_with_one_user_message(
    sim_env: ProviderSimulator, make_llm: Any, stored: Any, recorder: Any
) -> None:
    llm = make_llm("complete_sum", PATHS, success_when=is_42)

    response = llm.complete(SUM)

    assert response.text == "42"
    assert response.additional_kwargs["kalibr_trace_id"] == stored("complete_sum")[0].trace_id
    assert any(isinstance(e, LLMCompletionEndEvent) for e in recorder.events)
    assert not any(isinstance(e, LLMChatEndEvent) for e in recorder.events)


def test_streams_yield_deltas_and_are_judged_when_they_end(
    sim_env: ProviderSimulator, make_llm: Any, stored: Any
) -> None:
    llm = make_llm("stream_sum", PATHS, success_when=is_42)

    chat_chunks = list(llm.stream_chat(ask()))
    text_chunks = list(llm.stream_complete("Write a sentence about autumn leaves"))

    assert "".join(c.delta or "" for c in chat_chunks) == chat_chunks[-1].message.content == "42"
    assert all(isinstance(c.raw, ChatCompletionChunk) for c in chat_chunks)
    assert "autumn" in text_chunks[-1].text
    assert text_chunks[-1].additional_kwargs["total_tokens"] > 0
    outcomes = {o.trace_id: o.success for o in stored("stream_sum")}
    assert outcomes == {
        chat_chunks[-1].additional_kwargs["kalibr_trace_id"]: True,
        text_chunks[-1].additional_kwargs["kalibr_trace_id"]: False,  # not "42"
    }


def test_an_unread_stream_is_routed_but_not_judged(
    sim_env: ProviderSimulator, make_llm: Any, stored: Any, recorder: Any
) -> None:
    llm = make_llm("unread_stream", PATHS, success_when=is_42)

    llm.stream_chat(ask())

    assert [type(e) for e in recorder.events if isinstance(e, KalibrRoutedEvent)]
    assert stored("unread_stream") == []


@pytest.mark.asyncio
async def test_async_chat_complete_and_streams(
    sim_env: ProviderSimulator, make_llm: Any, stored: Any
) -> None:
    llm = make_llm("async_sum", PATHS, success_when=is_42)

    chat = await llm.achat(ask())
    complete = await llm.acomplete(SUM)
    chat_stream = [c async for c in await llm.astream_chat(ask())]
    complete_stream = [c async for c in await llm.astream_complete(SUM)]

    assert chat.message.content == complete.text == "42"
    assert chat_stream[-1].message.content == complete_stream[-1].text == "42"
    trace_ids = {
        chat.additional_kwargs["kalibr_trace_id"],
        complete.additional_kwargs["kalibr_trace_id"],
        chat_stream[-1].additional_kwargs["kalibr_trace_id"],
        complete_stream[-1].additional_kwargs["kalibr_trace_id"],
    }
    outcomes = stored("async_sum")
    assert {o.trace_id for o in outcomes} == trace_ids
    assert all(o.success for o in outcomes)


def test_report_by_trace_id_and_by_context(
    sim_env: ProviderSimulator, make_llm: Any, stored: Any
) -> None:
    llm = make_llm("manual_sum", PATHS)
    first = llm.chat(ask())
    second = llm.complete(SUM)

    llm.report(
        False,
        failure_category="user_unsatisfied",
        trace_id=second.additional_kwargs["kalibr_trace_id"],
    )
    llm.report(True, score=0.8)  # the rest of this thread's calls: the first one

    outcomes = {o.trace_id: (o.success, o.score) for o in stored("manual_sum")}
    assert outcomes == {
        first.additional_kwargs["kalibr_trace_id"]: (True, 0.8),
        second.additional_kwargs["kalibr_trace_id"]: (False, None),
    }


def test_a_provider_failure_raises_and_is_recorded(
    sim_env: ProviderSimulator, make_llm: Any, stored: Any
) -> None:
    sim_env.set_script("broken-model", ModelScript(server_error=1.0))
    llm = make_llm("broken", ["broken-model"])

    with pytest.raises(ProviderError) as raised:
        llm.chat(ask())

    [outcome] = stored("broken")
    assert (outcome.success, outcome.failure_category) == (False, "provider_error")
    assert raised.value.trace_id == outcome.trace_id


def test_llm_options_reach_the_provider_and_path_params_stay(
    sim_env: ProviderSimulator, make_llm: Any
) -> None:
    llm = make_llm("options", ["gpt-4o-mini"], llm_kwargs={"max_tokens": 2})

    response = llm.complete("Write a long sentence about the autumn leaves in the park")

    assert response.raw.choices[0].finish_reason == "length"
    assert len(response.text.split()) <= 2
    assert llm._params({}) == {"max_tokens": 2}  # temperature left to each path's params
    assert llm._params({"temperature": 0.3, "tools": None}) == {"max_tokens": 2, "temperature": 0.3}


def test_force_model_passes_through_to_the_router(
    sim_env: ProviderSimulator, make_llm: Any
) -> None:
    llm = make_llm("forced", PATHS)

    response = llm.chat(ask(), force_model="claude-haiku-4-5")

    assert response.additional_kwargs["model"] == "claude-haiku-4-5"
    assert response.additional_kwargs["kalibr_decision"] == "forced"
