"""success_when in a tool loop: the answering turn is judged, the tool-call turns are not."""

from __future__ import annotations

from typing import Any

import pytest

from kalibr_core.simulator import ProviderSimulator

SUM = "What is 17 + 25?"
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}

pytestmark = pytest.mark.simulator


def test_only_the_answering_turn_is_judged_and_it_covers_the_tool_turn(
    sim_env: ProviderSimulator, make_router: Any, stored: Any
) -> None:
    judged: list[str] = []

    def success_when(output: str) -> bool:
        judged.append(output)
        return "42" in output

    router = make_router(
        "tool_loop", [{"model": "gpt-4o", "tools": [ADD]}], success_when=success_when
    )
    conversation: list[dict[str, Any]] = [{"role": "user", "content": SUM}]
    first = router.completion(conversation)
    [call] = first.choices[0].message.tool_calls
    assert stored("tool_loop") == []  # a tool-call turn alone is not an outcome
    conversation.append(first.choices[0].message.model_dump(exclude_none=True))
    conversation.append({"role": "tool", "tool_call_id": call.id, "content": "42"})
    final = router.completion(conversation, force_model="gpt-4o")

    [outcome] = stored("tool_loop")
    assert outcome.trace_id == final.kalibr_trace_id
    assert outcome.success is True
    assert judged == [final.choices[0].message.content]
    with pytest.warns(UserWarning, match="already reported"):
        router.report(success=False)  # both turns are accounted for: nothing left to report
    assert len(stored("tool_loop")) == 1
