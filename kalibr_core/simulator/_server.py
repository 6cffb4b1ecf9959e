"""The loopback HTTP server that speaks the OpenAI, Anthropic and Hugging Face wire protocols.

:class:`ProviderSimulator` owns the per-model state (request counters, seeded random
generators, statistics) and a :class:`http.server.ThreadingHTTPServer` running in a daemon
thread. Every route that names a model draws that model's :class:`~._scripts.Decision` for the
request and renders it in the called provider's format: an answer (correct or not, from
:mod:`._tasks`), or an injected failure (rate limit, overload, server error, timeout, malformed
JSON, empty content, context overflow).
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import ipaddress
import json
import logging
import random
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Literal

from kalibr_core._errors import ValidationError
from kalibr_core.simulator import _tasks as tasks
from kalibr_core.simulator._scripts import (
    Decision,
    ModelScript,
    draw_decision,
    script_for_unknown_model,
)

__all__ = ["HF_TASKS", "ModelStats", "ProviderSimulator", "RequestRecord"]

logger = logging.getLogger("kalibr_core.simulator")

Style = Literal["openai", "anthropic", "hf"]

#: The Hugging Face tasks the simulator serves (``InferenceClient`` method names with dashes).
HF_TASKS: Final[tuple[str, ...]] = (
    "text-generation",
    "summarization",
    "translation",
    "fill-mask",
    "table-question-answering",
    "automatic-speech-recognition",
    "text-to-speech",
    "audio-classification",
    "text-to-image",
    "image-to-text",
    "image-classification",
    "image-segmentation",
    "object-detection",
    "feature-extraction",
    "text-classification",
    "token-classification",
)
_HF_PREFIX: Final[str] = "/hf-inference"
_MAX_IMAGE_SIDE: Final[int] = 64
_DEFAULT_EMBEDDING_DIMENSIONS: Final[int] = 256


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# Public records


@dataclass(frozen=True)
class ModelStats:
    """What one model has seen so far.

    Attributes:
        model: The model name.
        requests: Requests addressed to the model (each one consumes a request number).
        answered: Requests answered normally (no injected failure).
        correct: Answered requests whose answer was correct.
        errors: Injected failures by kind (``rate_limit``, ``overloaded``, ``server_error``,
            ``timeout``, ``malformed_json``, ``empty``, ``context_length``).
        routes: Requests by route (``openai.chat``, ``anthropic.messages``, ``hf.<task>``, ...).
    """

    model: str
    requests: int
    answered: int
    correct: int
    errors: Mapping[str, int]
    routes: Mapping[str, int]

    @property
    def accuracy(self) -> float | None:
        """``correct / answered``, or ``None`` before the first answer."""
        return self.correct / self.answered if self.answered else None

    def to_json(self) -> dict[str, Any]:
        """The stats as a JSON-ready dict."""
        return {
            "model": self.model,
            "requests": self.requests,
            "answered": self.answered,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "errors": dict(self.errors),
            "routes": dict(self.routes),
        }


@dataclass(frozen=True)
class RequestRecord:
    """One request as the simulator decided it.

    Attributes:
        model: The model name.
        n: The model's 0-based request number.
        route: The route (``openai.chat``, ``hf.summarization``, ...).
        outcome: ``"ok"`` or the injected failure kind.
        correct: Whether a normal answer was correct (always ``False`` for failures).
    """

    model: str
    n: int
    route: str
    outcome: str
    correct: bool


@dataclass
class _ModelState:
    rng: random.Random
    n: int = 0
    answered: int = 0
    correct: int = 0
    errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    routes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


class _HttpError(Exception):
    def __init__(
        self,
        style: Style,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        kind: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.style: Style = style
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.kind = kind
        self.headers = dict(headers or {})


_OPENAI_TYPES: Final[dict[int, str]] = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    429: "requests",
}
_ANTHROPIC_TYPES: Final[dict[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _error_json(error: _HttpError) -> dict[str, Any]:
    if error.style == "anthropic":
        kind = error.kind or _ANTHROPIC_TYPES.get(error.status, "api_error")
        return {
            "type": "error",
            "error": {"type": kind, "message": error.message},
            "request_id": f"req_sim{uuid.uuid4().hex[:20]}",
        }
    if error.style == "hf":
        body: dict[str, Any] = {"error": error.message}
        if error.kind:
            body["error_type"] = error.kind
        return body
    kind = error.kind or _OPENAI_TYPES.get(error.status, "server_error")
    return {
        "error": {"message": error.message, "type": kind, "param": error.param, "code": error.code}
    }


def _injected_error(style: Style, kind: str, model: str, script: ModelScript) -> _HttpError:
    retry = script.retry_after_s
    retry_headers = {
        "retry-after": f"{retry:g}",
        "retry-after-ms": str(round(retry * 1000)),
    }
    if kind == "rate_limit":
        if style == "anthropic":
            message = "Number of requests has exceeded your per-minute rate limit."
        elif style == "hf":
            message = "Rate limit reached. Please retry later."
        else:
            message = (
                f"Rate limit reached for {model} on requests per min (RPM): Limit 60, Used 60, "
                f"Requested 1. Please try again in {retry:g}s."
            )
        return _HttpError(
            style,
            429,
            message,
            code="rate_limit_exceeded",
            headers={**retry_headers, "x-ratelimit-remaining-requests": "0"},
        )
    if kind == "overloaded":
        if style == "anthropic":
            return _HttpError(style, 529, "Overloaded", headers=retry_headers)
        if style == "hf":
            return _HttpError(style, 503, f"Model {model} is currently loading", kind="overloaded")
        return _HttpError(style, 503, "The engine is currently overloaded, please try again later.")
    if style == "anthropic":
        return _HttpError(style, 500, "Internal server error")
    if style == "hf":
        return _HttpError(style, 500, "Internal Server Error", kind="server_error")
    return _HttpError(
        style,
        500,
        "The server had an error while processing your request. Sorry about that!",
        kind="server_error",
    )


def _context_error(style: Style, window: int, used: int) -> _HttpError:
    if style == "anthropic":
        return _HttpError(style, 400, f"prompt is too long: {used} tokens > {window} maximum")
    if style == "hf":
        return _HttpError(
            style,
            422,
            f"Input validation error: `inputs` must have less than {window} tokens. Given: {used}",
            kind="validation",
        )
    return _HttpError(
        style,
        400,
        f"This model's maximum context length is {window} tokens. However, your messages "
        f"resulted in {used} tokens. Please reduce the length of the messages.",
        code="context_length_exceeded",
        param="messages",
    )


def _malformed(body: bytes) -> bytes:
    return body[: max(1, len(body) // 2)]


# --------------------------------------------------------------------------------------------
# Request helpers


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes

    def header(self, name: str) -> str:
        return str(self.headers.get(name, "") or "")

    @property
    def content_type(self) -> str:
        return self.header("content-type").split(";")[0].strip().lower()

    def json(self, style: Style) -> Any:
        try:
            return json.loads(self.body.decode("utf-8") or "null")
        except (UnicodeDecodeError, ValueError) as exc:
            raise _HttpError(
                style, 400, f"We could not parse the JSON body of your request: {exc}"
            ) from exc

    def json_object(self, style: Style) -> dict[str, Any]:
        payload = self.json(style)
        if not isinstance(payload, dict):
            raise _HttpError(style, 400, "The request body must be a JSON object.")
        return payload


@dataclass
class _Outcome:
    """A decided request: the script, the decision and the content randomness."""

    model: str
    script: ModelScript
    decision: Decision
    style: Style

    @property
    def rng(self) -> random.Random:
        return random.Random(self.decision.content_seed)

    @property
    def correct(self) -> bool:
        return self.decision.correct and self.decision.error is None

    @property
    def empty(self) -> bool:
        return self.decision.error == "empty"

    @property
    def malformed(self) -> bool:
        return self.decision.error == "malformed_json"


def _text_of(content: Any) -> str:
    """The text of an OpenAI/Anthropic message content (a string or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces: list[str] = []
        for part in content:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, Mapping):
                if isinstance(part.get("text"), str):
                    pieces.append(part["text"])
                elif part.get("type") == "tool_result":
                    pieces.append(_text_of(part.get("content")))
        return "\n".join(pieces)
    return str(content)


def _require_str(payload: Mapping[str, Any], key: str, style: Style) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value:
        if style == "anthropic":
            raise _HttpError(style, 400, f"{key}: Field required")
        raise _HttpError(
            style,
            400,
            f"Missing required parameter: '{key}'.",
            code="missing_required_parameter",
            param=key,
        )
    return value


def _optional_int(payload: Mapping[str, Any], key: str, style: Style) -> int | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _HttpError(
            style,
            400,
            f"Invalid '{key}': expected an integer of at least 1, got {value!r}.",
            code="invalid_value",
            param=key,
        )
    return value


def _stop_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for s in value if isinstance(s, str) and s]
    return []


def _apply_stop(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    best: tuple[int, str] | None = None
    for stop in stops:
        index = text.find(stop)
        if index >= 0 and (best is None or index < best[0]):
            best = (index, stop)
    if best is None:
        return text, None
    return text[: best[0]], best[1]


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def _new_id(prefix: str, rng: random.Random) -> str:
    return f"{prefix}{rng.getrandbits(96):024x}"


# --------------------------------------------------------------------------------------------
# The simulator


class ProviderSimulator:
    """A loopback server that plays OpenAI, Anthropic and Hugging Face, driven by model scripts.

    Example::

        sim = ProviderSimulator(models={"gpt-4o": ModelScript(accuracy=0.9)}, seed=7)
        with sim:
            client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sim", max_retries=0)

    Args:
        models: Scripts by model name. Models not listed get ``default_script``.
        seed: Seed of every model's random generator; together with the order of a model's
            requests it determines that model's behaviour.
        host: A loopback address to bind (anything else is refused).
        port: The port to bind; ``0`` picks a free one.
        default_script: The script of unlisted models (accurate and fast by default).
        require_auth: Answer 401 to OpenAI/Anthropic requests without an API key.
        max_records: How many :class:`RequestRecord` entries to keep.
    """

    def __init__(
        self,
        models: Mapping[str, ModelScript] | None = None,
        *,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        default_script: ModelScript | None = None,
        require_auth: bool = True,
        max_records: int = 100_000,
    ) -> None:
        if not _is_loopback(host):
            raise ValidationError(
                f"the simulator only binds loopback addresses (127.0.0.1, ::1, localhost); "
                f"got {host!r}",
                field="host",
            )
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValidationError(f"port must be between 0 and 65535, got {port!r}", field="port")
        scripts = dict(models or {})
        for name, script in scripts.items():
            if not isinstance(name, str) or not name:
                raise ValidationError(f"model names must be non-empty strings, got {name!r}")
            if not isinstance(script, ModelScript):
                raise ValidationError(
                    f"the script of {name!r} must be a ModelScript, got {type(script).__name__}",
                    field="models",
                )
        self._scripts: dict[str, ModelScript] = scripts
        self._default = default_script or ModelScript()
        self._seed = seed
        self._host = host
        self._requested_port = port
        self._require_auth = require_auth
        self._lock = threading.Lock()
        self._states: dict[str, _ModelState] = {}
        self._records: collections.deque[RequestRecord] = collections.deque(maxlen=max_records)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> ProviderSimulator:
        """Bind the port and serve in a daemon thread. Returns ``self``."""
        if self._server is not None:
            return self
        self._stopping.clear()
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        server = _Server((self._host, self._requested_port), self, family)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"kalibr-simulator:{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        logger.info("provider simulator listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and release the port."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None
        logger.info("provider simulator stopped")

    def __enter__(self) -> ProviderSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._server is not None

    # -- addresses -----------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The bound host."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (raises before :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("the simulator is not running; call start() or use 'with'")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``base_url`` for ``openai.OpenAI``: ``http://HOST:PORT/v1``."""
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """``base_url`` for ``anthropic.Anthropic``: ``http://HOST:PORT``."""
        return self.base_url

    @property
    def hf_base_url(self) -> str:
        """``base_url`` for ``InferenceClient`` chat: ``http://HOST:PORT/hf-inference``.

        With it, ``chat_completion(..., model="name")`` reaches the simulator with ``name`` in
        the body. Other tasks need a model URL: see :meth:`hf_model_url`.
        """
        return f"{self.base_url}{_HF_PREFIX}"

    def hf_model_url(self, model: str, task: str | None = None) -> str:
        """The URL to pass as ``InferenceClient(model=...)`` (or a method's ``model=``).

        Args:
            model: The model name (``org/name`` is fine).
            task: The task, e.g. ``"summarization"``. Several tasks send identical payloads, so
                without it the simulator guesses the task from the request body.
        """
        url = f"{self.hf_base_url}/models/{urllib.parse.quote(model, safe='/')}"
        if task is not None:
            normalised = task.replace("_", "-")
            if normalised not in HF_TASKS:
                raise ValidationError(
                    f"unknown Hugging Face task {task!r}; supported: {', '.join(HF_TASKS)}",
                    field="task",
                )
            url += f"/pipeline/{normalised}"
        return url

    # -- scripts and statistics ----------------------------------------------------------

    @property
    def models(self) -> list[str]:
        """The configured model names, sorted."""
        with self._lock:
            return sorted(self._scripts)

    def script_for(self, model: str) -> ModelScript:
        """The script that applies to ``model`` (configured, or the default)."""
        with self._lock:
            return self._script_locked(model)

    def _script_locked(self, model: str) -> ModelScript:
        script = self._scripts.get(model)
        return script if script is not None else script_for_unknown_model(model, self._default)

    def set_script(self, model: str, script: ModelScript) -> None:
        """Replace the script of ``model`` (thread-safe; its request counter keeps running).

        Args:
            model: The model name.
            script: The new behaviour.
        """
        if not isinstance(script, ModelScript):
            raise ValidationError(
                f"script must be a ModelScript, got {type(script).__name__}", field="script"
            )
        with self._lock:
            self._scripts[model] = script

    def request_count(self, model: str) -> int:
        """How many requests ``model`` has received."""
        with self._lock:
            state = self._states.get(model)
            return state.n if state is not None else 0

    def stats(self) -> dict[str, ModelStats]:
        """Per-model statistics, by model name."""
        with self._lock:
            return {
                name: ModelStats(
                    model=name,
                    requests=state.n,
                    answered=state.answered,
                    correct=state.correct,
                    errors=dict(state.errors),
                    routes=dict(state.routes),
                )
                for name, state in sorted(self._states.items())
            }

    def records(self, model: str | None = None) -> list[RequestRecord]:
        """The recorded requests, oldest first, optionally for one model."""
        with self._lock:
            return [r for r in self._records if model is None or r.model == model]

    def reset(self) -> None:
        """Forget all counters, statistics and records; random generators restart from the seed."""
        with self._lock:
            self._states.clear()
            self._records.clear()

    # -- used by the handler -------------------------------------------------------------

    @property
    def require_auth(self) -> bool:
        return self._require_auth

    def _decide(self, model: str, route: str, style: Style) -> _Outcome:
        with self._lock:
            state = self._states.get(model)
            if state is None:
                state = _ModelState(rng=random.Random(f"{self._seed}:{model}"))
                self._states[model] = state
            script = self._script_locked(model)
            decision = draw_decision(script, state.n, state.rng)
            state.n += 1
            state.routes[route] += 1
        return _Outcome(model=model, script=script, decision=decision, style=style)

    def _record(self, outcome: _Outcome, route: str, result: str) -> None:
        correct = result == "ok" and outcome.decision.correct
        with self._lock:
            state = self._states[outcome.model]
            if result == "ok":
                state.answered += 1
                state.correct += int(correct)
            else:
                state.errors[result] += 1
            self._records.append(
                RequestRecord(outcome.model, outcome.decision.n, route, result, correct)
            )

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _run(
        self, model: str, route: str, style: Style, prompt_tokens: int | None = None
    ) -> _Outcome:
        """Decide a request, apply latency, context window and injected HTTP errors."""
        outcome = self._decide(model, route, style)
        self._wait(outcome.decision.latency_s)
        window = outcome.script.context_window
        if window is not None and prompt_tokens is not None and prompt_tokens > window:
            self._record(outcome, route, "context_length")
            raise _context_error(style, window, prompt_tokens)
        error = outcome.decision.error
        self._record(outcome, route, error or "ok")
        if error == "timeout":
            logger.debug(
                "%s request %d: injected timeout, sleeping %.3fs",
                model,
                outcome.decision.n,
                outcome.script.timeout_s,
            )
            self._wait(outcome.script.timeout_s)
        elif error in ("rate_limit", "overloaded", "server_error"):
            raise _injected_error(style, error, model, outcome.script)
        return outcome


# --------------------------------------------------------------------------------------------
# HTTP server and handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # bursts of concurrent clients (50 threads) must not stall

    def __init__(
        self, address: tuple[str, int], sim: ProviderSimulator, family: socket.AddressFamily
    ) -> None:
        self.address_family = family
        self.sim = sim
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, active: bool) -> None:
        with self._connections_lock:
            if active:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError as exc:
                logger.debug("closing a connection: %s", exc)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            logger.debug("connection from %s ended: %s", client_address, error)
        else:
            logger.exception("simulator connection from %s failed", client_address)


Route = Callable[["_Handler", _Request], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kalibr-simulator"
    timeout = 60
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's algorithm and
    # delayed ACKs add ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    server: _Server

    # -- plumbing ------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    @property
    def sim(self) -> ProviderSimulator:
        return self.server.sim

    def _read_body(self) -> bytes:
        if "chunked" in str(self.headers.get("transfer-encoding", "")).lower():
            pieces: list[bytes] = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                pieces.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(pieces)
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        style = _style_for(parsed.path, self.headers)
        try:
            body = self._read_body()
        except (ValueError, OSError) as exc:
            logger.debug("unreadable request body: %s", exc)
            self.close_connection = True
            return
        request = _Request(
            method=self.command,
            path=parsed.path.rstrip("/") or "/",
            query=urllib.parse.parse_qs(parsed.query),
            headers=self.headers,
            body=body,
        )
        try:
            _route(self, request)
        except _HttpError as error:
            self._send_error(error)
        except OSError as exc:
            logger.debug("client went away: %s", exc)
            self.close_connection = True
        except Exception as exc:
            logger.exception("simulator bug while serving %s %s", self.command, self.path)
            try:
                self._send_error(_HttpError(style, 500, f"simulator error: {exc}"))
            except OSError:
                self.close_connection = True

    # -- responses -----------------------------------------------------------------------

    def send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
        except OSError as exc:
            logger.debug("client went away before the response: %s", exc)
            self.close_connection = True

    def send_json(self, status: int, value: Any, headers: Mapping[str, str] | None = None) -> None:
        self.send_bytes(status, _json_bytes(value), "application/json", headers)

    def _send_error(self, error: _HttpError) -> None:
        headers = dict(error.headers)
        if error.style == "anthropic":
            headers.setdefault("x-should-retry", "true" if error.status >= 429 else "false")
        self.send_json(error.status, _error_json(error), headers)

    def stream(self, events: Iterator[bytes], content_type: str = "text/event-stream") -> None:
        """Send ``events`` with chunked transfer encoding, flushing each one."""
        try:
            self.send_response(200)
            self.send_header("content-type", f"{content_type}; charset=utf-8")
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for event in events:
                if event:
                    self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError as exc:
            logger.debug("client left the stream: %s", exc)
            self.close_connection = True


def _style_for(path: str, headers: Message) -> Style:
    if path.startswith(_HF_PREFIX):
        return "hf"
    if path.startswith("/v1/messages") or headers.get("anthropic-version"):
        return "anthropic"
    return "openai"


def _check_auth(handler: _Handler, request: _Request, style: Style) -> None:
    if not handler.sim.require_auth:
        return
    bearer = request.header("authorization")
    has_bearer = bearer.lower().startswith("bearer ") and bool(bearer[7:].strip())
    if style == "anthropic":
        if has_bearer or request.header("x-api-key").strip():
            return
        raise _HttpError(style, 401, "x-api-key header is required")
    if not has_bearer:
        raise _HttpError(
            style,
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )


def _route(handler: _Handler, request: _Request) -> None:
    path, method = request.path, request.method
    if path in ("/health", "/", "/healthz") and method == "GET":
        handler.send_json(200, {"status": "ok"})
        return
    if path.startswith(_HF_PREFIX):
        _hf_route(handler, request)
        return
    style = _style_for(path, request.headers)
    routes: dict[tuple[str, str], Route] = {
        ("POST", "/v1/chat/completions"): _openai_chat,
        ("POST", "/v1/messages"): _anthropic_messages,
        ("POST", "/v1/messages/count_tokens"): _anthropic_count_tokens,
        ("POST", "/v1/embeddings"): _openai_embeddings,
        ("POST", "/v1/audio/speech"): _openai_speech,
        ("POST", "/v1/audio/transcriptions"): _openai_transcriptions,
        ("GET", "/v1/models"): _list_models,
    }
    target = routes.get((method, path))
    if target is None and method == "GET" and path.startswith("/v1/models/"):
        target = _get_model
    if target is None:
        if style == "anthropic":
            raise _HttpError(style, 404, f"Not found: {method} {path}")
        raise _HttpError(style, 404, f"Invalid URL ({method} {path})")
    _check_auth(handler, request, style)
    target(handler, request)


# --------------------------------------------------------------------------------------------
# Models


def _model_entry(name: str, style: Style) -> dict[str, Any]:
    if style == "anthropic":
        return {
            "type": "model",
            "id": name,
            "display_name": name,
            "created_at": "2024-01-01T00:00:00Z",
        }
    return {"id": name, "object": "model", "created": 1704067200, "owned_by": "kalibr-simulator"}


def _list_models(handler: _Handler, request: _Request) -> None:
    style = _style_for(request.path, request.headers)
    names = handler.sim.models
    data = [_model_entry(name, style) for name in names]
    if style == "anthropic":
        handler.send_json(
            200,
            {
                "data": data,
                "has_more": False,
                "first_id": names[0] if names else None,
                "last_id": names[-1] if names else None,
            },
        )
    else:
        handler.send_json(200, {"object": "list", "data": data})


def _get_model(handler: _Handler, request: _Request) -> None:
    style = _style_for(request.path, request.headers)
    name = urllib.parse.unquote(request.path[len("/v1/models/") :])
    handler.send_json(200, _model_entry(name, style))


# --------------------------------------------------------------------------------------------
# OpenAI chat completions (also the Hugging Face chat route)


@dataclass
class _ChatRequest:
    model: str
    conversation: tasks.Conversation
    prompt_tokens: int
    max_tokens: int | None
    stops: list[str]
    stream: bool
    include_usage: bool


def _parse_openai_chat(payload: Mapping[str, Any], style: Style, model: str | None) -> _ChatRequest:
    name = model or _require_str(payload, "model", style)
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _HttpError(
            style,
            400,
            "Missing required parameter: 'messages'."
            if messages is None
            else "Invalid 'messages': expected a non-empty array of messages.",
            code="missing_required_parameter",
            param="messages",
        )
    texts: list[str] = []
    instructions: list[str] = []
    last_assistant: str | None = None
    prompt: str | None = None
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in (
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
            "function",
        ):
            raise _HttpError(
                style,
                400,
                f"Invalid 'messages[{index}]': each message needs a role of system, developer, "
                "user, assistant or tool.",
                code="invalid_value",
                param=f"messages[{index}]",
            )
        text = _text_of(message.get("content"))
        texts.append(text)
        if message.get("role") == "user":
            prompt = text
        if message.get("role") in ("system", "developer", "user"):
            instructions.append(text)
        elif message.get("role") == "assistant":
            last_assistant = text
    last = messages[-1]
    tool_result = (
        _text_of(last.get("content")) if last.get("role") in ("tool", "function") else None
    )
    n = payload.get("n")
    if n not in (None, 1):
        raise _HttpError(style, 400, "The simulator supports only n=1.", param="n")
    temperature = payload.get("temperature")
    if temperature is not None and (
        not isinstance(temperature, int | float) or not 0 <= temperature <= 2
    ):
        raise _HttpError(
            style,
            400,
            f"Invalid 'temperature': expected a number between 0 and 2, got {temperature!r}.",
            param="temperature",
        )
    max_tokens = _optional_int(payload, "max_completion_tokens", style) or _optional_int(
        payload, "max_tokens", style
    )
    tools: list[tasks.ToolSpec] = []
    for tool in payload.get("tools") or []:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            parameters = function.get("parameters")
            tools.append(
                tasks.ToolSpec(
                    function["name"], parameters if isinstance(parameters, Mapping) else {}
                )
            )
    choice = payload.get("tool_choice")
    tool_mode, forced = "auto", None
    if isinstance(choice, str):
        tool_mode = choice
    elif isinstance(choice, Mapping):
        function = choice.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            forced = function["name"]
            tool_mode = "required"
    json_mode, schema = False, None
    response_format = payload.get("response_format")
    if isinstance(response_format, Mapping):
        kind = response_format.get("type")
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            if isinstance(spec, Mapping) and isinstance(spec.get("schema"), Mapping):
                schema = spec["schema"]
            json_mode = True
        elif kind in ("json_object", "json"):
            json_mode = True
            value = response_format.get("value") or response_format.get("schema")
            if isinstance(value, Mapping):
                schema = value
    options = payload.get("stream_options")
    return _ChatRequest(
        model=name,
        conversation=tasks.Conversation(
            prompt=prompt if prompt is not None else (texts[-1] if texts else ""),
            tool_result=tool_result,
            tools=tuple(tools),
            tool_mode=tool_mode,
            forced_tool=forced,
            json_mode=json_mode,
            json_schema=schema,
            react=tasks.react_prompt("\n".join(instructions), last_assistant),
        ),
        prompt_tokens=sum(tasks.count_tokens(t) for t in texts) + 3 * len(messages),
        max_tokens=max_tokens,
        stops=_stop_list(payload.get("stop")),
        stream=bool(payload.get("stream")),
        include_usage=isinstance(options, Mapping) and bool(options.get("include_usage")),
    )


@dataclass
class _Answer:
    """A reply after stop sequences and token limits."""

    text: str
    tool_name: str | None
    tool_arguments: str | None
    finish: Literal["stop", "length", "tool_calls"]
    stop_sequence: str | None
    completion_tokens: int


def _answer(
    conversation: tasks.Conversation,
    outcome: _Outcome,
    max_tokens: int | None,
    stops: Sequence[str],
) -> _Answer:
    if outcome.empty:
        return _Answer("", None, None, "stop", None, 0)
    reply = tasks.plan_reply(conversation, outcome.decision.correct, outcome.rng)
    if reply.tool_name is not None:
        arguments = json.dumps(reply.tool_arguments or {})
        return _Answer(
            "", reply.tool_name, arguments, "tool_calls", None, tasks.count_tokens(arguments)
        )
    text, stop_sequence = _apply_stop(reply.text, stops)
    finish: Literal["stop", "length", "tool_calls"] = "stop"
    if max_tokens is not None:
        text, cut = tasks.truncate_to_tokens(text, max_tokens)
        if cut:
            finish, stop_sequence = "length", None
    return _Answer(text, None, None, finish, stop_sequence, tasks.count_tokens(text))


def _openai_chat(handler: _Handler, request: _Request, *, model: str | None = None) -> None:
    style = _style_for(request.path, request.headers)
    route = "hf.chat-completion" if style == "hf" else "openai.chat"
    chat = _parse_openai_chat(request.json_object(style), style, model)
    outcome = handler.sim._run(chat.model, route, style, chat.prompt_tokens)
    answer = _answer(chat.conversation, outcome, chat.max_tokens, chat.stops)
    rng = outcome.rng
    completion_id = _new_id("chatcmpl-", rng)
    call_id = _new_id("call_", rng)[:29]
    created = int(time.time())
    usage = {
        "prompt_tokens": chat.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": chat.prompt_tokens + answer.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    tool_calls = (
        [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": answer.tool_name, "arguments": answer.tool_arguments},
            }
        ]
        if answer.tool_name is not None
        else None
    )
    if chat.stream:
        handler.stream(
            _openai_chunks(
                completion_id=completion_id,
                created=created,
                chat=chat,
                answer=answer,
                tool_calls=tool_calls,
                usage=usage,
                malformed=outcome.malformed,
            )
        )
        return
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if tool_calls else answer.text,
        "refusal": None,
        "annotations": [],
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    body = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": chat.model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish}
        ],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": "fp_kalibr_sim",
    }
    raw = _json_bytes(body)
    handler.send_bytes(200, _malformed(raw) if outcome.malformed else raw, "application/json")


def _sse(data: Any, event: str | None = None) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    prefix = f"event: {event}\n" if event else ""
    return f"{prefix}data: {text}\n\n".encode()


def _openai_chunks(
    *,
    completion_id: str,
    created: int,
    chat: _ChatRequest,
    answer: _Answer,
    tool_calls: list[dict[str, Any]] | None,
    usage: dict[str, Any],
    malformed: bool,
) -> Iterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": chat.model,
            "system_fingerprint": "fp_kalibr_sim",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if chat.include_usage:
            body["usage"] = None
        return _sse(body)

    if tool_calls:
        call = tool_calls[0]
        yield chunk(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["function"]["name"], "arguments": ""},
                    }
                ],
            }
        )
        arguments = str(call["function"]["arguments"])
        for start in range(0, len(arguments), 8):
            yield chunk(
                {
                    "tool_calls": [
                        {"index": 0, "function": {"arguments": arguments[start : start + 8]}}
                    ]
                }
            )
    else:
        yield chunk({"role": "assistant", "content": "", "refusal": None})
        if malformed:
            yield b'data: {"id": "' + completion_id.encode() + b'", "choices": [{"delta": {"con\n\n'
            yield _sse("[DONE]")
            return
        for piece in tasks.iter_words(answer.text):
            yield chunk({"content": piece})
    yield chunk({}, answer.finish)
    if chat.include_usage:
        yield _sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": chat.model,
                "system_fingerprint": "fp_kalibr_sim",
                "choices": [],
                "usage": usage,
            }
        )
    yield _sse("[DONE]")


# --------------------------------------------------------------------------------------------
# Anthropic messages


def _anthropic_conversation(payload: Mapping[str, Any]) -> tuple[tasks.Conversation, int]:
    style: Style = "anthropic"
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _HttpError(
            style,
            400,
            "messages: Field required"
            if messages is None
            else "messages: at least one message is required",
        )
    texts: list[str] = [_text_of(payload.get("system"))]
    instructions: list[str] = texts[:1]
    last_assistant: str | None = None
    prompt: str | None = None
    tool_result: str | None = None
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant"):
            raise _HttpError(
                style, 400, f"messages.{index}.role: Input should be 'user' or 'assistant'"
            )
        content = message.get("content")
        blocks = content if isinstance(content, list) else []
        text = (
            "\n".join(
                str(b.get("text", ""))
                for b in blocks
                if isinstance(b, Mapping) and b.get("type") == "text"
            )
            if isinstance(content, list)
            else _text_of(content)
        )
        results = [
            _text_of(b.get("content"))
            for b in blocks
            if isinstance(b, Mapping) and b.get("type") == "tool_result"
        ]
        texts.append(text)
        texts.extend(results)
        if message.get("role") == "user" and text.strip():
            prompt = text
        if message.get("role") == "user":
            instructions.append(text)
        else:
            last_assistant = text
        is_last = index == len(messages) - 1
        if is_last and message.get("role") == "user" and results:
            tool_result = "\n".join(results)
    tools: list[tasks.ToolSpec] = []
    for tool in payload.get("tools") or []:
        if isinstance(tool, Mapping) and isinstance(tool.get("name"), str):
            schema = tool.get("input_schema")
            tools.append(
                tasks.ToolSpec(tool["name"], schema if isinstance(schema, Mapping) else {})
            )
    choice = payload.get("tool_choice")
    tool_mode, forced = "auto", None
    if isinstance(choice, Mapping):
        kind = choice.get("type")
        if kind == "none":
            tool_mode = "none"
        elif kind == "any":
            tool_mode = "required"
        elif kind == "tool" and isinstance(choice.get("name"), str):
            tool_mode, forced = "required", choice["name"]
    # Structured outputs: ``output_config.format`` (current API) or ``output_format`` (beta).
    config = payload.get("output_config")
    schema_format = (
        config.get("format") if isinstance(config, Mapping) else payload.get("output_format")
    )
    json_schema = (
        schema_format.get("schema")
        if isinstance(schema_format, Mapping) and isinstance(schema_format.get("schema"), Mapping)
        else None
    )
    conversation = tasks.Conversation(
        prompt=prompt if prompt is not None else texts[-1],
        tool_result=tool_result,
        tools=tuple(tools),
        tool_mode=tool_mode,
        forced_tool=forced,
        json_schema=json_schema,
        react=tasks.react_prompt("\n".join(instructions), last_assistant),
    )
    prompt_tokens = sum(tasks.count_tokens(t) for t in texts) + 3 * len(messages)
    return conversation, prompt_tokens


def _anthropic_messages(handler: _Handler, request: _Request) -> None:
    style: Style = "anthropic"
    payload = request.json_object(style)
    model = _require_str(payload, "model", style)
    max_tokens = payload.get("max_tokens")
    if max_tokens is None:
        raise _HttpError(style, 400, "max_tokens: Field required")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _HttpError(style, 400, f"max_tokens: must be at least 1, got {max_tokens!r}")
    temperature = payload.get("temperature")
    if temperature is not None and (
        not isinstance(temperature, int | float) or not 0 <= temperature <= 1
    ):
        raise _HttpError(style, 400, "temperature: range: 0..1")
    conversation, prompt_tokens = _anthropic_conversation(payload)
    stops = _stop_list(payload.get("stop_sequences"))
    outcome = handler.sim._run(model, "anthropic.messages", style, prompt_tokens)
    answer = _answer(conversation, outcome, max_tokens, stops)
    rng = outcome.rng
    message_id = _new_id("msg_", rng)
    stop_reason = {
        "tool_calls": "tool_use",
        "length": "max_tokens",
        "stop": "stop_sequence" if answer.stop_sequence else "end_turn",
    }[answer.finish]
    content: list[dict[str, Any]] = []
    if answer.tool_name is not None:
        content.append(
            {
                "type": "tool_use",
                "id": _new_id("toolu_", rng)[:30],
                "name": answer.tool_name,
                "input": json.loads(answer.tool_arguments or "{}"),
            }
        )
    elif not outcome.empty:
        content.append({"type": "text", "text": answer.text})
    usage = {
        "input_tokens": prompt_tokens,
        "output_tokens": answer.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard",
    }
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": answer.stop_sequence,
        "usage": usage,
    }
    if payload.get("stream"):
        handler.stream(_anthropic_events(message, answer, outcome.malformed))
        return
    raw = _json_bytes(message)
    handler.send_bytes(200, _malformed(raw) if outcome.malformed else raw, "application/json")


def _anthropic_events(message: dict[str, Any], answer: _Answer, malformed: bool) -> Iterator[bytes]:
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    yield _sse({"type": "message_start", "message": start}, "message_start")
    yield _sse({"type": "ping"}, "ping")
    if malformed:
        yield b'event: content_block_start\ndata: {"type": "content_block_start", "ind\n\n'
        return
    for index, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            opening = {**block, "input": {}}
            yield _sse(
                {"type": "content_block_start", "index": index, "content_block": opening},
                "content_block_start",
            )
            arguments = answer.tool_arguments or "{}"
            for begin in range(0, len(arguments), 8):
                delta = {"type": "input_json_delta", "partial_json": arguments[begin : begin + 8]}
                yield _sse(
                    {"type": "content_block_delta", "index": index, "delta": delta},
                    "content_block_delta",
                )
        else:
            yield _sse(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            )
            for piece in tasks.iter_words(block["text"]):
                delta = {"type": "text_delta", "text": piece}
                yield _sse(
                    {"type": "content_block_delta", "index": index, "delta": delta},
                    "content_block_delta",
                )
        yield _sse({"type": "content_block_stop", "index": index}, "content_block_stop")
    yield _sse(
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": message["stop_reason"],
                "stop_sequence": message["stop_sequence"],
            },
            "usage": {"output_tokens": usage["output_tokens"]},
        },
        "message_delta",
    )
    yield _sse({"type": "message_stop"}, "message_stop")


def _anthropic_count_tokens(handler: _Handler, request: _Request) -> None:
    payload = request.json_object("anthropic")
    _require_str(payload, "model", "anthropic")
    _, prompt_tokens = _anthropic_conversation(payload)
    handler.send_json(200, {"input_tokens": prompt_tokens})


# --------------------------------------------------------------------------------------------
# OpenAI embeddings and audio


def _openai_embeddings(handler: _Handler, request: _Request) -> None:
    style: Style = "openai"
    payload = request.json_object(style)
    model = _require_str(payload, "model", style)
    raw_input = payload.get("input")
    if isinstance(raw_input, str):
        inputs = [raw_input]
    elif isinstance(raw_input, list) and raw_input:
        inputs = [x if isinstance(x, str) else " ".join(map(str, x)) for x in raw_input]
    else:
        raise _HttpError(style, 400, "Missing required parameter: 'input'.", param="input")
    dimensions = _optional_int(payload, "dimensions", style) or _DEFAULT_EMBEDDING_DIMENSIONS
    tokens = sum(tasks.count_tokens(text) for text in inputs)
    outcome = handler.sim._run(model, "openai.embeddings", style, tokens)
    rng = outcome.rng
    as_base64 = payload.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(inputs):
        vector = [] if outcome.empty else tasks.embed(text, dimensions, outcome.correct, rng)
        data.append(
            {
                "object": "embedding",
                "index": index,
                "embedding": tasks.embedding_base64(vector) if as_base64 else vector,
            }
        )
    body = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    raw = _json_bytes(body)
    handler.send_bytes(200, _malformed(raw) if outcome.malformed else raw, "application/json")


_AUDIO_TYPES: Final[dict[str, str]] = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


def _speech_bytes(text: str, response_format: str) -> tuple[bytes, str]:
    if response_format == "mp3":
        return tasks.encode_mp3(text), _AUDIO_TYPES["mp3"]
    if response_format == "pcm":
        return tasks.encode_pcm(text), _AUDIO_TYPES["pcm"]
    return tasks.encode_wav(text), _AUDIO_TYPES["wav"]


def _openai_speech(handler: _Handler, request: _Request) -> None:
    style: Style = "openai"
    payload = request.json_object(style)
    model = _require_str(payload, "model", style)
    text = _require_str(payload, "input", style)
    if payload.get("voice") in (None, ""):
        raise _HttpError(style, 400, "Missing required parameter: 'voice'.", param="voice")
    response_format = str(payload.get("response_format") or "mp3")
    if response_format not in ("mp3", "opus", "aac", "flac", "wav", "pcm"):
        raise _HttpError(
            style, 400, f"Invalid 'response_format': {response_format!r}.", param="response_format"
        )
    outcome = handler.sim._run(model, "openai.speech", style, tasks.count_tokens(text))
    if outcome.empty:
        spoken = ""
    elif outcome.correct:
        spoken = text
    else:
        spoken = tasks.corrupt_text(text, outcome.rng)
    audio, content_type = _speech_bytes(spoken, response_format)
    handler.send_bytes(200, _malformed(audio) if outcome.malformed else audio, content_type)


def _parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[bytes, str | None]]:
    """Parse ``multipart/form-data`` into ``{name: (value bytes, filename)}``."""
    boundary = None
    for param in content_type.split(";")[1:]:
        key, _, text = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = text.strip('"')
    if not boundary:
        raise _HttpError("openai", 400, "Expected a multipart/form-data body with a boundary.")
    fields: dict[str, tuple[bytes, str | None]] = {}
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        disposition = ""
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, rest = line.partition(":")
            if name.strip().lower() == "content-disposition":
                disposition = rest
        params: dict[str, str] = {}
        for item in disposition.split(";")[1:]:
            key, _, text = item.strip().partition("=")
            params[key.lower()] = text.strip('"')
        if "name" in params:
            fields[params["name"]] = (data.removesuffix(b"\r\n"), params.get("filename"))
    return fields


def _fallback_transcript(audio: bytes) -> str:
    rng = random.Random(tasks._stable_int(audio[:4096].hex()))
    words = ("hello", "thanks", "for", "calling", "the", "meeting", "is", "at", "noon", "today")
    return " ".join(rng.choice(words) for _ in range(rng.randint(3, 7))).capitalize() + "."


def _transcript(audio: bytes, outcome: _Outcome) -> str:
    if outcome.empty:
        return ""
    text = tasks.decode_audio_text(audio)
    text = _fallback_transcript(audio) if text is None else text
    return text if outcome.correct else tasks.corrupt_text(text, outcome.rng)


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _openai_transcriptions(handler: _Handler, request: _Request) -> None:
    style: Style = "openai"
    if request.content_type != "multipart/form-data":
        raise _HttpError(style, 400, "Expected a multipart/form-data request body.")
    form = _parse_multipart(request.body, request.header("content-type"))
    if "file" not in form:
        raise _HttpError(style, 400, "Missing required parameter: 'file'.", param="file")
    if "model" not in form or not form["model"][0]:
        raise _HttpError(style, 400, "Missing required parameter: 'model'.", param="model")
    model = form["model"][0].decode("utf-8", "replace")
    audio = form["file"][0]
    response_format = form.get("response_format", (b"json", None))[0].decode() or "json"
    outcome = handler.sim._run(model, "openai.transcriptions", style)
    text = _transcript(audio, outcome)
    duration = round(tasks.audio_duration_s(audio), 3)
    if response_format == "text":
        body, content_type = text.encode(), "text/plain; charset=utf-8"
    elif response_format in ("srt", "vtt"):
        separator = "," if response_format == "srt" else "."
        span = f"{_timestamp(0, separator)} --> {_timestamp(duration, separator)}"
        cue = f"1\n{span}\n{text}\n" if response_format == "srt" else f"WEBVTT\n\n{span}\n{text}\n"
        body, content_type = cue.encode(), "text/plain; charset=utf-8"
    elif response_format == "verbose_json":
        segment = {
            "id": 0,
            "seek": 0,
            "start": 0.0,
            "end": duration,
            "text": text,
            "tokens": [],
            "temperature": 0.0,
            "avg_logprob": -0.1,
            "compression_ratio": 1.0,
            "no_speech_prob": 0.0,
        }
        verbose = {
            "task": "transcribe",
            "language": "english",
            "duration": duration,
            "text": text,
            "segments": [segment] if text else [],
        }
        body, content_type = _json_bytes(verbose), "application/json"
    else:
        body = _json_bytes({"text": text, "usage": {"type": "duration", "seconds": duration}})
        content_type = "application/json"
    handler.send_bytes(200, _malformed(body) if outcome.malformed else body, content_type)


# --------------------------------------------------------------------------------------------
# Hugging Face Inference


def _hf_route(handler: _Handler, request: _Request) -> None:
    rest = request.path[len(_HF_PREFIX) :]
    if request.method == "GET":
        if rest.endswith("/health") or rest in ("", "/"):
            handler.send_json(200, {"status": "ok"})
            return
        if rest.endswith("/info"):
            name = urllib.parse.unquote(rest.removeprefix("/models/").removesuffix("/info"))
            handler.send_json(200, {"model_id": name, "max_input_tokens": 1_000_000})
            return
        raise _HttpError("hf", 404, f"Not found: GET {request.path}")
    if request.method != "POST":
        raise _HttpError("hf", 404, f"Not found: {request.method} {request.path}")
    chat = False
    for suffix in ("/v1/chat/completions", "/chat/completions"):
        if rest.endswith(suffix):
            rest, chat = rest[: -len(suffix)], True
            break
    model: str | None = None
    task: str | None = None
    if rest.startswith("/models/"):
        model_part = rest[len("/models/") :]
        if "/pipeline/" in model_part:
            model_part, _, task_part = model_part.partition("/pipeline/")
            task = task_part.replace("_", "-")
        model = urllib.parse.unquote(model_part) or None
    elif rest not in ("", "/v1"):
        raise _HttpError("hf", 404, f"Not found: POST {request.path}")
    if chat:
        body_model = request.json_object("hf").get("model")
        if model is None and (not isinstance(body_model, str) or body_model in ("", "dummy")):
            body_model = "dummy"
        _openai_chat(handler, request, model=model or str(body_model))
        return
    if model is None:
        raise _HttpError(
            "hf",
            400,
            "POST to the Hugging Face base URL needs a model: use "
            f"{_HF_PREFIX}/models/<model>[/pipeline/<task>] (ProviderSimulator.hf_model_url).",
        )
    payload, raw = _hf_payload(request)
    if task is None:
        task = _infer_hf_task(payload, raw, request)
    if task not in HF_TASKS:
        raise _HttpError("hf", 400, f"Unsupported task {task!r}; supported: {', '.join(HF_TASKS)}")
    _hf_task(handler, request, model=model, task=task, payload=payload, raw=raw)


def _hf_payload(request: _Request) -> tuple[dict[str, Any] | None, bytes | None]:
    """The JSON payload, or the raw binary input (base64 ``inputs`` are decoded)."""
    body = request.body
    looks_json = request.content_type == "application/json" or body[:1] in (b"{", b"[")
    if looks_json:
        try:
            value = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            value = None
        if isinstance(value, dict):
            inputs = value.get("inputs")
            raw: bytes | None = None
            if isinstance(inputs, str) and len(inputs) >= 16 and " " not in inputs:
                try:
                    decoded = base64.b64decode(inputs, validate=True)
                except (binascii.Error, ValueError):
                    decoded = b""
                if tasks.is_audio(decoded) or tasks.is_image(decoded):
                    raw = decoded
            return value, raw
    return None, body


_TEXT_GENERATION_KEYS: Final[frozenset[str]] = tasks._wordset(
    "details decoder_input_details max_new_tokens return_full_text best_of grammar "
    "adapter_id top_n_tokens watermark truncate stop frequency_penalty"
)


def _infer_hf_task(payload: dict[str, Any] | None, raw: bytes | None, request: _Request) -> str:
    """Guess the task of a model-URL request without ``/pipeline/<task>``."""
    parameters: Mapping[str, Any] = {}
    if payload is not None and isinstance(payload.get("parameters"), Mapping):
        parameters = payload["parameters"]
    if raw is not None:
        if tasks.is_audio(raw):
            return (
                "audio-classification"
                if "top_k" in parameters or ("function_to_apply" in parameters)
                else "automatic-speech-recognition"
            )
        if "threshold" in parameters and len(parameters) == 1:
            return "object-detection"
        if {"mask_threshold", "overlap_mask_area_threshold", "subtask"} & set(parameters):
            return "image-segmentation"
        if {"top_k", "function_to_apply"} & set(parameters):
            return "image-classification"
        return "image-classification"
    if payload is None:
        return "text-generation"
    inputs = payload.get("inputs")
    if isinstance(inputs, Mapping) and "table" in inputs:
        return "table-question-answering"
    if "parameters" not in payload:
        return "feature-extraction"
    if "image/png" in request.header("accept"):
        return "text-to-image"
    if isinstance(inputs, str) and ("[MASK]" in inputs or "<mask>" in inputs):
        return "fill-mask"
    keys = set(parameters)
    if {"src_lang", "tgt_lang"} & keys:
        return "translation"
    if {"aggregation_strategy", "ignore_labels", "stride"} & keys:
        return "token-classification"
    if {"function_to_apply", "top_k"} & keys and not {"temperature", "do_sample"} & keys:
        return "text-classification"
    if {"negative_prompt", "height", "width", "guidance_scale", "num_inference_steps"} & keys:
        return "text-to-image"
    if {"clean_up_tokenization_spaces", "generate_parameters"} & keys:
        return "summarization"
    if "stream" in payload or _TEXT_GENERATION_KEYS & keys:
        return "text-generation"
    return "text-generation"


def _hf_text(payload: dict[str, Any] | None, key: str = "inputs") -> str:
    if payload is None:
        raise _HttpError("hf", 400, "This task takes a JSON body with 'inputs'.")
    value = payload.get(key)
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    raise _HttpError("hf", 400, f"Expected '{key}' to be a string, got {type(value).__name__}.")


def _hf_params(payload: dict[str, Any] | None) -> Mapping[str, Any]:
    parameters = payload.get("parameters") if payload is not None else None
    return parameters if isinstance(parameters, Mapping) else {}


def _hf_task(
    handler: _Handler,
    request: _Request,
    *,
    model: str,
    task: str,
    payload: dict[str, Any] | None,
    raw: bytes | None,
) -> None:
    binary_tasks = {
        "automatic-speech-recognition",
        "audio-classification",
        "image-to-text",
        "image-classification",
        "image-segmentation",
        "object-detection",
    }
    if task in binary_tasks:
        if raw is None:
            raise _HttpError("hf", 400, f"Task {task} takes a binary audio or image body.")
        prompt_tokens = None
    elif task == "table-question-answering":
        inputs = payload.get("inputs") if payload is not None else None
        if not isinstance(inputs, Mapping) or not isinstance(inputs.get("query"), str):
            raise _HttpError("hf", 400, "Expected 'inputs' with 'query' and 'table'.")
        prompt_tokens = tasks.count_tokens(inputs["query"])
    else:
        prompt_tokens = tasks.count_tokens(_hf_text(payload))
    route = f"hf.{task}"
    outcome = handler.sim._run(model, route, "hf", prompt_tokens)
    if task == "text-generation" and payload is not None and payload.get("stream"):
        handler.stream(_tgi_events(payload, outcome), "text/event-stream")
        return
    body, content_type = _hf_output(task, payload, raw, outcome)
    handler.send_bytes(200, _malformed(body) if outcome.malformed else body, content_type)


def _generation(payload: dict[str, Any], outcome: _Outcome) -> tuple[str, str, int]:
    """(generated text, TGI finish reason, generated tokens) for text-generation."""
    if outcome.empty:
        return "", "eos_token", 0
    prompt = _hf_text(payload)
    parameters = _hf_params(payload)
    text = tasks.model_answer(prompt, outcome.decision.correct, outcome.rng)
    text, stop = _apply_stop(text, _stop_list(parameters.get("stop")))
    finish = "stop_sequence" if stop else "eos_token"
    limit = parameters.get("max_new_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        text, cut = tasks.truncate_to_tokens(text, limit)
        finish = "length" if cut else finish
    if parameters.get("return_full_text"):
        text = f"{prompt} {text}"
    return text, finish, tasks.count_tokens(text)


def _tgi_events(payload: dict[str, Any], outcome: _Outcome) -> Iterator[bytes]:
    text, finish, generated = _generation(payload, outcome)
    pieces = list(tasks.iter_words(text)) or [""]
    if outcome.malformed:
        yield b'data:{"index":1,"token":{"id":\n\n'
        return
    for index, piece in enumerate(pieces, start=1):
        last = index == len(pieces)
        event = {
            "index": index,
            "token": {"id": index, "text": piece, "logprob": -0.1, "special": False},
            "generated_text": text if last else None,
            "details": {"finish_reason": finish, "generated_tokens": generated, "seed": None}
            if last
            else None,
        }
        yield f"data:{json.dumps(event)}\n\n".encode()


def _gray_mask(width: int, height: int, inside: bool) -> str:
    x0, x1, y0, y1 = width // 4, 3 * width // 4, height // 4, 3 * height // 4

    def pixel(x: int, y: int) -> int:
        hit = x0 <= x < x1 and y0 <= y < y1
        return 255 if hit == inside else 0

    return base64.b64encode(tasks.encode_png(width, height, pixel, gray=True)).decode("ascii")


def _hf_output(
    task: str, payload: dict[str, Any] | None, raw: bytes | None, outcome: _Outcome
) -> tuple[bytes, str]:
    rng = outcome.rng
    correct = outcome.decision.correct
    empty = outcome.empty
    parameters = _hf_params(payload)
    result: Any
    if task == "text-generation":
        assert payload is not None
        text, finish, generated = _generation(payload, outcome)
        item: dict[str, Any] = {"generated_text": text}
        if parameters.get("details"):
            item["details"] = {
                "finish_reason": finish,
                "generated_tokens": generated,
                "seed": None,
                "prefill": [],
                "tokens": [
                    {"id": i, "text": piece, "logprob": -0.1, "special": False}
                    for i, piece in enumerate(tasks.iter_words(text))
                ],
            }
        result = [item]
    elif task == "summarization":
        text = "" if empty else tasks.summarize(_hf_text(payload), correct, rng)
        result = [{"summary_text": text}]
    elif task == "translation":
        target = parameters.get("tgt_lang")
        text = (
            ""
            if empty
            else tasks.translate(
                _hf_text(payload), target if isinstance(target, str) else None, correct, rng
            )
        )
        result = [{"translation_text": text}]
    elif task == "fill-mask":
        targets = parameters.get("targets")
        top_k = parameters.get("top_k")
        result = (
            []
            if empty
            else tasks.fill_mask(
                _hf_text(payload),
                [str(t) for t in targets] if isinstance(targets, list) else None,
                top_k if isinstance(top_k, int) else 5,
                correct,
                rng,
            )
        )
    elif task == "table-question-answering":
        assert payload is not None
        inputs = payload["inputs"]
        table = inputs.get("table") if isinstance(inputs.get("table"), Mapping) else {}
        result = (
            {"answer": "", "coordinates": [], "cells": [], "aggregator": "NONE"}
            if empty
            else tasks.table_answer(str(inputs["query"]), table, correct, rng)
        )
    elif task == "automatic-speech-recognition":
        assert raw is not None
        result = {"text": _transcript(raw, outcome)}
    elif task == "text-to-speech":
        text = _hf_text(payload)
        spoken = "" if empty else text if correct else tasks.corrupt_text(text, rng)
        return tasks.encode_wav(spoken), "audio/wav"
    elif task == "audio-classification":
        assert raw is not None
        embedded = tasks.decode_audio_text(raw)
        labels = ["speech", "music", "noise", "silence"]
        if not embedded:
            labels.sort(key=lambda label: tasks._stable_int(raw[:512].hex() + label))
        if not correct:
            labels.append(labels.pop(0))
        scores = (0.85, 0.1, 0.04, 0.01)
        top_k = parameters.get("top_k")
        result = (
            []
            if empty
            else [{"label": lab, "score": s} for lab, s in zip(labels, scores, strict=True)][
                : top_k if isinstance(top_k, int) and top_k > 0 else None
            ]
        )
    elif task == "text-to-image":
        width = parameters.get("width")
        height = parameters.get("height")
        w = min(_MAX_IMAGE_SIDE, width) if isinstance(width, int) and width > 0 else 16
        h = min(_MAX_IMAGE_SIDE, height) if isinstance(height, int) and height > 0 else 16
        prompt = _hf_text(payload)
        if empty:
            return tasks.encode_png(1, 1, lambda x, y: (0, 0, 0)), "image/png"
        shown = prompt if correct else tasks.corrupt_text(prompt, rng)
        return tasks.image_for_prompt(shown, w, h), "image/png"
    elif task == "image-to-text":
        assert raw is not None
        result = [{"generated_text": "" if empty else tasks.caption(raw, correct, rng)}]
    elif task in ("image-classification", "object-detection", "image-segmentation"):
        assert raw is not None
        labels = tasks.image_labels(raw, correct, rng)
        width, height = tasks.image_size(raw)
        if empty:
            result = []
        elif task == "image-classification":
            class_scores = (0.8, 0.1, 0.05, 0.03, 0.02)
            top_k = parameters.get("top_k")
            limit = top_k if isinstance(top_k, int) and top_k > 0 else 5
            result = [
                {"label": label, "score": score}
                for label, score in zip(labels, class_scores, strict=False)
            ][:limit]
        elif task == "object-detection":
            threshold = parameters.get("threshold")
            floor = threshold if isinstance(threshold, int | float) else 0.5
            boxes = [
                (labels[0], 0.97, (width // 4, height // 4, 3 * width // 4, 3 * height // 4)),
                (labels[1], 0.62, (0, 0, max(1, width // 3), max(1, height // 3))),
            ]
            result = [
                {
                    "label": label,
                    "score": score,
                    "box": {"xmin": box[0], "ymin": box[1], "xmax": box[2], "ymax": box[3]},
                }
                for label, score, box in boxes
                if score >= floor
            ]
        else:
            w, h = min(width, _MAX_IMAGE_SIDE), min(height, _MAX_IMAGE_SIDE)
            result = [
                {"label": labels[0], "score": 0.95, "mask": _gray_mask(w, h, True)},
                {"label": "background", "score": 0.9, "mask": _gray_mask(w, h, False)},
            ]
    elif task == "feature-extraction":
        assert payload is not None
        inputs = payload.get("inputs")
        texts = inputs if isinstance(inputs, list) else [_hf_text(payload)]
        dims = payload.get("dimensions")
        size = dims if isinstance(dims, int) and dims > 0 else _DEFAULT_EMBEDDING_DIMENSIONS
        result = [[] if empty else tasks.embed(str(t), size, correct, rng) for t in texts]
    elif task == "text-classification":
        top_k = parameters.get("top_k")
        result = [
            []
            if empty
            else tasks.text_classes(
                _hf_text(payload), top_k if isinstance(top_k, int) else None, correct, rng
            )
        ]
    else:  # token-classification
        result = [] if empty else tasks.entities(_hf_text(payload), correct, rng)
    return _json_bytes(result), "application/json"
