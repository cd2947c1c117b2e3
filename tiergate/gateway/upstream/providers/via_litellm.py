"""Providers that do not speak OpenAI's protocol (Anthropic, Bedrock, Vertex, ...), translated by litellm.

litellm takes seconds to import, so it is loaded once in a worker thread when the first such deployment is
configured (see `LiteLLMProvider.preload`), never on the event loop and never when no deployment needs it.
Its answers are re-shaped into the OpenAI bytes the fast path would have produced, so everything downstream
(relay, usage, errors) is shared.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from tiergate.gateway.config.settings import Deployment
from tiergate.gateway.errors import GatewayError
from tiergate.gateway.http.bodies import ChatRequest, EmbeddingsRequest
from tiergate.gateway.upstream.transport import TransportError, UpstreamResponse

# Fields the gateway handles itself or that litellm takes as named arguments.
_OWN_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "input"})


def _import_litellm() -> Any:
    # Offline: use the price map inside the wheel instead of fetching the latest one.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.drop_params = (
        True  # a field the provider lacks is dropped, as OpenAI-compatible servers ignore it
    )
    return litellm


class _Buffered:
    """A complete answer (or error) produced in-process, shaped like a network response."""

    def __init__(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.headers: Mapping[str, str] = headers or {"content-type": "application/json"}
        self._body = body

    async def read(self) -> bytes:
        return self._body

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._body

    async def aclose(self) -> None:
        return None


class _Streamed:
    """litellm's chunk objects as OpenAI SSE frames."""

    status = 200
    headers: Mapping[str, str] = {"content-type": "text/event-stream"}

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield b"data: " + orjson.dumps(chunk.model_dump(exclude_none=True)) + b"\n\n"
        except Exception as exc:
            raise TransportError(f"provider stream broke: {exc.__class__.__name__}: {exc}") from None
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception:  # closing a half-read provider stream must never mask the real outcome
                return


def _error_response(exc: Exception) -> UpstreamResponse:
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int) or status < 400:
        raise TransportError(
            f"provider call failed: {exc.__class__.__name__}: {exc}", timeout="Timeout" in type(exc).__name__
        )
    message = str(getattr(exc, "message", None) or exc)
    return _Buffered(status, GatewayError(message, status=status, code=type(exc).__name__).body())


class LiteLLMProvider:
    def __init__(self) -> None:
        self._module: asyncio.Future[Any] | None = None

    def preload(self) -> None:
        """Start importing litellm in a thread; requests await it instead of importing on the loop."""
        if self._module is None:
            self._module = asyncio.ensure_future(asyncio.to_thread(_import_litellm))

    async def _litellm(self) -> Any:
        self.preload()
        assert self._module is not None
        return await self._module

    @staticmethod
    def _target(deployment: Deployment) -> dict[str, Any]:
        target: dict[str, Any] = {
            "model": f"{deployment.provider}/{deployment.model}",
            "api_base": deployment.api_base,
            "timeout": deployment.timeout_s,
            "num_retries": 0,  # tiergate's own retry, fallback and escalation govern
        }
        if deployment.api_key:
            target["api_key"] = deployment.api_key
        if deployment.extra_headers:
            target["extra_headers"] = dict(deployment.extra_headers)
        return target

    async def chat(
        self, deployment: Deployment, request: ChatRequest, *, want_usage_chunk: bool
    ) -> UpstreamResponse:
        litellm = await self._litellm()
        params = {k: v for k, v in request.body.items() if k not in _OWN_FIELDS}
        params.update(self._target(deployment))
        params["messages"] = request.messages
        if request.stream:
            params["stream"] = True
            if want_usage_chunk or request.include_usage:
                params["stream_options"] = {"include_usage": True}
        try:
            response = await litellm.acompletion(**params)
        except Exception as exc:
            return _error_response(exc)
        if request.stream:
            return _Streamed(response)
        return _Buffered(200, orjson.dumps(response.model_dump(exclude_none=True)))

    async def embeddings(self, deployment: Deployment, request: EmbeddingsRequest) -> UpstreamResponse:
        litellm = await self._litellm()
        params = {k: v for k, v in request.body.items() if k not in _OWN_FIELDS}
        params.update(self._target(deployment))
        params["input"] = request.body["input"]
        try:
            response = await litellm.aembedding(**params)
        except Exception as exc:
            return _error_response(exc)
        return _Buffered(200, orjson.dumps(response.model_dump(exclude_none=True)))

    async def aclose(self) -> None:
        return None
