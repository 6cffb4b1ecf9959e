"""The simulator answers CrewAI's ReAct text format: a tool action, then a final answer."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import anthropic
import openai
import pytest

from kalibr_core.simulator import ProviderSimulator
from kalibr_core.simulator._tasks import Conversation, plan_reply, react_prompt

SCHEMA = {
    "properties": {"query": {"description": "The research query", "type": "string"}},
    "required": ["query"],
    "type": "object",
}
SYSTEM = (
    "You are Researcher. Expert\nYour personal goal is: Research things\n"
    "You ONLY have access to the following tools, and should NEVER make up tools that are "
    "not listed here:\n\n"
    f"Tool Name: research\nTool Arguments: {json.dumps(SCHEMA, indent=2)}\n"
    "Tool Description: Research a topic\n\n"
    "IMPORTANT: Use the following format in your response:\n\n```\n"
    "Thought: you should always think about what to do\n"
    "Action: the action to take, only one name of [research], just the name, exactly as it's "
    "written.\nAction Input: the input to the action, just a simple JSON object\n"
    "Observation: the result of the action\n```\n\n"
    "Once all necessary information is gathered, return the following format:\n\n```\n"
    "Thought: I now know the final answer\n"
    "Final Answer: the final answer to the original input question\n```"
)
TASK = "\nCurrent Task: Research agent frameworks\n\nBegin!\n\nThought:"
ACTION = 'Thought: I should research.\nAction: research\nAction Input: {"query": "agents"}'
RESULT = "Three frameworks lead.\nObservation: none of them is perfect."
REMINDER = "\n\nYou ONLY have access to the following tools, and should NEVER make up tools"


@pytest.fixture(scope="module")
def sim() -> Iterator[ProviderSimulator]:
    with ProviderSimulator(seed=3) as simulator:
        yield simulator


def test_a_crewai_react_prompt_is_recognised() -> None:
    react = react_prompt(SYSTEM + TASK, None)
    assert react is not None
    assert [tool.name for tool in react.tools] == ["research"]
    assert react.tools[0].parameters == SCHEMA
    assert react.observation is None


def test_the_observation_is_the_tool_result_without_crewais_reminder() -> None:
    react = react_prompt(SYSTEM + TASK, f"{ACTION}\nObservation: {RESULT}{REMINDER}")
    assert react is not None
    assert react.observation == RESULT


def test_other_prompts_are_not_react() -> None:
    assert react_prompt("What is 17 + 25?", None) is None
    # A ReAct format whose tools are not described as CrewAI does (LangChain's, say).
    langchain = "search: look things up\nThought: ...\nAction Input: ...\nFinal Answer: ..."
    assert react_prompt(langchain, None) is None


def test_without_tools_the_reply_is_a_final_answer() -> None:
    react = react_prompt("Thought: I now can give a great answer\nFinal Answer: ...", None)
    assert react is not None
    reply = plan_reply(
        Conversation(prompt="Describe the tides", react=react), True, random.Random(0)
    )
    assert reply.text.startswith("Thought: I now can give a great answer\nFinal Answer: ")
    assert "tides" in reply.text


def test_a_wrong_model_does_not_relay_the_observation() -> None:
    react = react_prompt(SYSTEM + TASK, f"{ACTION}\nObservation: {RESULT}")
    reply = plan_reply(Conversation(prompt=TASK, react=react), False, random.Random(0))
    assert reply.text.startswith("Thought: I now know the final answer\nFinal Answer: ")
    assert RESULT not in reply.text


def test_openai_gets_an_action_then_the_final_answer(sim: ProviderSimulator) -> None:
    client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sim", max_retries=0)
    messages: list[dict[str, str]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": TASK},
    ]
    first = client.chat.completions.create(
        model="react-openai", messages=messages, stop=["\nObservation:"]
    )
    text = first.choices[0].message.content or ""
    assert "Action: research\nAction Input: {" in text
    assert "query" in json.loads(text.split("Action Input:", 1)[1])
    messages += [
        {"role": "assistant", "content": f"{text}\nObservation: {RESULT}"},
        {"role": "user", "content": "Analyze the tool result."},
    ]
    second = client.chat.completions.create(model="react-openai", messages=messages)
    assert second.choices[0].message.content == (
        f"Thought: I now know the final answer\nFinal Answer: {RESULT}"
    )


def test_anthropic_gets_the_same_answers(sim: ProviderSimulator) -> None:
    client = anthropic.Anthropic(base_url=sim.anthropic_base_url, api_key="sim", max_retries=0)
    first = client.messages.create(
        model="react-claude",
        max_tokens=200,
        system=SYSTEM,
        messages=[{"role": "user", "content": TASK}],
    )
    assert "Action: research" in first.content[0].text  # type: ignore[union-attr]
    second = client.messages.create(
        model="react-claude",
        max_tokens=200,
        system=SYSTEM,
        messages=[
            {"role": "user", "content": TASK},
            {"role": "assistant", "content": f"{ACTION}\nObservation: {RESULT}"},
            {"role": "user", "content": "Analyze the tool result."},
        ],
    )
    assert second.content[0].text.endswith(f"Final Answer: {RESULT}")  # type: ignore[union-attr]
