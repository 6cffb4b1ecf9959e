"""A LlamaIndex query engine routed by kalibr, learning from a faithfulness evaluator.

Run: ``.venv/bin/python examples/llamaindex_example.py`` (needs ``pip install -e
integrations/llamaindex``). Everything is offline: the provider simulator plays the models
(gpt-4o-mini makes up answers 40% of the time), the embeddings are LlamaIndex's MockEmbedding
and the evaluator's judge is a small local LLM. With real keys, drop the simulator and use a
real judge, e.g. ``FaithfulnessEvaluator(llm=OpenAI(model="gpt-4o"))``.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import llama_index.core.instrumentation as instrument
from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.evaluation import FaithfulnessEvaluator
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.schema import TextNode
from llama_index.llms.kalibr import Kalibr, KalibrEventHandler

import kalibr_core
from kalibr_core.simulator import ModelScript, ProviderSimulator

FACTS = {
    "Who founded Quiet Harbor?": "Mira Patel founded Quiet Harbor in Lisbon.",
    "Where is the Falcon rocket built?": "The Falcon rocket is built by Orbital Works in Denver.",
    "What does the Lantern app do?": "The Lantern app reminds gardeners to water tomatoes.",
    "How fast is the Comet train?": "The Comet train reaches three hundred kilometres per hour.",
}


class SupportJudge(CustomLLM):
    """Answers the faithfulness prompt: YES when the answer appears in the context."""

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="support-judge")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        information = prompt.rsplit("Information:", 1)[-1].split("\nContext:", 1)[0]
        context = prompt.rsplit("\nContext:", 1)[-1]
        supported = " ".join(information.split()) in " ".join(context.split())
        return CompletionResponse(text="YES" if supported else "NO")

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        yield self.complete(prompt, formatted, **kwargs)


def main() -> None:
    """Answer 60 questions; faithfulness verdicts steer the routing to the reliable model."""
    scripts = {
        "gpt-4o-mini": ModelScript(accuracy=0.6),
        "claude-haiku-4-5": ModelScript(accuracy=0.97),
    }
    with ProviderSimulator(scripts, seed=3) as sim, tempfile.TemporaryDirectory() as folder:
        os.environ.update(
            OPENAI_BASE_URL=sim.openai_base_url,
            OPENAI_API_KEY="sim",
            ANTHROPIC_BASE_URL=sim.anthropic_base_url,
            ANTHROPIC_API_KEY="sim",
        )
        intel = kalibr_core.configure(store=str(Path(folder) / "kalibr.db"), seed=5)

        # The one-line change: LlamaIndex's LLM is now routed by outcome.
        Settings.llm = Kalibr(goal="docs_qa", paths=["gpt-4o-mini", "claude-haiku-4-5"])
        Settings.embed_model = MockEmbedding(embed_dim=8)  # offline: every node scores alike
        Settings.tokenizer = str.split  # offline: no tiktoken encoding to load

        handler = KalibrEventHandler()
        instrument.get_dispatcher().add_event_handler(handler)
        evaluator = FaithfulnessEvaluator(llm=SupportJudge())

        index = VectorStoreIndex([TextNode(text=fact) for fact in FACTS.values()])
        engine = index.as_query_engine(similarity_top_k=len(FACTS))
        served: list[str] = []
        for question in list(FACTS) * 15:
            response = engine.query(question)
            verdict = evaluator.evaluate_response(query=question, response=response)
            handler.report_evaluation(
                verdict, response=response, failure_category="hallucination_detected"
            )
            served.append(str(response) == FACTS[question])

        Settings.llm.router.flush()
        for path in intel.stats("docs_qa")["paths"]:
            print(
                f"{path['model_id']:<18} {path['success_rate']:.0%} faithful over "
                f"{path['sample_count']} answers, {path['decisions']} decisions"
            )
        print(f"faithful answers, last 20 questions: {Counter(served[-20:])[True]}/20")
        intel.close()


if __name__ == "__main__":
    main()
