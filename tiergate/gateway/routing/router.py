"""Routing in the gateway: the live route table and domain centroids, and the plan for each request.

The decision itself is pure (`policies.routing`); this module gathers its inputs: the tenant's policy, the
request's features (prompt tokens only when a rule needs them), the query's domain (an embedding only when
the policy needs it), the route table in force and the deployments' health. A new route-table version is
installed by swapping one immutable snapshot, so a request sees either the old table or the new one.

Monitoring samples (a promoted domain's share served by its incumbent) are only drawn for tenants the
shadow evaluator will compare them for (`monitors`, set by the evaluator when it starts): an incumbent's
answer nobody compares would only cost more.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tiergate.gateway.accounting.auth import Principal
from tiergate.gateway.config.routing import RoutingSettings
from tiergate.gateway.http.bodies import ChatRequest
from tiergate.gateway.routing.domain_embeddings import EmbeddingUnavailable
from tiergate.gateway.routing.query import ChatQuery
from tiergate.gateway.upstream.fleet import Fleet, FleetSnapshot
from tiergate.gateway.upstream.tokens import TokenCounter
from tiergate.policies.domain_match import GENERAL, nearest_domain, stack
from tiergate.policies.retry import Health
from tiergate.policies.routing import (
    AUTO,
    EscalationPolicy,
    Features,
    RoutePlan,
    RouteRequest,
    RouteTable,
    decide,
    resolve,
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One route-table version with the centroids of the domains it (or the config's seeds) names."""

    table: RouteTable = field(default_factory=RouteTable)
    names: tuple[str, ...] = ()
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))


class CentroidMismatch(ValueError):
    """A route table's centroids are not in the space of the configured domain embedder."""


def check_centroids(centroids: Mapping[str, Sequence[float] | np.ndarray], dimensions: int) -> None:
    """Raise CentroidMismatch naming the first centroid whose length is not `dimensions`."""
    for name, vector in centroids.items():
        if len(vector) != dimensions:
            raise CentroidMismatch(
                f"centroid {name!r} has {len(vector)} dimensions but the domain embedder gives {dimensions} "
                "(routing.domains.embeddings): centroids made with another embedding model cannot be compared; "
                "write a table without centroids, or run `tiergate promote` on traces embedded by this one"
            )


# Rules are about the prompt's size, not a price: one tokenizer for every deployment is close enough.
_SIZE_TOKENIZER = "gpt-4o"


def _never(tenant_id: str | None) -> bool:
    return False


class Router:
    def __init__(
        self, settings: RoutingSettings, fleet: Fleet, escalation: EscalationPolicy, *, seed: int = 0
    ) -> None:
        self.settings = settings
        self._fleet = fleet
        self.escalation = escalation
        self.monitor_seed = seed  # of the monitoring draw (`learning.shadow.seed`)
        self.monitors: Callable[[str | None], bool] = _never
        # Plans of tier aliases and deployment names, valid for one fleet snapshot (models registered at run
        # time change what a name resolves to).
        self._named: dict[str, RoutePlan] = {}
        self._named_for: FleetSnapshot = fleet.snapshot
        self.dimensions = settings.domains.dimensions
        self.seed_centroids: dict[str, np.ndarray] = {}
        self.snapshot = Snapshot(RouteTable(0, dict(settings.route_table)))
        self._centroids: Mapping[str, Sequence[float] | np.ndarray] = {}
        self.refused_version = 0  # the newest stored version refused for its centroids (0: none)
        self.install(self.snapshot.table, {})

    def install(self, table: RouteTable, centroids: Mapping[str, Sequence[float] | np.ndarray]) -> None:
        """Serve `table` from now on; `centroids` (from the table's version) win over the config's seeds.

        Raises CentroidMismatch (and keeps serving the table in force) when a centroid's length is not the
        domain embedder's."""
        check_centroids(centroids, self.dimensions)
        names, matrix = stack({**self.seed_centroids, **centroids})
        self.snapshot, self._centroids = Snapshot(table, names, matrix), centroids

    def seed(self, centroids: Mapping[str, np.ndarray]) -> None:
        """Add the config's seed centroids under the table in force (whose own centroids still win)."""
        self.seed_centroids.update(centroids)
        self.install(self.snapshot.table, self._centroids)

    async def domain(self, query: ChatQuery) -> tuple[str, float, str | None]:
        """(domain, similarity, why the query could not be embedded: then the domain is `general`)."""
        snap = self.snapshot
        try:
            vector = await query.domain_vector()
        except EmbeddingUnavailable as exc:
            return GENERAL, 0.0, str(exc)
        name, similarity = nearest_domain(vector, snap.names, snap.matrix, self.settings.domains.floor)
        return name, similarity, None

    async def plan(
        self,
        principal: Principal,
        request: ChatRequest,
        headers: Mapping[str, str],
        query: ChatQuery,
        tokens: TokenCounter,
        health: Mapping[str, Health],
        request_id: str,
        *,
        monitoring: bool = True,
    ) -> RoutePlan | None:
        """The plan for one request; `monitoring` False: never a monitoring sample."""
        fleet = self._fleet.snapshot
        if request.model != AUTO:
            # A pure function of the name for a fleet snapshot: computed once per configured name (unknown
            # names are not kept, so callers cannot grow the table).
            if fleet is not self._named_for:
                self._named, self._named_for = {}, fleet
            plan = self._named.get(request.model)
            if plan is None:
                plan = resolve(request.model, fleet.catalog, self.escalation)
                if plan is not None:
                    self._named[request.model] = plan
            return plan
        policy = self.settings.policy_for(principal.tenant_id)
        snap = self.snapshot
        domain, similarity, failure = None, 0.0, None
        if policy.needs_domain:
            domain, similarity, failure = await self.domain(query)
        prompt_tokens = 0
        if policy.needs_prompt_tokens:
            await tokens.ready(_SIZE_TOKENIZER)
            prompt_tokens = tokens.messages(request.messages, _SIZE_TOKENIZER, request.body.get("tools"))
        features = Features(
            prompt_tokens=prompt_tokens,
            turns=query.turns,
            tools=bool(request.body.get("tools")),
            json_schema=_wants_json(request.body),
            last_user=query.text,
            tenant_id=principal.tenant_id,
            headers=headers,
        )
        # Asked only when the table has shares: most requests pay nothing for monitoring.
        monitoring = monitoring and bool(snap.table.sampling) and self.monitors(principal.tenant_id)
        plan = decide(
            RouteRequest(
                fleet.catalog, policy, self.escalation, features, domain, snap.table, health, time.monotonic(),
                request_id, monitoring, self.monitor_seed,
            )
        )  # fmt: skip
        if plan is not None and domain is not None:
            note = f"domain embedding failed: {failure}" if failure else f"similarity {similarity:.2f}"
            plan = replace(plan, reason=f"{plan.reason} [{note}]", domain=domain)
        return plan


def _wants_json(body: Mapping[str, Any]) -> bool:
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
