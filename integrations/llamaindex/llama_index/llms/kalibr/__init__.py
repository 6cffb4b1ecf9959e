"""Outcome-based routing for LlamaIndex: ``Settings.llm = Kalibr(goal=..., paths=[...])``.

``Kalibr`` is a function-calling LLM whose every call a kalibr-core Router sends to the path
that works for its goal. ``KalibrEventHandler`` reports outcomes from LlamaIndex's
instrumentation (structured outputs, evaluations of query answers), and
``score_from_evaluation`` turns an evaluator's result into a score.
"""

from __future__ import annotations

from llama_index.llms.kalibr._events import KalibrRoutedEvent
from llama_index.llms.kalibr._outcomes import KalibrEventHandler, score_from_evaluation
from llama_index.llms.kalibr.base import Kalibr

__version__ = "0.1.0"

__all__ = [
    "Kalibr",
    "KalibrEventHandler",
    "KalibrRoutedEvent",
    "__version__",
    "score_from_evaluation",
]
