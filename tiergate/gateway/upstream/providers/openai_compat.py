"""Any OpenAI-compatible server (OpenAI, vLLM, Ollama, Groq, ...): the caller's bytes, minimally rewritten."""

from __future__ import annotations

from typing import Any

from tiergate.gateway.config.settings import Deployment
from tiergate.gateway.http.bodies import ChatRequest, EmbeddingsRequest, with_fields
from tiergate.gateway.upstream.transport import Transport, UpstreamResponse


class OpenAICompatible:
    def __init__(self, transport: Transport, connect_timeout_s: float) -> None:
        self._transport = transport
        self._connect_timeout_s = connect_timeout_s
        self._headers: dict[str, dict[str, str]] = {}

    def _headers_for(self, deployment: Deployment) -> dict[str, str]:
        headers = self._headers.get(deployment.id)
        if headers is None:
            headers = {"content-type": "application/json", **deployment.extra_headers}
            if deployment.api_key:
                headers["authorization"] = f"Bearer {deployment.api_key}"
            self._headers[deployment.id] = headers
        return headers

    async def chat(
        self, deployment: Deployment, request: ChatRequest, *, want_usage_chunk: bool
    ) -> UpstreamResponse:
        updates: dict[str, Any] = {}
        if request.model != deployment.model:
            updates["model"] = deployment.model
        if want_usage_chunk and request.stream and not request.include_usage:
            updates["stream_options"] = {**(request.body.get("stream_options") or {}), "include_usage": True}
        body = with_fields(request.raw, request.body, updates) if updates else request.raw
        return await self._transport.send(
            f"{deployment.api_base}/chat/completions",
            self._headers_for(deployment),
            body,
            timeout_s=deployment.timeout_s,
            connect_timeout_s=self._connect_timeout_s,
            stream=request.stream,
        )

    async def embeddings(self, deployment: Deployment, request: EmbeddingsRequest) -> UpstreamResponse:
        body = request.raw
        if request.model != deployment.model:
            body = with_fields(request.raw, request.body, {"model": deployment.model})
        return await self._transport.send(
            f"{deployment.api_base}/embeddings",
            self._headers_for(deployment),
            body,
            timeout_s=deployment.timeout_s,
            connect_timeout_s=self._connect_timeout_s,
            stream=False,
        )

    async def aclose(self) -> None:
        await self._transport.aclose()
