"""The direct path of the busy routes: well-formed JSON POSTs answered without FastAPI's machinery.

A profile of the service under load showed the framework, not the engine, taking most of each
request: FastAPI resolved the dependencies of a route (the Intelligence, the tenant and its two
credential headers: five nodes, walked per request), and the request crossed eight middleware
layers, two routers and three exit stacks before reaching ``decide``. :class:`FastPath` stands
in front of the app (the service app calls it first) and answers the routes shaped
``(body: SomeRequest, intel: Intel, tenant: Tenant)`` (decide, report-outcome and the other
JSON POSTs) itself: it reads the body, validates it with the route's request model,
authenticates, calls the route's own function, and validates and serializes the answer with the
route's response model, as FastAPI does.

Only well-formed requests are served this way. Anything else (a missing or wrong credential, a
content type other than JSON, a body that does not parse or validate, a body over the size
limit, a mounted app) is passed on, with what was read of its body, to the whole app, so every
refusal keeps its status, shape and order of checks. An error raised by the route's function is
answered by the app's exception handlers, as it would be on the normal path, and an unexpected
one by the same JSON 500 as the app's catch-all. The routes stay declared as usual: the OpenAPI
document does not change. FastAPI's telemetry spans are not recorded for requests served here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import ResponseValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kalibr_core.service._auth import KeyAuthenticator, authenticate
from kalibr_core.service._dependencies import served_intelligence
from kalibr_core.service._middleware import answer_unexpected_errors

_API_KEY = b"x-api-key"
_TENANT = b"x-tenant-id"
_CONTENT_TYPE = b"content-type"
_CONTENT_LENGTH = b"content-length"
_WANTED = (_API_KEY, _TENANT, _CONTENT_TYPE, _CONTENT_LENGTH)


@dataclass(frozen=True, slots=True)
class _Direct:
    """How to call one route directly: its function, its models, its parameters' names."""

    endpoint: Callable[..., Any]
    is_coroutine: bool
    body_name: str
    body_type: type[BaseModel]
    intel_name: str
    tenant_name: str
    answer: TypeAdapter[Any]
    status_code: int

    @classmethod
    def of(cls, route: APIRoute) -> _Direct | None:
        """The direct call of a ``(body, intel, tenant)`` JSON route, None for another shape."""
        dependant = route.dependant
        if (
            route.methods != {"POST"}
            or route.response_model is None
            or dependant.path_params
            or dependant.query_params
            or dependant.header_params
            or dependant.cookie_params
            or dependant.request_param_name
            or dependant.response_param_name
            or dependant.background_tasks_param_name
            or len(dependant.body_params) != 1
            or len(dependant.dependencies) != 2
            or route.dependencies
            or route._embed_body_fields
        ):
            return None
        body_field = dependant.body_params[0]
        body_type = body_field.field_info.annotation
        if not (isinstance(body_type, type) and issubclass(body_type, BaseModel)):
            return None
        names = {sub.call: sub.name for sub in dependant.dependencies}
        intel_name, tenant_name = names.get(served_intelligence), names.get(authenticate)
        if intel_name is None or tenant_name is None:
            return None
        return cls(
            endpoint=route.endpoint,
            is_coroutine=inspect.iscoroutinefunction(route.endpoint),
            body_name=body_field.name,
            body_type=body_type,
            intel_name=intel_name,
            tenant_name=tenant_name,
            answer=TypeAdapter(route.response_model),
            status_code=route.status_code or 200,
        )


def _is_json(content_type: bytes | None) -> bool:
    """Whether FastAPI reads a body of this content type as JSON (the common spellings)."""
    if content_type is None:
        return True  # the app is built with strict_content_type=False
    return content_type.partition(b";")[0].strip().lower() == b"application/json"


async def _read_body(receive: Receive, limit: int) -> tuple[list[bytes], bool] | None:
    """Read the request body, stopping once it is over ``limit`` bytes.

    Returns:
        The chunks read and whether the client has more of the body to send (True only when
        reading stopped at the limit), or None when the client disconnected first.
    """
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        seen += len(chunk)
        more = bool(message.get("more_body", False))
        if not more or seen > limit:
            return chunks, more


def _replay(chunks: list[bytes], more: bool, receive: Receive) -> Receive:
    """A ``receive`` that yields the chunks already read, then defers to the server."""
    pending = list(chunks)

    async def replayed() -> Message:
        if pending:
            body = pending.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(pending) or more}
        return await receive()

    return replayed


def _handler_for(handlers: Mapping[Any, Any], exc: Exception) -> Callable[..., Any] | None:
    """The app's handler of this exception (by class, as Starlette's ExceptionMiddleware)."""
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None  # the catch-all is the outer middleware's job
        handler = handlers.get(cls)
        if handler is not None:
            return handler  # type: ignore[no-any-return]
    return None


class FastPath:
    """Answers well-formed requests of the ``(body, intel, tenant)`` POST routes directly.

    The service app calls it first, in place of its own middleware stack.

    Args:
        app: The whole app, which answers every other request (and every refusal).
        routes: The routes to consider; those of another shape are left to the app.
        max_bytes: A larger body is left to the app, whose body limit answers 413.
    """

    def __init__(self, app: ASGIApp, routes: Iterable[BaseRoute], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._direct: dict[str, _Direct] = {}
        for route in routes:
            if isinstance(route, APIRoute) and (direct := _Direct.of(route)) is not None:
                self._direct[route.path] = direct

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        direct = None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            direct = self._direct.get(scope["path"])
        if direct is None:
            await self.app(scope, receive, send)
            return
        found: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in _WANTED:
                found.setdefault(name, value)  # the first one, as Starlette's Headers.get
        declared = found.get(_CONTENT_LENGTH)
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self.app(scope, receive, send)  # the app's body limit answers
            return
        read = await _read_body(receive, self.max_bytes)
        if read is None:
            return  # the client left: nobody to answer
        chunks, more = read
        body = b"".join(chunks)
        values = None
        if len(body) <= self.max_bytes:  # else the app's body limit answers 413
            values = await self._arguments(direct, scope, found, body)
        if values is None:
            await self.app(scope, _replay(chunks, more, receive), send)
            return
        # As the app's catch-all (which this path does not cross): logged once, a JSON 500.
        await answer_unexpected_errors(
            lambda tracked: self._answer(direct, values, scope, receive, tracked),
            scope,
            receive,
            send,
        )

    async def _answer(
        self,
        direct: _Direct,
        values: dict[str, Any],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        try:
            if direct.is_coroutine:
                result = await direct.endpoint(**values)
            else:
                result = await run_in_threadpool(direct.endpoint, **values)
        except Exception as exc:
            if not await self._answered(scope, receive, send, exc):
                raise
            return
        answer = direct.answer
        try:
            content = answer.dump_json(answer.validate_python(result), by_alias=True)
        except PydanticValidationError as exc:  # a bug: answered 500 by the catch-all
            raise ResponseValidationError(exc.errors(), body=result) from None
        await send(
            {
                "type": "http.response.start",
                "status": direct.status_code,
                "headers": [
                    (b"content-length", str(len(content)).encode("latin-1")),
                    (b"content-type", b"application/json"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})

    async def _arguments(
        self, direct: _Direct, scope: Scope, found: dict[bytes, bytes], body: bytes
    ) -> dict[str, Any] | None:
        """The route's arguments, or None when the request is not plainly well-formed."""
        app = scope["app"]
        if app.dependency_overrides or not body:
            return None
        key, tenant = found.get(_API_KEY), found.get(_TENANT)
        if not key or not tenant or not _is_json(found.get(_CONTENT_TYPE)):
            return None
        try:
            # One pass from bytes to the model. Where FastAPI's json.loads + validation would
            # refuse (or read differently: UTF-16, lone surrogates, NaN), this refuses too and
            # the app's route answers.
            parsed = direct.body_type.model_validate_json(body)
        except PydanticValidationError:  # not JSON, or not valid
            return None
        authenticator: KeyAuthenticator = app.state.authenticator
        try:
            owner = await authenticator.tenant_for_request(
                key.decode("latin-1"), tenant.decode("latin-1")
            )
        except Exception:  # refused, or the store failed: the app's route answers the same
            return None
        return {
            direct.body_name: parsed,
            direct.intel_name: app.state.intelligence,
            direct.tenant_name: owner,
        }

    async def _answered(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> bool:
        """Answer an error with the app's handler of it; False when it has none."""
        handler = _handler_for(scope["app"].exception_handlers, exc)
        if handler is None:
            return False
        response = handler(Request(scope, receive), exc)
        if inspect.isawaitable(response):
            response = await response
        await response(scope, receive, send)
        return True
