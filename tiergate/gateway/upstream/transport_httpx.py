"""The transport seam over an injected `httpx` transport (tests with respx, embedders with their own client)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import httpx

from tiergate.gateway.upstream.transport import TransportError, UpstreamResponse


class _HttpxResponse:
    __slots__ = ("_response", "headers", "status")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        try:
            return await self._response.aread()
        except httpx.TimeoutException:
            raise TransportError("upstream timed out while sending its answer", timeout=True) from None
        except httpx.HTTPError as exc:
            raise TransportError(f"upstream connection broke: {exc.__class__.__name__}") from None
        finally:
            await self._response.aclose()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx.TimeoutException:
            raise TransportError("upstream stopped sending (read timeout)", timeout=True) from None
        except httpx.HTTPError as exc:
            raise TransportError(f"upstream stream broke: {exc.__class__.__name__}") from None

    async def aclose(self) -> None:
        await self._response.aclose()


class HttpxTransport:
    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._client = httpx.AsyncClient(transport=transport)

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
        timeout = httpx.Timeout(None if stream else timeout_s, connect=connect_timeout_s, read=timeout_s)
        request = self._client.build_request("POST", url, content=body, headers=headers, timeout=timeout)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException:
            raise TransportError("upstream timed out", timeout=True) from None
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach upstream: {exc.__class__.__name__}: {exc}") from None
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        await self._client.aclose()
