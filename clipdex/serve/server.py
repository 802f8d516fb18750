"""Running the app under uvicorn, bounded for slow and idle clients.

uvicorn closes a connection left idle *between* requests (``timeout_keep_alive``) but puts no deadline on the
request's headers: its keep-alive timer is cancelled by the first byte, so a client that opens a connection and
sends its headers one byte a second holds the connection (and a file descriptor) for as long as it likes.
``HeaderTimeoutH11`` adds that deadline: from the opening of the connection, or from the first byte of each later
request, the headers must be complete within ``header_timeout`` seconds; otherwise a request begun is answered
``408`` (a one-line JSON error) and the connection closed. Headers are bounded in size too (``MAX_HEADER_BYTES``,
h11's limit on an incomplete event: past it the request is a 400).
"""
from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from clipdex.serve.config import ServeConfig

MAX_HEADER_BYTES = 16 << 10   # request line and headers together
KEEP_ALIVE = 5                # seconds an idle keep-alive connection stays open


class HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's headers (``header_timeout`` seconds)."""

    header_timeout = 10.0
    _deadline = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:   # a new request's first bytes (or more of its headers)
            self._arm()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:   # its headers are complete (or it failed): no deadline
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:   # a request was begun: say why it is dropped
            self.transport.write(late_response(self.header_timeout))
        self.transport.close()


def late_response(seconds: float) -> bytes:
    """The raw ``408`` sent to a client whose headers did not arrive in time (h11 has no request to answer)."""
    body = json.dumps({"error": f"request headers not received within {seconds:g} s", "status": 408}).encode()
    head = (f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode("ascii") + body


def server_options(config: ServeConfig) -> dict:
    """The options ``clipdex serve`` gives ``uvicorn.run`` (or ``uvicorn.Config``): host and port, the h11 protocol
    with the header deadline (``config.header_timeout``), bounded headers and keep-alive; on SIGTERM, requests in
    flight get ``config.shutdown_timeout`` seconds to finish, then they are cancelled (their work with them)."""
    protocol = type("HeaderTimeoutH11", (HeaderTimeoutH11,), {"header_timeout": config.header_timeout})
    return {"host": config.host, "port": config.port, "log_level": "warning", "http": protocol,
            "timeout_keep_alive": KEEP_ALIVE, "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
            "timeout_graceful_shutdown": config.shutdown_timeout}
