"""KalibrCallbackHandler: a chain or agent run's end is the outcome of its routed calls."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kalibr_core.simulator import company_extraction_examples
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.output_parsers import JsonOutputParser, StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig, RunnableLambda, chain
from langchain_core.tools import tool

from langchain_kalibr import KalibrCallbackHandler

pytestmark = pytest.mark.simulator

GPT, CLAUDE = "gpt-4o-mini", "claude-haiku-4-5"
EXAMPLES = company_extraction_examples()
PROMPT = ChatPromptTemplate.from_template("{text}")
STORY = "Tell me about the history of the harbour and its lighthouse keepers"


def trace_of(message: BaseMessage) -> str:
    trace = message.response_metadata["kalibr_trace_id"]
    assert isinstance(trace, str)
    return trace


def holds_nothing(handler: KalibrCallbackHandler) -> bool:
    """No run is left in the handler's books once every run has ended (no leak)."""
    return not (handler._root_of or handler._open or handler._traces)


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_a_run_that_returns_reports_its_call_as_a_success(make_llm: Any, stored: Any) -> None:
    llm = make_llm("chain_ok", [GPT, CLAUDE])
    seen: list[AIMessage] = []
    pipeline = PROMPT | llm | RunnableLambda(lambda m: seen.append(m) or m) | StrOutputParser()

    pipeline.invoke({"text": EXAMPLES[0].prompt}, config={"callbacks": [KalibrCallbackHandler()]})

    [outcome] = stored("chain_ok")
    assert (outcome.trace_id, outcome.success) == (trace_of(seen[0]), True)
    assert outcome.model_id == seen[0].response_metadata["model_name"]


def test_a_run_that_raises_reports_the_error_category(make_llm: Any, stored: Any) -> None:
    """A parser that cannot read the answer fails the run: malformed_output."""
    llm = make_llm("chain_fails", [GPT])
    pipeline = PROMPT | llm | JsonOutputParser()

    with pytest.raises(Exception, match="Invalid json output"):
        pipeline.invoke({"text": STORY}, config={"callbacks": [KalibrCallbackHandler()]})

    [outcome] = stored("chain_fails")
    assert (outcome.success, outcome.failure_category) == (False, "malformed_output")
    assert "OutputParserException" in (outcome.failure_reason or "")


def test_an_agent_run_gets_one_outcome_per_path_it_used(make_llm: Any, stored: Any) -> None:
    """A tool loop on one path and a review on the other: three calls, two outcomes."""
    llm = make_llm("agent", [GPT, CLAUDE]).bind_tools([add])
    calls: list[AIMessage] = []

    @chain
    def agent(question: str, config: RunnableConfig) -> str:
        history: list[Any] = [HumanMessage(question)]
        while not calls or calls[-1].tool_calls:
            calls.append(llm.invoke(history, config, model=GPT))
            history += [calls[-1], *(add.invoke(c, config) for c in calls[-1].tool_calls)]
        review = f"Check this answer to {question!r}: {calls[-1].content}"
        calls.append(llm.invoke(review, config, model=CLAUDE, tool_choice="none"))
        return str(calls[-1].content)

    agent.invoke("What is 17 + 25?", config={"callbacks": [KalibrCallbackHandler()]})
    llm.invoke("What is 17 + 25?", model=CLAUDE)  # outside the run: not reported

    assert [(c.response_metadata["model_name"], bool(c.tool_calls)) for c in calls] == [
        (GPT, True),
        (GPT, False),
        (CLAUDE, False),
    ]
    outcomes = stored("agent")
    assert [(o.trace_id, o.model_id, o.success) for o in outcomes] == [
        (trace_of(calls[0]), GPT, True),
        (trace_of(calls[2]), CLAUDE, True),
    ]


def test_one_handler_reports_concurrent_runs_against_their_own_calls(
    make_llm: Any, stored: Any
) -> None:
    llm = make_llm("concurrent", [GPT, CLAUDE])
    failing: set[str] = set()

    def check(message: AIMessage) -> str:
        if "Stripe" not in str(message.content):
            failing.add(trace_of(message))
            raise ValueError("not the company we wanted")
        return str(message.content)

    pipeline = PROMPT | llm | RunnableLambda(check)
    inputs = [{"text": e.prompt} for e in EXAMPLES]
    handler = KalibrCallbackHandler()

    results = pipeline.batch(
        inputs, config={"callbacks": [handler], "max_concurrency": 6}, return_exceptions=True
    )

    outcomes = stored("concurrent")
    assert len(outcomes) == len(EXAMPLES)
    assert failing == {o.trace_id for o in outcomes if not o.success}
    assert 0 < len(failing) < len(EXAMPLES)
    assert sum(isinstance(r, ValueError) for r in results) == len(failing)
    assert all(o.failure_category == "unknown" for o in outcomes if not o.success)
    assert holds_nothing(handler)


def test_concurrent_async_runs_report_their_own_calls(make_llm: Any, stored: Any) -> None:
    llm = make_llm("async_runs", [GPT, CLAUDE])
    handler = KalibrCallbackHandler(success_when=lambda output: "Stripe" in output)
    pipeline = PROMPT | llm | StrOutputParser()

    async def run() -> list[str]:
        return await pipeline.abatch(
            [{"text": e.prompt} for e in EXAMPLES[:6]], config={"callbacks": [handler]}
        )

    answers = asyncio.run(run())

    outcomes = stored("async_runs")
    assert sorted(o.success for o in outcomes) == sorted("Stripe" in a for a in answers)
    assert len(outcomes) == 6


def test_success_when_judges_the_run_output(make_llm: Any, stored: Any) -> None:
    llm = make_llm("judged_run", [GPT])
    handler = KalibrCallbackHandler(success_when=lambda output: output == "42")
    pipeline = PROMPT | llm | StrOutputParser()

    pipeline.invoke({"text": "What is 17 + 25?"}, config={"callbacks": [handler]})
    pipeline.invoke({"text": "What is 17 + 26?"}, config={"callbacks": [handler]})

    right, wrong = stored("judged_run")
    assert right.success
    assert (wrong.success, wrong.failure_category) == (False, "validation_failed")


def test_a_call_already_judged_by_success_when_keeps_its_outcome(
    make_llm: Any, stored: Any
) -> None:
    """The Router's success_when reported the call; the run's end neither repeats nor warns."""
    llm = make_llm("prejudged", [GPT], success_when=lambda output: False)

    (PROMPT | llm).invoke({"text": STORY}, config={"callbacks": [KalibrCallbackHandler()]})

    [outcome] = stored("prejudged")
    assert (outcome.success, outcome.failure_category) == (False, "validation_failed")


def test_a_model_call_run_on_its_own_is_reported_when_it_returns(
    make_llm: Any, stored: Any
) -> None:
    llm = make_llm("single_call", [CLAUDE])

    answer = llm.invoke(STORY, config={"callbacks": [KalibrCallbackHandler()]})

    [outcome] = stored("single_call")
    assert (outcome.trace_id, outcome.success) == (trace_of(answer), True)


def test_a_streamed_run_is_reported_when_the_stream_ends(make_llm: Any, stored: Any) -> None:
    llm = make_llm("streamed_run", [GPT, CLAUDE])
    handler = KalibrCallbackHandler(success_when=lambda output: "Stripe" in output)
    pipeline = PROMPT | llm | StrOutputParser()

    async def astreamed() -> str:
        config: RunnableConfig = {"callbacks": [handler]}
        return "".join([p async for p in pipeline.astream({"text": STORY}, config=config)])

    text = "".join(pipeline.stream({"text": EXAMPLES[0].prompt}, config={"callbacks": [handler]}))
    other = asyncio.run(astreamed())

    assert "Stripe" in text
    assert "Stripe" not in other
    assert [o.success for o in stored("streamed_run")] == [True, False]
    assert holds_nothing(handler)


def test_a_stream_left_early_gives_no_verdict(make_llm: Any, stored: Any) -> None:
    llm = make_llm("left_early", [GPT])
    pipeline = PROMPT | llm | StrOutputParser()

    handler = KalibrCallbackHandler()

    for _ in pipeline.stream({"text": STORY}, config={"callbacks": [handler]}):
        break

    assert stored("left_early") == []
    assert holds_nothing(handler)
