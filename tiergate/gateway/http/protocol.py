"""uvicorn's httptools protocol, stamping when each request's first bytes were read from the socket.

The gateway's overhead figures (the histogram, `x-tiergate-overhead-ms`) start from that stamp
(`scope["tiergate.arrived"]`) rather than from the app's entry, so they include parsing the request and,
under load, the time it waited for the event loop: both are part of what a client sees the gateway add.
Without this protocol (another server, tests through an ASGI transport) they start at the app's entry.
"""

from __future__ import annotations

import time

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

ARRIVED = "tiergate.arrived"


class ArrivalStampingProtocol(HttpToolsProtocol):
    _received_at = 0.0

    def data_received(self, data: bytes) -> None:
        # A request begins inside the parsing of the data that holds its first bytes (on_message_begin).
        self._received_at = time.perf_counter()
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[ARRIVED] = self._received_at  # type: ignore[literal-required]
