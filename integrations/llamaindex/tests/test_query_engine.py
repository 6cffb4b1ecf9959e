"""End to end: a query engine over a local index answers through Kalibr, and its evaluations
teach the router which model to use.

The index holds a few documents embedded locally (``WordHashEmbedding``), so retrieval finds
the document that shares the question's words. LlamaIndex sends the simulator its usual RAG
prompt ("Context information is below ... Query: ... Answer:"); a correct simulated model
answers with the context sentence that best matches the question, a wrong one with an
unrelated sentence. LlamaIndex's own ``FaithfulnessEvaluator`` judges each answer, with a
local judge LLM that answers YES when the answer is found in the retrieved context.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest
from kalibr_core import Intelligence, NotFoundError
from kalibr_core.router import Router
from kalibr_core.simulator import ModelScript, ProviderSimulator, check_answer
from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.base.llms.types import (
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import Field
from llama_index.core.evaluation import FaithfulnessEvaluator
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.llm import LLMChatStartEvent
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.schema import TextNode

from llama_index.llms.kalibr import Kalibr, KalibrEventHandler

pytestmark = pytest.mark.simulator

FACTS = [
    "Mira Patel founded Quiet Harbor, a company that makes noise-cancelling windows.",
    "The Falcon rocket is built by Orbital Works in Denver.",
    "Quiet Harbor windows cut street noise by forty decibels.",
    "Orbital Works employs three hundred engineers in Colorado.",
    "The Lantern app reminds gardeners when to water their tomatoes.",
]
QUESTIONS = {
    "Who founded Quiet Harbor?": FACTS[0],
    "Where is the Falcon rocket built?": FACTS[1],
    "How many engineers does Orbital Works employ?": FACTS[3],
    "What does the Lantern app remind gardeners to do?": FACTS[4],
}


class SupportJudge(CustomLLM):
    """A local judge for FaithfulnessEvaluator: YES when the information is in the context."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="support-judge")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        # The template shows two examples first: the last Information/Context pair is ours.
        information = prompt.rsplit("Information:", 1)[-1].split("\nContext:", 1)[0]
        context = prompt.rsplit("\nContext:", 1)[-1].rsplit("\nAnswer:", 1)[0]
        supported = " ".join(information.split()) in " ".join(context.split())
        return CompletionResponse(text="YES" if supported else "NO")

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        yield self.complete(prompt, formatted, **kwargs)


class PromptSpy(BaseEventHandler):
    """Keeps the last user message LlamaIndex sent to an LLM."""

    prompts: list[str] = Field(default_factory=list)

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, LLMChatStartEvent):
            self.prompts.append(event.messages[-1].content or "")


@pytest.fixture
def index() -> VectorStoreIndex:
    """The documents, one node each, embedded with Settings.embed_model (local)."""
    return VectorStoreIndex([TextNode(text=fact) for fact in FACTS])


@pytest.fixture
def spy() -> Any:
    root = get_dispatcher()
    instance = PromptSpy()
    root.add_event_handler(instance)
    yield instance
    root.event_handlers = [h for h in root.event_handlers if h is not instance]


@pytest.fixture
def judge() -> FaithfulnessEvaluator:
    return FaithfulnessEvaluator(llm=SupportJudge())


def test_the_query_engine_answers_through_kalibr_from_the_retrieved_context(
    sim_env: ProviderSimulator, default_intel: Intelligence, index: VectorStoreIndex, spy: Any
) -> None:
    Settings.llm = Kalibr(goal="docs_qa", paths=["gpt-4o-mini", "claude-haiku-4-5"])
    engine = index.as_query_engine(similarity_top_k=2)

    response = engine.query("Who founded Quiet Harbor?")

    [prompt] = spy.prompts
    assert prompt.startswith("Context information is below.")
    assert "Query: Who founded Quiet Harbor?" in prompt
    assert str(response) == FACTS[0]
    assert check_answer(prompt, str(response))
    assert FACTS[0] in [node.get_content() for node in response.source_nodes]


def test_faithfulness_evaluations_teach_the_router_to_avoid_the_hallucinating_model(
    sim_env: ProviderSimulator,
    intel: Intelligence,
    index: VectorStoreIndex,
    handler: KalibrEventHandler,
    judge: FaithfulnessEvaluator,
) -> None:
    sim_env.set_script("rag-liar", ModelScript(accuracy=0.0))
    sim_env.set_script("rag-faithful", ModelScript(accuracy=1.0))

    def ask_and_judge(engine: Any, question: str) -> list[str]:
        response = engine.query(question)
        result = judge.evaluate_response(query=question, response=response)
        assert result.passing == (str(response) == QUESTIONS[question])
        return handler.report_evaluation(
            result, response=response, failure_category="hallucination_detected"
        )

    router = Router("grounded_answers", ["rag-liar", "rag-faithful"], intelligence=intel)
    reported: list[str] = []
    # One round on each model first (forced, and still learned from): a Thompson draw can
    # settle on the faithful model before it ever tries the liar, leaving nothing to learn.
    rounds = [
        (Kalibr(router=router, additional_kwargs={"force_model": model}), 1)
        for model in ("rag-liar", "rag-faithful")
    ]
    for llm, times in [*rounds, (Kalibr(router=router), 13)]:
        Settings.llm = llm
        engine = index.as_query_engine(similarity_top_k=2)
        for question in list(QUESTIONS) * times:
            reported += ask_and_judge(engine, question)

    intel.flush()
    outcomes = {
        o.trace_id: o for o in intel.store.outcomes_in_window(intel.tenant, "grounded_answers", 0)
    }
    assert len(outcomes) == len(reported) == 60
    verdicts = {(o.model_id, o.success, o.score, o.failure_category) for o in outcomes.values()}
    assert verdicts == {
        ("rag-faithful", True, 1.0, None),
        ("rag-liar", False, 0.0, "hallucination_detected"),
    }
    served = [outcomes[trace_id].model_id for trace_id in reported]
    assert Counter(served[-20:])["rag-faithful"] >= 16


@pytest.mark.asyncio
async def test_async_and_streaming_queries_are_evaluated_and_reported(
    sim_env: ProviderSimulator,
    make_llm: Any,
    stored: Any,
    index: VectorStoreIndex,
    handler: KalibrEventHandler,
    judge: FaithfulnessEvaluator,
) -> None:
    llm = make_llm("async_qa", ["gpt-4o-mini"])
    engine = index.as_query_engine(llm=llm, similarity_top_k=2)
    question = "Where is the Falcon rocket built?"

    response = await engine.aquery(question)
    result = await judge.aevaluate_response(query=question, response=response)
    [first] = handler.report_evaluation(result)  # found by the result's query and answer

    streaming = index.as_query_engine(llm=llm, similarity_top_k=2, streaming=True)
    streamed = await streaming.aquery(question)
    text = "".join([token async for token in streamed.async_response_gen()])
    [second] = handler.report_query(streamed, success=text == QUESTIONS[question], score=0.9)

    assert str(response) == text == QUESTIONS[question]
    outcomes = {o.trace_id: (o.success, o.score) for o in stored("async_qa")}
    assert outcomes == {first: (True, 1.0), second: (True, 0.9)}


def test_a_refining_query_gets_one_outcome_per_model_used(
    sim_env: ProviderSimulator,
    make_llm: Any,
    stored: Any,
    index: VectorStoreIndex,
    handler: KalibrEventHandler,
) -> None:
    # One node per LLM call: "refine" asks once per retrieved node.
    llm = make_llm("refined_qa", ["gpt-4o-mini", "claude-haiku-4-5"])
    engine = index.as_query_engine(llm=llm, similarity_top_k=3, response_mode="refine")
    question = "Who founded Quiet Harbor?"

    engine.query(question)
    trace_ids = handler.report_query(question, success=False, failure_category="user_unsatisfied")

    assert len(trace_ids) == 3
    outcomes = stored("refined_qa")
    models = {o.model_id for o in outcomes}
    assert 1 <= len(outcomes) == len(models) <= 2  # the refine steps share their query's verdict
    assert {o.trace_id for o in outcomes} <= set(trace_ids)
    assert all(o.failure_category == "user_unsatisfied" for o in outcomes)
    with pytest.raises(NotFoundError, match="reported once"):
        handler.report_query(question, success=True)


def test_queries_without_the_handler_cannot_be_reported_by_evaluation(
    sim_env: ProviderSimulator, make_llm: Any, index: VectorStoreIndex, judge: FaithfulnessEvaluator
) -> None:
    engine = index.as_query_engine(llm=make_llm("unattached", ["gpt-4o-mini"]))
    response = engine.query("Who founded Quiet Harbor?")
    result = judge.evaluate_response(query="Who founded Quiet Harbor?", response=response)

    with pytest.raises(NotFoundError, match=re.escape("add_event_handler")):
        KalibrEventHandler().report_evaluation(result, response=response)


def test_a_streaming_query_is_followed_while_its_answer_is_read(
    sim_env: ProviderSimulator,
    make_llm: Any,
    stored: Any,
    index: VectorStoreIndex,
    handler: KalibrEventHandler,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = index.as_query_engine(llm=make_llm("streamed_qa", ["gpt-4o-mini"]), streaming=True)
    question = "Who founded Quiet Harbor?"

    early = engine.query(question)
    assert handler.report_query(early, success=True) == []  # nothing asked of the LLM yet
    assert "read a streaming answer" in caplog.text

    streamed = engine.query(question)
    answer = "".join(streamed.response_gen)
    [trace_id] = handler.report_query(streamed, success=answer == QUESTIONS[question])

    assert [(o.trace_id, o.success) for o in stored("streamed_qa")] == [(trace_id, True)]
