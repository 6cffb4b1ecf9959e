"""The one rooted error hierarchy of kalibr-core.

::

    KalibrError
    ├── ValidationError          (also a ValueError) bad input to a public function
    │   └── InvalidFailureCategoryError
    ├── NotFoundError            (also a LookupError) an unknown trace id, goal or path
    │   └── NoPathAvailableError every candidate path is excluded, disabled or filtered out
    ├── StoreError               the persistence layer failed (disk full, schema newer than us)
    ├── IntelligenceUnavailableError  the remote intelligence service could not answer
    ├── ConfigurationError       a missing key, an unknown provider, a bad environment variable
    └── ProviderError            a model provider call failed (chained to the SDK's error)
        ├── ProviderTimeoutError
        ├── RateLimitedError
        ├── AuthenticationError
        ├── ContextExceededError
        └── EmptyResponseError

Every error carries the context a person needs to act on it (goal, model, trace id) as
attributes, and a message that says what was wrong and what is accepted.
"""

from __future__ import annotations

from typing import Any


class KalibrError(Exception):
    """Base class of every error raised by kalibr-core.

    Attributes:
        goal: The goal concerned, when there is one.
        trace_id: The trace concerned, when there is one.
        model_id: The model concerned, when there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        goal: str | None = None,
        trace_id: str | None = None,
        model_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.goal = goal
        self.trace_id = trace_id
        self.model_id = model_id

    def context(self) -> dict[str, Any]:
        """The error's context as a dict (the keys that are set)."""
        found = {"goal": self.goal, "trace_id": self.trace_id, "model_id": self.model_id}
        return {key: value for key, value in found.items() if value is not None}


class ValidationError(KalibrError, ValueError):
    """An argument to a public function is invalid; the message says which and why.

    Attributes:
        field: The name of the offending argument.
    """

    def __init__(self, message: str, *, field: str | None = None, **context: Any) -> None:
        super().__init__(message, **context)
        self.field = field


class InvalidFailureCategoryError(ValidationError):
    """A failure category outside FAILURE_CATEGORIES; the message lists the valid ones."""


class NotFoundError(KalibrError, LookupError):
    """An unknown trace id + goal, path or goal."""


class NoPathAvailableError(NotFoundError):
    """No path satisfies the request (all excluded, disabled, or filtered by constraints)."""


class StoreError(KalibrError):
    """The persistence layer failed; the original error is chained."""


class IntelligenceUnavailableError(KalibrError):
    """The remote intelligence service did not answer in time or answered with an error."""


class ConfigurationError(KalibrError):
    """The environment or configuration is incomplete (for example a missing API key)."""


class ProviderError(KalibrError):
    """A model provider call failed. The provider SDK's exception is chained as __cause__.

    Attributes:
        failure_category: The FAILURE_CATEGORIES value this failure was reported under.
    """

    failure_category: str = "provider_error"


class ProviderTimeoutError(ProviderError):
    """The provider did not answer in time."""

    failure_category = "timeout"


class RateLimitedError(ProviderError):
    """The provider rate-limited the call (HTTP 429)."""

    failure_category = "rate_limited"


class AuthenticationError(ProviderError):
    """The provider rejected the credentials (HTTP 401/403)."""

    failure_category = "auth_error"


class ContextExceededError(ProviderError):
    """The request does not fit the model's context window."""

    failure_category = "context_exceeded"


class EmptyResponseError(ProviderError):
    """The provider answered with no content."""

    failure_category = "empty_response"
