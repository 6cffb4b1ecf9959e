"""ChatKalibr's parameters, tool binding and structured output (no provider is called)."""

from __future__ import annotations

from typing import Any

import pytest
from kalibr_core import Intelligence
from langchain_core.runnables import RunnableBinding, RunnableSequence
from langchain_core.tools import tool
from pydantic import BaseModel

from langchain_kalibr import ChatKalibr, OutcomeParser


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


class Company(BaseModel):
    """A company mentioned in a text."""

    name: str


@pytest.fixture
def llm(intel: Intelligence) -> ChatKalibr:
    return ChatKalibr(goal="unit", paths=["gpt-4o", "claude-sonnet-4-6"], intelligence=intel)


def _bound(runnable: Any) -> dict[str, Any]:
    assert isinstance(runnable, RunnableBinding)
    return dict(runnable.kwargs)


def test_request_parameters_merge_model_and_call_settings(intel: Intelligence) -> None:
    llm = ChatKalibr(
        goal="unit",
        paths=["gpt-4o"],
        intelligence=intel,
        temperature=0.3,
        max_tokens=50,
        timeout=9,
        stop_sequences=["END"],
        model_kwargs={"top_p": 0.9},
    )

    request = llm._request([], None, {"temperature": 0.7, "model": "gpt-4o-mini", "seed": 1})

    assert request.force_model == "gpt-4o-mini"
    assert request.max_tokens == 50
    assert request.params == {
        "top_p": 0.9,
        "temperature": 0.7,
        "timeout": 9,
        "stop": ["END"],
        "seed": 1,
    }
    assert llm._request([], ["STOP"], {}).params["stop"] == ["STOP"]


def test_langsmith_params_name_the_goal_or_the_forced_model(intel: Intelligence) -> None:
    llm = ChatKalibr(goal="unit", paths=["gpt-4o"], intelligence=intel, temperature=0)

    assert llm._get_ls_params(stop=["x"]) == {
        "ls_provider": "kalibr",
        "ls_model_name": "unit",
        "ls_model_type": "chat",
        "ls_temperature": 0,
        "ls_stop": ["x"],
    }
    assert llm._get_ls_params(model="gpt-4o")["ls_model_name"] == "gpt-4o"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("any", "required"),
        (True, "required"),
        ("required", "required"),
        ("auto", "auto"),
        ("none", "none"),
        ("weather", {"type": "function", "function": {"name": "weather"}}),
    ],
)
def test_tool_choice_takes_langchain_values(llm: ChatKalibr, choice: Any, expected: Any) -> None:
    bound = _bound(llm.bind_tools([add, weather], tool_choice=choice))

    assert bound["tool_choice"] == expected
    assert [t["function"]["name"] for t in bound["tools"]] == ["add", "weather"]


def test_an_unknown_tool_choice_is_refused(llm: ChatKalibr) -> None:
    with pytest.raises(ValueError, match="not 'auto'"):
        llm.bind_tools([add], tool_choice="subtract")


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
def test_structured_output_reports_through_its_parser(llm: ChatKalibr, method: str) -> None:
    chain = llm.with_structured_output(Company, method=method)  # type: ignore[arg-type]

    assert isinstance(chain, RunnableSequence)
    assert isinstance(chain.last, OutcomeParser)
    bound = _bound(chain.first)
    assert bound["ls_structured_output_format"]["kwargs"]["method"] == method
    if method == "json_schema":
        assert bound["response_format"]["json_schema"]["schema"]["title"] == "Company"
    if method == "function_calling":
        assert bound["tool_choice"] == {"type": "function", "function": {"name": "Company"}}


def test_structured_output_without_outcome_reporting(llm: ChatKalibr) -> None:
    chain = llm.with_structured_output(Company, report_outcome=False)

    assert isinstance(chain, RunnableSequence)
    assert not isinstance(chain.last, OutcomeParser)


def test_an_unknown_structured_output_method_is_refused(llm: ChatKalibr) -> None:
    with pytest.raises(ValueError, match="method must be"):
        llm.with_structured_output(Company, method="xml")  # type: ignore[arg-type]
