"""The failure category of the error that ended a run or a parse."""

from __future__ import annotations

import pytest
from kalibr_core import FAILURE_CATEGORIES, RateLimitedError
from langchain_core.exceptions import OutputParserException
from langchain_core.tools import ToolException
from pydantic import BaseModel, ValidationError

from langchain_kalibr._outcomes import failure_category


class Point(BaseModel):
    x: int


def _validation_error() -> ValidationError:
    try:
        Point(x="not a number")  # type: ignore[arg-type]
    except ValidationError as exc:
        return exc
    raise AssertionError("Point accepted a string")


def _parser_error_from_validation() -> OutputParserException:
    try:
        raise OutputParserException("bad fields") from _validation_error()
    except OutputParserException as exc:
        return exc


@pytest.mark.parametrize(
    ("error", "category"),
    [
        (OutputParserException("Invalid json output"), "malformed_output"),
        (_validation_error(), "validation_failed"),
        (_parser_error_from_validation(), "validation_failed"),
        (ToolException("the API is down"), "tool_error"),
        (TimeoutError(), "timeout"),
        (RateLimitedError("429"), "rate_limited"),
        (RuntimeError("boom"), "unknown"),
    ],
)
def test_errors_map_to_failure_categories(error: BaseException, category: str) -> None:
    assert failure_category(error) == category
    assert category in FAILURE_CATEGORIES
