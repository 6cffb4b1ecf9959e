"""kalibr provider errors are raised as LangChain model errors that are still kalibr errors."""

from __future__ import annotations

import pytest
from kalibr_core import (
    AuthenticationError,
    ContextExceededError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
)
from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAPIError,
    ModelAuthenticationError,
    ModelInvalidRequestError,
    ModelNotFoundError,
    ModelRateLimitError,
    ModelTimeoutError,
)

from langchain_kalibr._errors import is_retryable, to_langchain_error


@pytest.mark.parametrize(
    ("kalibr_error", "langchain_error", "retryable"),
    [
        (ProviderTimeoutError, ModelTimeoutError, True),
        (RateLimitedError, ModelRateLimitError, True),
        (AuthenticationError, ModelAuthenticationError, False),
        (ContextExceededError, ContextOverflowError, False),
        (ProviderError, ModelAPIError, True),
    ],
)
def test_each_failure_maps_to_its_langchain_error(
    kalibr_error: type[ProviderError], langchain_error: type[Exception], retryable: bool
) -> None:
    original = kalibr_error("failed", goal="g", trace_id="t", model_id="m")

    mapped = to_langchain_error(original)

    assert isinstance(mapped, langchain_error)
    assert isinstance(mapped, kalibr_error)
    assert (mapped.goal, mapped.trace_id, mapped.model_id) == ("g", "t", "m")
    assert is_retryable(mapped) is retryable


@pytest.mark.parametrize(
    ("status", "langchain_error"),
    [(400, ModelInvalidRequestError), (422, ModelInvalidRequestError), (404, ModelNotFoundError)],
)
def test_a_rejected_request_is_not_retried(status: int, langchain_error: type[Exception]) -> None:
    class StatusError(Exception):
        status_code = status

    original = ProviderError("rejected", goal="g")
    original.__cause__ = StatusError()  # the SDK error the Router chains

    mapped = to_langchain_error(original)

    assert isinstance(mapped, langchain_error)
    assert isinstance(mapped, ProviderError)
    assert not is_retryable(mapped)
