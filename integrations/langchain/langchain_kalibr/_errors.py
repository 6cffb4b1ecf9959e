"""kalibr provider errors as LangChain model errors.

A routed call that fails raises kalibr's :class:`~kalibr_core.ProviderError` (already reported
as a failure of the path that served it). :class:`~langchain_kalibr.ChatKalibr` re-raises it as
the matching ``langchain_core.exceptions.ModelError``, in a class that is also the kalibr
error, so ``except ModelRateLimitError`` and ``except kalibr_core.RateLimitedError`` both work
(as LangChain asks of provider integrations)::

    ProviderError                  -> KalibrModelAPIError         (ModelAPIError)
    ├── ProviderTimeoutError       -> KalibrModelTimeoutError     (ModelTimeoutError)
    ├── RateLimitedError           -> KalibrModelRateLimitError   (ModelRateLimitError)
    ├── AuthenticationError        -> KalibrModelAuthenticationError
    ├── ContextExceededError       -> KalibrContextOverflowError  (ContextOverflowError)
    └── a 400 / 404 / 422 answer   -> KalibrModelInvalidRequestError / KalibrModelNotFoundError

``ModelError.is_retryable`` tells :class:`ChatKalibr` which failures ``max_retries`` re-routes.
"""

from __future__ import annotations

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
    ModelError,
    ModelInvalidRequestError,
    ModelNotFoundError,
    ModelRateLimitError,
    ModelTimeoutError,
)


class KalibrModelAPIError(ProviderError, ModelAPIError):
    """A routed provider call failed (HTTP 5xx, a broken answer, an unclassified error)."""


class KalibrModelInvalidRequestError(ProviderError, ModelInvalidRequestError):
    """The provider rejected the routed request as invalid (HTTP 400 or 422)."""


class KalibrModelNotFoundError(ProviderError, ModelNotFoundError):
    """The provider does not know the routed model (HTTP 404)."""


class KalibrModelTimeoutError(ProviderTimeoutError, ModelTimeoutError):
    """The routed provider call timed out."""


class KalibrModelRateLimitError(RateLimitedError, ModelRateLimitError):
    """The provider rate-limited the routed call (HTTP 429)."""


class KalibrModelAuthenticationError(AuthenticationError, ModelAuthenticationError):
    """The provider rejected the credentials of the routed call (HTTP 401 or 403)."""


class KalibrContextOverflowError(ContextExceededError, ContextOverflowError):
    """The request does not fit the routed model's context window."""


_BY_KIND: tuple[tuple[type[ProviderError], type[ProviderError]], ...] = (
    (ProviderTimeoutError, KalibrModelTimeoutError),
    (RateLimitedError, KalibrModelRateLimitError),
    (AuthenticationError, KalibrModelAuthenticationError),
    (ContextExceededError, KalibrContextOverflowError),
)
_BY_STATUS: dict[int, type[ProviderError]] = {
    400: KalibrModelInvalidRequestError,
    404: KalibrModelNotFoundError,
    422: KalibrModelInvalidRequestError,
}


def to_langchain_error(error: ProviderError) -> ProviderError:
    """The LangChain ``ModelError`` (that is also ``error``'s kalibr class) for ``error``.

    The caller raises it ``from error``; goal, trace id and model id are kept.
    """
    if isinstance(error, ModelError):
        return error
    cls = next((mapped for kind, mapped in _BY_KIND if isinstance(error, kind)), None)
    if cls is None:
        cause = error.__cause__
        status = getattr(cause, "status_code", None)
        cls = _BY_STATUS.get(status, KalibrModelAPIError) if isinstance(status, int) else None
        cls = cls or KalibrModelAPIError
    return cls(error.message, goal=error.goal, trace_id=error.trace_id, model_id=error.model_id)


def is_retryable(error: BaseException) -> bool:
    """Whether re-routing the call may succeed (rate limits, 5xx, timeouts, connections)."""
    return isinstance(error, ModelError) and error.is_retryable
