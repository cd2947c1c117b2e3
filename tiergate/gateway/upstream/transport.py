"""The seam between the gateway and the network.

The hot path uses one `aiohttp.ClientSession` (a quarter of httpx's CPU per request on this workload);
`transport_httpx.HttpxTransport` serves tests and embedders that inject an `httpx` transport (e.g. respx's mock
router); it lives in its own module because importing httpx costs ~20 ms and several MB the hot path never needs.
Both present the same small interface, so nothing above this module knows which one runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import aiohttp


class TransportError(Exception):
    """The upstream could not be reached or stopped answering; `timeout` tells the two apart."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Transport(Protocol):
    async def send(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        timeout_s: float,
        connect_timeout_s: float,
        stream: bool,
    ) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


class _AiohttpResponse:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except TimeoutError:
            raise TransportError("upstream timed out while sending its answer", timeout=True) from None
        except aiohttp.ClientError as exc:
            raise TransportError(f"upstream connection broke: {exc.__class__.__name__}") from None
        finally:
            self._response.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except TimeoutError:
            raise TransportError("upstream stopped sending (read timeout)", timeout=True) from None
        except aiohttp.ClientError as exc:
            raise TransportError(f"upstream stream broke: {exc.__class__.__name__}") from None

    async def aclose(self) -> None:
        # close(), not release(): an unfinished stream must not go back to the pool, and closing the socket
        # is what tells the upstream to stop generating.
        self._response.close()


class AiohttpTransport:
    def __init__(self) -> None:
        # limit=0: no pool-wide cap; upstream concurrency is bounded by the clients and by limits upstream.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60),
            auto_decompress=True,
            trust_env=False,
        )
        self._timeouts: dict[tuple[float, float, bool], aiohttp.ClientTimeout] = {}

    def _timeout(self, timeout_s: float, connect_timeout_s: float, stream: bool) -> aiohttp.ClientTimeout:
        key = (timeout_s, connect_timeout_s, stream)
        timeout = self._timeouts.get(key)
        if timeout is None:
            # A stream may run longer than timeout_s in total; what must not exceed it is a silence.
            timeout = aiohttp.ClientTimeout(
                total=None if stream else timeout_s, sock_connect=connect_timeout_s, sock_read=timeout_s
            )
            self._timeouts[key] = timeout
        return timeout

    async def send(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        timeout_s: float,
        connect_timeout_s: float,
        stream: bool,
    ) -> UpstreamResponse:
        try:
            response = await self._session.post(
                url,
                data=body,
                headers=headers,
                timeout=self._timeout(timeout_s, connect_timeout_s, stream),
                allow_redirects=False,
            )
        except TimeoutError:
            raise TransportError("upstream timed out", timeout=True) from None
        except aiohttp.ClientError as exc:
            raise TransportError(f"cannot reach upstream: {exc.__class__.__name__}: {exc}") from None
        return _AiohttpResponse(response)

    async def aclose(self) -> None:
        await self._session.close()
