"""ChatKalibr against the simulator: routed calls, their metadata, tools, streams and failures."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kalibr_core import ProviderTimeoutError, RateLimitedError
from kalibr_core.simulator import (
    ModelScript,
    ProviderSimulator,
    Schedule,
    check_answer,
    company_extraction_examples,
)
from langchain_core.exceptions import ModelAPIError, ModelRateLimitError, ModelTimeoutError
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool

pytestmark = pytest.mark.simulator

GPT, CLAUDE = "gpt-4o-mini", "claude-haiku-4-5"
EXAMPLES = company_extraction_examples()
PROMPT = ChatPromptTemplate.from_messages(
    [("system", 'Answer with JSON {{"company": ...}}.'), ("human", "{text}")]
)


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_the_one_line_change_routes_a_chain_and_learns_per_call(make_llm: Any, stored: Any) -> None:
    """``prompt | llm | parser`` with ``success_when``: one outcome per call, on its trace."""
    current = {"prompt": ""}
    llm = make_llm(
        "one_line",
        [GPT, CLAUDE],
        success_when=lambda output: check_answer(current["prompt"], output),
    )
    chain = PROMPT | llm
    answers: list[AIMessage] = []
    for example in EXAMPLES[:6]:
        current["prompt"] = example.prompt
        answers.append(chain.invoke({"text": example.prompt}))

    outcomes = stored("one_line")
    assert [o.trace_id for o in outcomes] == [
        a.response_metadata["kalibr_trace_id"] for a in answers
    ]
    assert [o.model_id for o in outcomes] == [a.response_metadata["model_name"] for a in answers]
    assert all(o.success for o in outcomes)
    assert all(o.input_tokens and o.output_tokens for o in outcomes)
    first = answers[0]
    assert first.response_metadata["kalibr_goal"] == "one_line"
    assert first.response_metadata["kalibr_provider"] in {"openai", "anthropic"}
    assert first.usage_metadata is not None
    assert first.usage_metadata["input_tokens"] == outcomes[0].input_tokens


def test_a_model_kwarg_forces_that_path(make_llm: Any, stored: Any) -> None:
    llm = make_llm("forced", [GPT, CLAUDE], success_when=bool)

    answer = llm.invoke("Hello there", model=CLAUDE)

    metadata = answer.response_metadata
    assert (metadata["model_name"], metadata["kalibr_provider"]) == (CLAUDE, "anthropic")
    assert metadata["kalibr_decision"] == "forced"
    [outcome] = stored("forced")
    assert (outcome.model_id, outcome.success) == (CLAUDE, True)


@pytest.mark.parametrize(("first", "second"), [(GPT, CLAUDE), (CLAUDE, GPT)])
def test_a_tool_loop_keeps_tool_call_ids_across_providers(
    make_llm: Any, first: str, second: str
) -> None:
    """A tool call from one provider, answered by a ToolMessage, continued by the other."""
    llm = make_llm("tool_loop", [GPT, CLAUDE]).bind_tools([add])
    history: list[Any] = [HumanMessage("What is 17 + 25?")]

    call = llm.invoke(history, model=first)
    [tool_call] = call.tool_calls
    assert (tool_call["name"], tool_call["args"]) == ("add", {"a": 17, "b": 25})
    result = add.invoke(tool_call)
    assert isinstance(result, ToolMessage)
    assert result.tool_call_id == tool_call["id"]
    history += [call, result]
    final = llm.invoke(history, model=second)

    # A correct simulated model relays the tool result it was given.
    assert final.content == "42"
    assert final.response_metadata["model_name"] == second


@pytest.mark.parametrize("model", [GPT, CLAUDE])
def test_a_stream_carries_usage_and_trace_and_is_judged_when_it_ends(
    make_llm: Any, stored: Any, model: str
) -> None:
    llm = make_llm("stream_" + model[:3], [model], success_when=bool)
    blocking = llm.invoke(EXAMPLES[0].prompt)

    chunks = list(llm.stream(EXAMPLES[0].prompt))

    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert total.content == blocking.content
    assert total.usage_metadata == blocking.usage_metadata
    assert [c.chunk_position for c in chunks][-1] == "last"
    assert sum(1 for c in chunks if c.usage_metadata) == 1
    metadata = total.response_metadata
    assert (metadata["model_name"], metadata["finish_reason"]) == (model, "stop")
    _, streamed = stored("stream_" + model[:3])
    assert (streamed.trace_id, streamed.success) == (metadata["kalibr_trace_id"], True)


def test_async_calls_and_streams_are_routed_too(make_llm: Any, stored: Any) -> None:
    llm = make_llm("async_calls", [GPT, CLAUDE], success_when=bool)

    async def run() -> tuple[list[AIMessage], str]:
        answers = await asyncio.gather(*(llm.ainvoke(e.prompt) for e in EXAMPLES[:4]))
        chunks = [chunk async for chunk in llm.astream(EXAMPLES[4].prompt)]
        total = chunks[0]
        for chunk in chunks[1:]:
            total += chunk
        return list(answers), total.response_metadata["kalibr_trace_id"]

    answers, streamed = asyncio.run(run())

    traces = {a.response_metadata["kalibr_trace_id"] for a in answers} | {streamed}
    outcomes = stored("async_calls")
    assert {o.trace_id for o in outcomes} == traces
    assert all(o.success for o in outcomes)


def test_a_batch_reports_each_call_against_its_own_trace(make_llm: Any, stored: Any) -> None:
    llm = make_llm("batch", [GPT, CLAUDE], success_when=lambda out: "Stripe" in out)
    prompts = [e.prompt for e in EXAMPLES[:8]]

    answers = llm.batch(prompts, config={"max_concurrency": 8})

    by_trace = {o.trace_id: o for o in stored("batch")}
    assert len(by_trace) == len(prompts)
    for answer in answers:
        outcome = by_trace[answer.response_metadata["kalibr_trace_id"]]
        assert outcome.success == ("Stripe" in answer.content)
        assert outcome.model_id == answer.response_metadata["model_name"]


def test_a_provider_failure_raises_a_langchain_error_and_is_reported(
    sim: ProviderSimulator, make_llm: Any, stored: Any
) -> None:
    sim.set_script("gpt-4o-throttled", ModelScript(rate_limit=1.0))
    llm = make_llm("throttled", ["gpt-4o-throttled"])

    with pytest.raises(ModelRateLimitError) as caught:
        llm.invoke("Hello")

    assert isinstance(caught.value, RateLimitedError)  # still kalibr's error too
    [outcome] = stored("throttled")
    assert (outcome.trace_id, outcome.success) == (caught.value.trace_id, False)
    assert outcome.failure_category == "rate_limited"


def test_max_retries_reroutes_a_failed_call_and_reports_each_attempt(
    sim: ProviderSimulator, make_llm: Any, stored: Any
) -> None:
    sim.set_script(
        "gpt-4o-flaky", ModelScript(server_error=Schedule.step(at=1, before=1.0, after=0.0))
    )
    llm = make_llm("flaky", ["gpt-4o-flaky"], max_retries=1, success_when=bool)

    answer = llm.invoke("Hello")

    failed, succeeded = stored("flaky")
    assert (failed.success, failed.failure_category) == (False, "provider_error")
    assert (succeeded.success, succeeded.trace_id) == (
        True,
        answer.response_metadata["kalibr_trace_id"],
    )


def test_without_retries_a_server_error_surfaces_at_once(
    sim: ProviderSimulator, make_llm: Any, stored: Any
) -> None:
    sim.set_script("gpt-4o-down", ModelScript(server_error=1.0))
    llm = make_llm("down", ["gpt-4o-down"])

    with pytest.raises(ModelAPIError):
        list(llm.stream("Hello"))

    [outcome] = stored("down")
    assert (outcome.success, outcome.failure_category) == (False, "provider_error")


def test_the_timeout_bounds_each_call(sim: ProviderSimulator, make_llm: Any, stored: Any) -> None:
    sim.set_script("claude-slow", ModelScript(timeout=1.0, timeout_s=1.0))
    llm = make_llm("slow", ["claude-slow"], timeout=0.2)

    with pytest.raises(ModelTimeoutError) as caught:
        llm.invoke("Hello")

    assert isinstance(caught.value, ProviderTimeoutError)
    [outcome] = stored("slow")
    assert outcome.failure_category == "timeout"


def test_stop_sequences_and_max_tokens_reach_the_provider(make_llm: Any) -> None:
    llm = make_llm("limits", [GPT, CLAUDE], max_tokens=3)
    text = "Tell me about the history of the harbour and its lighthouse keepers"

    for model in (GPT, CLAUDE):
        short = llm.invoke(text, model=model)
        assert short.response_metadata["finish_reason"] == "length"
        assert short.usage_metadata["output_tokens"] <= 3

    full = llm.invoke(text, max_tokens=100)
    cut = (llm.bind(max_tokens=100, stop=["history"]) | StrOutputParser()).invoke(text)
    assert "history" in full.content
    assert "history" not in cut
