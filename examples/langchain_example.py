"""A LangChain chain routed by outcomes, over the built-in provider simulator (no API keys).

Run: ``.venv/bin/python examples/langchain_example.py`` (needs ``pip install -e
integrations/langchain``). Point ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL`` at real providers
(and set their keys) to run the same chain for real.

The one line that changes in a LangChain app::

    llm = ChatOpenAI(model="gpt-4o-mini")                                    # before
    llm = ChatKalibr(goal="extract_company", paths=["gpt-4o-mini", "claude-haiku-4-5"])  # after

The outcomes come from where the chain already decides whether a step worked: the output
parser (``with_outcome``) or the run's end (``KalibrCallbackHandler``).
"""

from __future__ import annotations

import contextlib
import os

from langchain_core.exceptions import OutputParserException
from langchain_core.output_parsers import JsonOutputParser, StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_kalibr import ChatKalibr, KalibrCallbackHandler, with_outcome

from kalibr_core import Intelligence
from kalibr_core.simulator import (
    ModelScript,
    ProviderSimulator,
    check_answer,
    company_extraction_examples,
)

PROMPT = ChatPromptTemplate.from_messages(
    [("system", 'Answer with JSON {{"company": ...}}.'), ("human", "{sentence}")]
)


def print_stats(intel: Intelligence, goal: str) -> None:
    """Each path's success rate and traffic, as the Intelligence learnt them."""
    intel.flush()
    print(f"{goal}:")
    for path in intel.stats(goal)["paths"]:
        print(
            f"  {path['model_id']:<18} {path['success_rate']:.0%} over {path['sample_count']}"
            f" outcomes, {path['decisions']} decisions"
        )


def main() -> None:
    """Route company extraction between two models; gpt-4o-mini is right less often."""
    scripts = {
        "gpt-4o-mini": ModelScript(accuracy=0.5),
        "claude-haiku-4-5": ModelScript(accuracy=0.95),
    }
    with ProviderSimulator(scripts, seed=2) as sim:
        os.environ.update(
            OPENAI_BASE_URL=sim.openai_base_url,
            OPENAI_API_KEY="sim",
            ANTHROPIC_BASE_URL=sim.anthropic_base_url,
            ANTHROPIC_API_KEY="sim",
        )
        intel = Intelligence(":memory:", seed=4)  # default: a SQLite file under ~/.kalibr
        paths = ["gpt-4o-mini", "claude-haiku-4-5"]
        examples = company_extraction_examples() * 6

        # 1. The parser decides: with_outcome reports each call's verdict.
        llm = ChatKalibr(goal="extract_company", paths=paths, intelligence=intel)
        expected = {"company": ""}
        parser = with_outcome(JsonOutputParser(), validator=lambda out: out == expected)
        chain = PROMPT | llm | parser
        for example in examples:
            expected["company"] = example.company
            with contextlib.suppress(OutputParserException):  # reported, then raised
                chain.invoke({"sentence": example.prompt})
        print_stats(intel, "extract_company")

        # 2. The run decides: the callback handler reports when each run ends.
        llm = ChatKalibr(goal="extract_company_text", paths=paths, intelligence=intel)
        chain = PROMPT | llm | StrOutputParser()
        for example in examples:
            handler = KalibrCallbackHandler(
                success_when=lambda out, prompt=example.prompt: check_answer(prompt, out)
            )
            chain.invoke({"sentence": example.prompt}, config={"callbacks": [handler]})
        print_stats(intel, "extract_company_text")
        intel.close()


if __name__ == "__main__":
    main()
