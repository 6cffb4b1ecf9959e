"""The protocol ``kalibr-core serve`` runs: uvicorn's httptools protocol, one write per response.

The transport it hands uvicorn keeps the writes of one event-loop step and sends them together
when the step ends; everything else is the real transport's.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from kalibr_core.service._http import CoalescingHttpToolsProtocol, _CoalescingTransport


class _Recorded(asyncio.Transport):
    """A transport that records what is sent and what is asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))
        self.events.append("write")

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def abort(self) -> None:
        self.closing = True
        self.events.append("abort")

    def write_eof(self) -> None:
        self.events.append("eof")

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name == "sockname" else default

    def pause_reading(self) -> None:
        self.events.append("pause_reading")


def _step() -> Any:
    return asyncio.sleep(0)


def test_the_writes_of_one_step_are_sent_as_one_when_the_step_ends() -> None:
    async def scenario() -> None:
        real = _Recorded()
        transport = _CoalescingTransport(real, asyncio.get_running_loop())
        head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
        transport.write(head)
        transport.write(bytearray(b"{}"))
        transport.write(b"")  # nothing to send: no write
        assert real.writes == []  # held until the step ends
        assert transport.get_write_buffer_size() == 7 + len(head) + 2
        await _step()
        assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        transport.writelines([b"a", memoryview(b"b")])
        await _step()
        transport.write(b"c")  # a later step: sent on its own, not held for more
        await _step()
        assert real.writes[1:] == [b"ab", b"c"]

    asyncio.run(scenario())


def test_close_sends_what_was_written_first_and_abort_drops_it() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        real = _Recorded()
        transport = _CoalescingTransport(real, loop)
        transport.write(b"last words")
        transport.close()
        assert (real.writes, real.events) == ([b"last words"], ["write", "close"])
        await _step()  # the scheduled flush finds nothing left
        assert real.writes == [b"last words"]

        aborted = _Recorded()
        transport = _CoalescingTransport(aborted, loop)
        transport.write(b"never sent")
        transport.abort()
        await _step()
        assert (aborted.writes, aborted.events) == ([], ["abort"])

        ended = _Recorded()
        transport = _CoalescingTransport(ended, loop)
        transport.write(b"body")
        transport.write_eof()
        assert ended.events == ["write", "eof"]

        gone = _Recorded()
        transport = _CoalescingTransport(gone, loop)
        transport.write(b"too late")
        gone.closing = True  # the peer went away within the step: nothing to send to
        await _step()
        assert gone.writes == []

    asyncio.run(scenario())


def test_everything_else_is_the_real_transports() -> None:
    async def scenario() -> None:
        real = _Recorded()
        transport = _CoalescingTransport(real, asyncio.get_running_loop())
        assert transport.get_extra_info("sockname") == ("127.0.0.1", 8000)
        assert transport.get_extra_info("peername", "none") == "none"
        transport.pause_reading()
        assert real.events == ["pause_reading"]
        assert transport.is_closing() is False

    asyncio.run(scenario())


class _CountedWrites:
    """The server's real transport, counting the writes made to it."""

    def __init__(self, transport: asyncio.Transport, counts: list[int]) -> None:
        self._transport, self._counts = transport, counts

    def write(self, data: Any) -> None:
        self._counts.append(len(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _serve_and_count(protocol: type[asyncio.Protocol], requests: int) -> tuple[list[int], list]:
    """Serve a small JSON answer with ``protocol``; (sizes of the socket writes, responses)."""
    import uvicorn

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await receive()
        body = b'{"status":"ok"}'
        headers = [(b"content-type", b"application/json"), (b"content-length", b"15")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    counts: list[int] = []

    class Counted(protocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(_CountedWrites(transport, counts))  # type: ignore[arg-type]

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, log_level="warning", ws="none", http=Counted)
    server = uvicorn.Server(config)

    async def scenario() -> list[bytes]:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        responses = []
        for _ in range(requests):  # keep-alive: one connection for all
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            responses.append(await reader.readuntil(b'{"status":"ok"}'))
        writer.close()
        server.should_exit = True
        await serving
        return responses

    try:
        return counts, asyncio.run(scenario())
    finally:
        sock.close()


def test_a_served_response_is_one_write_on_the_socket() -> None:
    # Under a real uvicorn server, against uvicorn's own protocol on the same app: the same
    # bytes, in half the writes (the status line and headers used to go out on their own).
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    ours, our_responses = _serve_and_count(CoalescingHttpToolsProtocol, 20)
    theirs, their_responses = _serve_and_count(HttpToolsProtocol, 20)
    assert len(theirs) == 40
    assert len(ours) == 20
    assert sum(ours) == sum(theirs)
    for response in our_responses:
        assert response.startswith(b"HTTP/1.1 200 OK\r\n")
        assert response.endswith(b'\r\n\r\n{"status":"ok"}')
    assert [len(r) for r in our_responses] == [len(r) for r in their_responses]


def test_serve_runs_this_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from kalibr_core.service import _cli

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.update(options))
    monkeypatch.setattr(
        "kalibr_core.service._app.create_app", lambda **kwargs: object(), raising=True
    )
    options = {"host": "127.0.0.1", "port": 0, "store_url": ":memory:", "allow_remote": False}
    assert _cli.serve(**options, dev_key=None, log_level="warning") == 0
    assert seen["http"] is CoalescingHttpToolsProtocol
