"""uvicorn's httptools protocol, with each response sent in one write instead of two.

uvicorn writes a response's status line and headers as soon as the app starts the response,
then its body in a second write. On uvloop each write is a system call made while holding the
interpreter lock, and on loopback each wakes the client, which reads the headers, finds no
body yet and sleeps again. The service's answers are small and complete in one event-loop
step, so :class:`CoalescingHttpToolsProtocol` hands uvicorn a transport that keeps the writes of
one step and sends them together at the end of it: one system call and one wake-up per
response. Streamed bodies and large answers still go out step by step, so nothing waits longer
than the rest of the step that wrote it.

``serve`` uses it when httptools is installed (uvicorn's own choice then); without httptools
uvicorn's h11 protocol is used unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base

    HAVE_HTTPTOOLS = True
except ImportError:  # pragma: no cover - httptools (or uvicorn) not installed
    _Base = asyncio.Protocol  # type: ignore[misc, assignment]
    HAVE_HTTPTOOLS = False


class _CoalescingTransport:
    """A transport whose writes within one event-loop step go out as one.

    Everything but writing and closing is the wrapped transport's own (flow control, extra
    info, pausing reads), so uvicorn's protocol sees the same transport it would otherwise.
    """

    __slots__ = ("_chunks", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._chunks: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._chunks:
            self._loop.call_soon(self._flush)
        self._chunks.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _flush(self) -> None:
        if not self._chunks:
            return
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(c) for c in self._chunks)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()  # what was written before close is sent, as the transport itself does
        self._transport.close()

    def abort(self) -> None:
        self._chunks.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(_Base):
    """uvicorn's httptools protocol, each response sent in one write (see the module).

    Only usable when ``HAVE_HTTPTOOLS`` (otherwise a bare placeholder, never given to uvicorn).
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        wrapped = _CoalescingTransport(transport, self.loop)  # type: ignore[arg-type]
        super().connection_made(wrapped)  # type: ignore[arg-type]
