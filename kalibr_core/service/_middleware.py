"""ASGI middleware of the service: a request body limit and a JSON answer to unexpected errors."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kalibr_core.service._errors import INTERNAL_MESSAGE, error_response

logger = logging.getLogger("kalibr_core.service")


async def answer_unexpected_errors(
    call: Callable[[Send], Awaitable[None]], scope: Scope, receive: Receive, send: Send
) -> None:
    """Run ``call(send)``; an unexpected exception is logged once and answered with a JSON 500.

    Once the answer has started it is too late for a clean one: the exception propagates and
    the server closes the connection.
    """
    started = False

    async def tracking_send(message: Message) -> None:
        nonlocal started
        if message["type"] == "http.response.start":
            started = True
        await send(message)

    try:
        await call(tracking_send)
    except Exception:
        logger.exception("%s %s failed", scope.get("method"), scope.get("path"))
        if started:
            raise
        await error_response(500, "internal_error", INTERNAL_MESSAGE)(scope, receive, send)


class CatchAllMiddleware:
    """Answers unexpected exceptions with a JSON 500, logged once with the traceback.

    Starlette's own handler for ``Exception`` re-raises after answering (the server then logs
    the error a second time); this middleware sits inside it and ends the exception here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await answer_unexpected_errors(
            lambda tracked: self.app(scope, receive, tracked), scope, receive, send
        )


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413 (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                response = error_response(413, "payload_too_large", self._too_large())
                await response(scope, receive, send)
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI re-raises an HTTPException met while reading the body; the
                    # service's handler turns it into the JSON 413.
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, limited_receive, send)
