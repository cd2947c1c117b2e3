"""Which response caches a chat request uses, the lookup (exact, then semantic) and the store after it.

`pipeline.py` calls these in its order; the storage is in `exact.py` and `semantic.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tiergate.gateway.accounting.auth import Principal
from tiergate.gateway.cache.exact import CachedAnswer, ResponseCache
from tiergate.gateway.cache.semantic import SemanticCache, SemanticEntry
from tiergate.gateway.config.cache import CacheSettings
from tiergate.gateway.http.bodies import ChatRequest
from tiergate.gateway.routing.query import ChatQuery
from tiergate.gateway.upstream.client import Answer
from tiergate.policies.cache import (
    CachePolicy,
    CacheRequest,
    cacheable,
    exact_key,
    partition,
    semantic_scope,
    storable,
)
from tiergate.policies.routing import RoutePlan


@dataclass(frozen=True, slots=True)
class CacheUse:
    """Where a request may be looked up and stored: its exact key and its semantic scope (None: not used)."""

    policy: CachePolicy
    partition: str
    exact: str | None
    scope: str | None  # the semantic cache's `semantic_scope`


class ResponseCaches:
    """The exact and the semantic cache as the request path uses them (None: no tenant has that one on)."""

    def __init__(
        self, settings: CacheSettings, exact: ResponseCache | None, semantic: SemanticCache | None
    ) -> None:
        self._settings = settings
        self.exact = exact
        self.semantic = semantic

    def use(
        self,
        principal: Principal,
        request: ChatRequest,
        plan: RoutePlan,
        wants: CacheRequest,
        query: ChatQuery,
    ) -> CacheUse | None:
        """Which caches this request uses, or None; decides nothing that costs an embedding."""
        if not (wants.lookup or wants.store):
            return None
        # Admin API override > the config's `cache.tenants` > global; the override came with the key, no query.
        policy = principal.cache
        if policy is None:
            policy = self._settings.policy_for(principal.tenant_id)
        if not cacheable(request.body, policy):
            return None
        part = partition(principal.kind, principal.tenant_id, principal.key_id)
        route = ";".join(f"{t.tier}={','.join(t.deployments)}" for t in plan.targets) + (
            ":v" if plan.verify else ""
        )
        if principal.cache_epoch:  # after a purge: a new generation, under which nothing older is found
            route += f"@{principal.cache_epoch}"
        exact = (
            f"{part}:{exact_key(part, route, request.body)}"
            if self.exact is not None and policy.exact
            else None
        )
        semantic = self.semantic is not None and policy.semantic and query.only_text
        scope = semantic_scope(route, query.context_hash, request.body) if semantic else None
        if exact is None and scope is None:
            return None
        return CacheUse(policy, part, exact, scope)

    def writer(
        self, use: CacheUse | None, wants: CacheRequest, query: ChatQuery, answer: Answer
    ) -> Callable[[dict[str, Any]], None] | None:
        if use is None or not wants.store:
            return None
        cache, semantic = self.exact, self.semantic

        def store(doc: dict[str, Any]) -> None:
            if not storable(doc):
                return
            if use.exact is not None and cache is not None:
                entry = {"answer": doc, "tier": answer.tier, "model": answer.deployment.model}
                cache.put(use.exact, entry, wants.ttl_s or use.policy.exact_ttl_s)
            if use.scope is not None and semantic is not None:
                ttl_s = wants.ttl_s or use.policy.semantic_ttl_s
                semantic.put(
                    SemanticEntry(
                        use.partition, use.scope, query.text, doc, answer.tier, answer.deployment.model, ttl_s
                    )
                )

        return store

    async def lookup(
        self, use: CacheUse, wants: CacheRequest, query: ChatQuery, domain: str | None
    ) -> tuple[CachedAnswer, str, dict[str, str]] | None:
        """Exact first, then semantic: (the stored answer, which cache, headers to add), or None."""
        if use.exact is not None and self.exact is not None:
            hit = await self.exact.get(use.exact, wants.max_age_s)
            if hit is not None:
                return hit, "exact", {}
        if use.scope is not None and self.semantic is not None:
            policy = use.policy.semantic_policy(domain)
            found = await self.semantic.lookup(use.partition, use.scope, query, policy, wants.max_age_s)
            if found is not None:
                similarity = {"x-tiergate-cache-similarity": f"{found.decision.similarity:.4f}"}
                return found.answer, "semantic", similarity
        return None
