"""examples/langchain_example.py runs offline and shows the chain learning."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[4] / "examples" / "langchain_example.py"


def test_the_example_routes_most_traffic_to_the_accurate_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The example points the SDKs at a simulator of its own: give the session's back after.
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.setenv(name, os.environ[name])
    spec = importlib.util.spec_from_file_location("langchain_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    module.main()

    lines = capsys.readouterr().out.splitlines()
    decisions = {
        (goal, line.split()[0]): int(line.split(",")[-1].split()[0])
        for goal, line in _by_goal(lines)
    }
    for goal in ("extract_company", "extract_company_text"):
        assert decisions[goal, "claude-haiku-4-5"] > 2 * decisions[goal, "gpt-4o-mini"]


def _by_goal(lines: list[str]) -> list[tuple[str, str]]:
    goal, rows = "", []
    for line in lines:
        if line.endswith(":"):
            goal = line[:-1]
        else:
            rows.append((goal, line))
    return rows
