"""How a request reaches a deployment: the byte-level OpenAI-compatible fast path, or litellm for the rest."""

from __future__ import annotations

from typing import Protocol

from tiergate.gateway.config.settings import Deployment
from tiergate.gateway.http.bodies import ChatRequest, EmbeddingsRequest
from tiergate.gateway.upstream.transport import UpstreamResponse


class Provider(Protocol):
    async def chat(
        self, deployment: Deployment, request: ChatRequest, *, want_usage_chunk: bool
    ) -> UpstreamResponse:
        """Send a chat completion; for streams, `want_usage_chunk` asks the upstream for the usage chunk."""

    async def embeddings(self, deployment: Deployment, request: EmbeddingsRequest) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...
