"""Domain inference by an embeddings deployment (`routing.domains.embeddings`) instead of the local MiniLM.

The query's last user message goes to the deployment's `/v1/embeddings` through the upstream client (its
retries, fallback between the deployments of the name or tier, cooldown and per-deployment timeout), with
an overall deadline (`timeout_s`) so a slow upstream cannot hold the request: on any failure the caller
routes the query as `general` and says why. Vectors of identical texts come from a bounded LRU, and
identical texts in flight share one call.

Spend: each call is booked in the ledger as a row of kind `routing`, under the tenant and key whose request
needed it (the seeds' call at startup under no tenant). Like evaluation spend it is the gateway's own, so it
counts against no client budget and the cost report shows it in its own columns.

Only domain inference uses this: the semantic cache needs MiniLM's per-token states for its verifier and
stays on the local model.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson

from tiergate.gateway.accounting.auth import MASTER, Principal
from tiergate.gateway.accounting.records import CallRecord, Sink
from tiergate.gateway.config.routing import DomainEmbeddings
from tiergate.gateway.errors import GatewayError
from tiergate.gateway.http.bodies import EmbeddingsRequest
from tiergate.gateway.upstream.client import Attempted, UpstreamClient
from tiergate.gateway.upstream.fleet import Fleet
from tiergate.gateway.upstream.tokens import TokenCounter
from tiergate.policies.pricing import cost_nano
from tiergate.policies.routing import Catalog, RoutePlan, Target
from tiergate.policies.usage import embeddings_usage

KIND = "routing"  # the ledger kind of these calls


class EmbeddingUnavailable(Exception):
    """The deployment gave no usable vectors; the message says why (no secrets: it names deployments)."""


def plan_for(config: DomainEmbeddings, catalog: Catalog) -> RoutePlan:
    """The deployments of the configured name (or, failing that, tier): one target, never escalated."""
    ids = catalog.names.get(config.deployment) or catalog.tiers.get(config.deployment)
    if not ids:
        raise EmbeddingUnavailable(f"no deployment serves {config.deployment!r}")
    return RoutePlan((Target(catalog.deployment_tier.get(ids[0]), ids),), "domain embeddings")


def vectors_of(body: bytes, count: int, dimensions: int) -> np.ndarray:
    """(count, dimensions) unit rows from an OpenAI embeddings response, in input order."""
    try:
        doc = orjson.loads(body)
        rows = sorted(doc["data"], key=lambda item: item["index"])
        matrix = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise EmbeddingUnavailable("the embeddings response is not an OpenAI embeddings list") from None
    if matrix.shape != (count, dimensions):
        got = matrix.shape[1] if matrix.ndim == 2 and len(matrix) else 0
        raise EmbeddingUnavailable(
            f"the embeddings response has {len(matrix)} vectors of {got} dimensions, "
            f"expected {count} of {dimensions} (routing.domains.embeddings.dimensions)"
        )
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if not np.all(np.isfinite(matrix)) or np.any(norms == 0):
        raise EmbeddingUnavailable("the embeddings response holds a zero or non-finite vector")
    out: np.ndarray = matrix / norms
    return out


def _usage_tokens(body: bytes) -> int | None:
    try:
        return embeddings_usage(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None


class UpstreamEmbedder:
    def __init__(
        self,
        config: DomainEmbeddings,
        upstream: UpstreamClient,
        fleet: Fleet,
        ledger: Sink,
        tokens: TokenCounter,
    ) -> None:
        self.config = config
        self._upstream = upstream
        self._fleet = fleet
        self._ledger = ledger
        self._tokens = tokens
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._flying: dict[str, asyncio.Future[np.ndarray]] = {}
        self.calls = 0  # upstream calls made (cache hits and shared calls make none)

    def bound(self, principal: Principal, request_id: str) -> Callable[[str], Awaitable[np.ndarray]]:
        """The query's domain encoder: embeds one text, booking any call under this request."""

        async def vector(text: str) -> np.ndarray:
            return await self.avector(text, principal, request_id)

        return vector

    async def avector(self, text: str, principal: Principal, request_id: str) -> np.ndarray:
        """One unit vector; raises EmbeddingUnavailable (also when `timeout_s` passes first)."""
        hit = self._cache.get(text)
        if hit is not None:
            self._cache.move_to_end(text)
            return hit
        shared = self._flying.get(text)
        if shared is None:
            shared = asyncio.ensure_future(self._fetch_one(text, principal, request_id))
            self._flying[text] = shared
            shared.add_done_callback(lambda done: self._landed(text, done))
        try:
            # Shielded: a waiter that gives up does not cancel the call others are waiting on.
            return await asyncio.wait_for(asyncio.shield(shared), self.config.timeout_s)
        except TimeoutError:
            raise EmbeddingUnavailable(f"no embedding within {self.config.timeout_s:g} s") from None

    def _landed(self, text: str, done: asyncio.Future[np.ndarray]) -> None:
        self._flying.pop(text, None)
        if not done.cancelled():
            done.exception()  # retrieved here too: every waiter may have given up on it already

    async def aembed(
        self, texts: list[str], principal: Principal = MASTER, request_id: str = ""
    ) -> np.ndarray:
        """(n, dimensions) unit vectors in one call (the seeds at startup); not cached, no deadline."""
        return await self._call(texts, principal, request_id or "domain-seeds")

    async def _fetch_one(self, text: str, principal: Principal, request_id: str) -> np.ndarray:
        vector: np.ndarray = (await self._call([text], principal, request_id))[0]
        self._cache[text] = vector
        if len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)
        return vector

    async def _call(self, texts: list[str], principal: Principal, request_id: str) -> np.ndarray:
        started, wall = time.perf_counter(), time.time()
        body: dict[str, Any] = {"model": self.config.deployment, "input": texts}
        request = EmbeddingsRequest(orjson.dumps(body), body, self.config.deployment)
        self.calls += 1
        try:
            answer = await self._upstream.embeddings(
                plan_for(self.config, self._fleet.snapshot.catalog), request, trail=Attempted()
            )
        except GatewayError as exc:
            raise EmbeddingUnavailable(f"{self.config.deployment}: {exc}") from None
        deployment = answer.deployment
        prompt = _usage_tokens(answer.body)
        if prompt is None:
            await self._tokens.ready(deployment.model)
            prompt = sum(self._tokens.text(t, deployment.model) for t in texts)
        # Booked before the vectors are checked: a malformed answer was still paid for.
        self._ledger(
            CallRecord(
                request_id=request_id,
                endpoint="embeddings",
                principal=principal,
                requested_model=self.config.deployment,
                started_at=wall,
                kind=KIND,
                tier=answer.tier,
                deployment_id=deployment.id,
                model=deployment.model,
                prompt_tokens=prompt,
                cost_nano=cost_nano(deployment.price, prompt, 0),
                latency_s=time.perf_counter() - started,
            )
        )
        return vectors_of(answer.body, len(texts), self.config.dimensions)
