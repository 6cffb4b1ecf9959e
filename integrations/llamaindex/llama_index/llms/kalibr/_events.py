"""The instrumentation event that announces each routed call to LlamaIndex's dispatcher."""

from __future__ import annotations

from kalibr_core.router import Router
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation.events import BaseEvent


class KalibrRoutedEvent(BaseEvent):
    """A call of a :class:`~llama_index.llms.kalibr.Kalibr` LLM was routed to a path.

    Dispatched when the path is chosen (for a stream, before its first chunk), in the context of
    the caller, so handlers can attribute the call to the query or structured prediction that
    made it. :class:`~llama_index.llms.kalibr.KalibrEventHandler` reports outcomes this way.

    Attributes:
        goal: The router's goal.
        trace_id: The call's trace (``Router.report(trace_id=...)``).
        model: The model that answered (None for a stream, known from its chunks).
        router: The router that issued the trace; excluded from serialization.
    """

    goal: str
    trace_id: str
    model: str | None = None
    router: Router = Field(exclude=True, repr=False)

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "KalibrRoutedEvent"
