"""langchain-kalibr: outcome-based routing for LangChain, by changing one line.

``ChatKalibr`` is a LangChain chat model whose every call is routed by a kalibr-core Router
(``Router.as_langchain()`` returns one). Outcomes come from where LangChain already decides
whether a step worked: a callback handler reports a run's routed calls when the run ends or
raises, and ``with_outcome(parser)`` reports the parser's verdict.

Example:
    >>> from langchain_kalibr import ChatKalibr, KalibrCallbackHandler, with_outcome
    >>> llm = ChatKalibr(goal="extract_company", paths=["gpt-4o", "claude-sonnet-4-6"])
    >>> chain = prompt | llm | with_outcome(JsonOutputParser())  # doctest: +SKIP
"""

from __future__ import annotations

from langchain_kalibr._callbacks import KalibrCallbackHandler
from langchain_kalibr._chat_model import ChatKalibr
from langchain_kalibr._errors import (
    KalibrContextOverflowError,
    KalibrModelAPIError,
    KalibrModelAuthenticationError,
    KalibrModelInvalidRequestError,
    KalibrModelNotFoundError,
    KalibrModelRateLimitError,
    KalibrModelTimeoutError,
)
from langchain_kalibr._outcomes import report_traces
from langchain_kalibr._parsers import OutcomeParser, with_outcome
from langchain_kalibr._version import __version__

__all__ = [
    "ChatKalibr",
    "KalibrCallbackHandler",
    "KalibrContextOverflowError",
    "KalibrModelAPIError",
    "KalibrModelAuthenticationError",
    "KalibrModelInvalidRequestError",
    "KalibrModelNotFoundError",
    "KalibrModelRateLimitError",
    "KalibrModelTimeoutError",
    "OutcomeParser",
    "__version__",
    "report_traces",
    "with_outcome",
]
