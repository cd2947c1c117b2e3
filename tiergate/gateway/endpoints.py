"""`POST /v1/embeddings` and `GET /v1/models[/{id}]`: the calls that are not chat completions.

An embeddings call goes the same way as a chat completion (`pipeline.py`) without what only chat needs:
no cache, no cascade, no escalation to a chat tier; it names a deployment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import orjson
from starlette.responses import Response

from tiergate.gateway.accounting.auth import Authenticator, Principal
from tiergate.gateway.accounting.books import Accounting
from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.admission import Admission, embedding_tokens
from tiergate.gateway.errors import BadRequest, NotFound
from tiergate.gateway.http.bodies import parse_embeddings
from tiergate.gateway.pipeline import JSON, ModelAccess, answer_headers, record_answer
from tiergate.gateway.settlement import Settlement, record_trail
from tiergate.gateway.upstream.client import Attempted, UpstreamClient
from tiergate.gateway.upstream.fleet import Fleet
from tiergate.gateway.upstream.tokens import TokenCounter
from tiergate.policies.routing import AUTO, RoutePlan, visible_models
from tiergate.policies.tiers import is_tier
from tiergate.policies.usage import embeddings_usage


class Embeddings:
    """`POST /v1/embeddings` over the parts it is given."""

    def __init__(
        self,
        *,
        auth: Authenticator,
        access: ModelAccess,
        fleet: Fleet,
        upstream: UpstreamClient,
        accounting: Accounting,
        admission: Admission,
        settlement: Settlement,
        tokens: TokenCounter,
    ) -> None:
        self._auth = auth
        self._access = access
        self._fleet = fleet
        self._upstream = upstream
        self._accounting = accounting
        self._admission = admission
        self._settlement = settlement
        self._tokens = tokens

    async def embeddings(self, headers: Mapping[str, str], raw: bytes, record: CallRecord) -> Response:
        with record.phase("auth"):
            principal = await self._auth.authenticate(headers)
        record.principal = principal
        request = parse_embeddings(raw)
        record.requested_model = request.model
        record.request_body = request.body
        record.endpoint = "embeddings"
        with record.phase("route"):
            plan = self.route(principal, request.model)
        record.ticket = await self._admission.admit(principal, plan, request)
        self._accounting.admitted(record)
        trail = Attempted()
        with record.phase("upstream"):
            answer = await self._settlement.ask_upstream(
                record, trail, self._upstream.embeddings(plan, request, trail=trail)
            )
        record_trail(record, trail)
        record_answer(record, answer, trail, plan)
        doc = orjson.loads(answer.body)
        prompt = embeddings_usage(doc)
        tokens = self._tokens

        def count() -> tuple[int, int]:
            return embedding_tokens(tokens, request, answer.deployment.model), 0

        await self._settlement.settle(
            record, answer.deployment, None if prompt is None else (prompt, 0), count
        )
        return Response(answer.body, headers=answer_headers(record.request_id, answer, trail, JSON))

    def route(self, principal: Principal, model: str) -> RoutePlan:
        """Embeddings name a deployment: `auto` and the tier aliases route chat completions over chat models.

        Only the named deployment(s) answer - never an escalation to a chat tier.
        """
        if model == AUTO or is_tier(model):
            catalog = self._fleet.snapshot.catalog
            names = [
                name
                for name, ids in catalog.names.items()
                if all(catalog.deployment_tier.get(i) is None for i in ids)
                and self._access.may_use(principal, name)
            ]
            choices = (
                f"one of: {', '.join(names)}"
                if names
                else "none is configured: add one under `models:` in the config"
            )
            raise BadRequest(
                f"'{model}' routes chat completions over the tiers; embeddings need an embeddings deployment "
                f"named in 'model' ({choices})",
                param="model",
                code="model_not_supported",
            )
        plan = self._access.route(principal, model)
        return replace(plan, targets=plan.targets[:1])


def _visible(fleet: Fleet, access: ModelAccess, principal: Principal) -> list[str]:
    """`auto`, the tier aliases and the deployment names this caller may use."""
    return [
        m
        for m in visible_models(fleet.snapshot.catalog)
        if (principal.allowed_models is None and principal.tenant_allowed_models is None)
        or access.may_use(principal, m)
    ]


def _model(name: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "tiergate"}


def models_response(
    fleet: Fleet, access: ModelAccess, principal: Principal, model_id: str | None = None
) -> Response:
    """`GET /v1/models` (the list), or `GET /v1/models/{model_id}` (one of it; 404 for any other id, so a
    key cannot learn of models it may not use)."""
    names = _visible(fleet, access, principal)
    if model_id is None:
        return Response(
            orjson.dumps({"object": "list", "data": [_model(name) for name in names]}), media_type=JSON
        )
    if model_id not in names:
        raise NotFound(f"The model '{model_id}' does not exist or this key may not use it", param="model")
    return Response(orjson.dumps(_model(model_id)), media_type=JSON)
