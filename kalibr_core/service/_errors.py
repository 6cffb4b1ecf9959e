"""One error shape for every failure: ``{"error": {"type", "message", "field"?, "errors"?}}``.

=============================  ======  =====================
cause                          status  ``error.type``
=============================  ======  =====================
invalid body, query or value   422     validation_error
missing or wrong credentials   401     unauthorized
unknown route, path, outcome   404     not_found
no path left to choose         404     no_path_available
method not allowed             405     method_not_allowed
body over the size limit       413     payload_too_large
the store failed               503     store_unavailable
anything unexpected            500     internal_error
=============================  ======  =====================

Unexpected errors are logged with their traceback and answered without internals; store
errors are logged and answered 503 (retry later). Request bodies are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from kalibr_core._domain import FAILURE_CATEGORIES
from kalibr_core._errors import (
    KalibrError,
    NoPathAvailableError,
    NotFoundError,
    StoreError,
    ValidationError,
)

logger = logging.getLogger("kalibr_core.service")

_TYPES_BY_STATUS = {
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    422: "validation_error",
}
INTERNAL_MESSAGE = "internal error; the server log has the details"
_STORE_DOWN = "the store could not complete the request; retry later (the server log has details)"


class ApiError(Exception):
    """An error answered as is: a status, a type and a message a person can act on."""

    def __init__(
        self,
        status_code: int,
        error_type: str,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


def error_response(
    status_code: int,
    error_type: str,
    message: str,
    *,
    field: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The JSON response of an error."""
    detail: dict[str, Any] = {"type": error_type, "message": message}
    if field is not None:
        detail["field"] = field
    if errors is not None:
        detail["errors"] = list(errors)
    return JSONResponse({"error": detail}, status_code=status_code, headers=dict(headers or {}))


def _location(loc: Sequence[int | str], kind: object = None) -> str | None:
    if kind == "json_invalid":  # the location is a character offset, not a field
        return None
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:]
    return ".".join(parts) or None


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(error: Mapping[str, Any]) -> str:
    kind = error.get("type")
    loc = error.get("loc", ())
    field = _location(loc, kind)
    if kind == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "invalid JSON")
        return f"the request body is not valid JSON ({reason})"
    if field is not None and field.split(".")[-1] == "failure_category":
        return (
            f"invalid failure_category {_short(error.get('input'))}; valid categories: "
            + ", ".join(FAILURE_CATEGORIES)
        )
    if field is None and kind in {"model_attributes_type", "dict_type", "missing"}:
        return "the request body must be a JSON object (send Content-Type: application/json)"
    message = str(error.get("msg", "invalid value"))
    return f"{field}: {message}" if field else message


async def _validation_failed(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = [_location(e.get("loc", ()), e.get("type")) for e in exc.errors()]
    messages = [_describe(e) for e in exc.errors()]
    errors = [{"field": f, "message": m} for f, m in zip(fields, messages, strict=True)]
    shown = "; ".join(messages[:3])
    if len(errors) > 3:
        shown += f" (and {len(errors) - 3} more)"
    return error_response(
        422, "validation_error", shown, field=fields[0] if fields else None, errors=errors
    )


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(
        exc.status_code, exc.error_type, exc.message, field=exc.field, headers=exc.headers
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status == 400:
        # FastAPI's only 400: a body it cannot decode (not UTF-8). Like invalid JSON, a 422.
        return error_response(
            422, "validation_error", "the request body is not valid JSON (use UTF-8 encoded JSON)"
        )
    kind = _TYPES_BY_STATUS.get(status, "http_error")
    if status == 404:
        message = f"no endpoint {request.url.path}; the endpoints are listed at /docs"
    elif status == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
    else:
        message = str(exc.detail)
    return error_response(status, kind, message, headers=exc.headers)


async def _kalibr_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KalibrError)
    if isinstance(exc, ValidationError):
        return error_response(422, "validation_error", exc.message, field=exc.field)
    if isinstance(exc, NoPathAvailableError):
        # The engine speaks of the Python API; over HTTP the fix is the paths endpoint.
        message = exc.message.replace(
            "register_path() first", "register one with POST /api/v1/routing/paths"
        )
        return error_response(404, "no_path_available", message)
    if isinstance(exc, NotFoundError):
        return error_response(404, "not_found", exc.message)
    if isinstance(exc, StoreError):
        logger.error("%s %s: store error", request.method, request.url.path, exc_info=exc)
        return error_response(503, "store_unavailable", _STORE_DOWN)
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", INTERNAL_MESSAGE)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers of every expected error on ``app``."""
    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(KalibrError, _kalibr_error)
