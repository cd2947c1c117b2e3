"""`POST /v1/embeddings` and `GET /v1/models`: the calls that are not chat completions.

An embeddings call goes the same way as a chat completion (`pipeline.py`) without what only chat needs:
no cache, no cascade, no escalation to a chat tier; it names a deployment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import orjson
from starlette.responses import Response

from tiergate.gateway.accounting.auth import Principal
from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.admission import admit
from tiergate.gateway.errors import BadRequest
from tiergate.gateway.http.bodies import parse_embeddings
from tiergate.gateway.pipeline import (
    JSON,
    allowed_plan,
    answer_headers,
    ask_upstream,
    record_answer,
    record_trail,
    route,
    settle,
)
from tiergate.gateway.resources import Resources
from tiergate.gateway.upstream.client import EMBEDDINGS_FAULTS, Attempted
from tiergate.policies.routing import AUTO, RoutePlan, resolve, visible_models
from tiergate.policies.tiers import is_tier
from tiergate.policies.usage import embeddings_usage


async def embeddings(res: Resources, headers: Mapping[str, str], raw: bytes, record: CallRecord) -> Response:
    with record.phase("auth"):
        principal = await res.auth.authenticate(headers)
    record.principal = principal
    request = parse_embeddings(raw)
    record.requested_model = request.model
    record.request_body = request.body
    record.endpoint = "embeddings"
    with record.phase("route"):
        plan = embeddings_route(res, principal, request.model)
    record.ticket = await admit(res, principal, plan, request)
    res.accounting.admitted(record)
    trail = Attempted()
    with record.phase("upstream"):
        answer = await ask_upstream(
            res,
            record,
            trail,
            lambda: res.upstream.call(
                plan,
                lambda d: res.provider(d).embeddings(d, request),
                stream=False,
                trail=trail,
                faults=EMBEDDINGS_FAULTS,
            ),
        )
    record_trail(record, trail)
    record_answer(record, answer, trail, plan)
    doc = orjson.loads(answer.body)
    prompt = embeddings_usage(doc)

    def count() -> tuple[int, int]:
        value = request.body["input"]
        texts = [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)]
        return sum(res.tokens.text(t, answer.deployment.model) for t in texts), 0

    await settle(res, record, answer.deployment, None if prompt is None else (prompt, 0), count)
    return Response(answer.body, headers=answer_headers(record.request_id, answer, trail, JSON))


def embeddings_route(res: Resources, principal: Principal, model: str) -> RoutePlan:
    """Embeddings name a deployment: `auto` and the tier aliases route chat completions over chat models.

    Only the named deployment(s) answer - never an escalation to a chat tier.
    """
    if model == AUTO or is_tier(model):
        names = [
            name
            for name, ids in res.catalog.names.items()
            if all(res.catalog.deployment_tier.get(i) is None for i in ids) and _may_use(res, principal, name)
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
    plan = route(res, principal, model)
    return replace(plan, targets=plan.targets[:1])


def models(res: Resources, principal: Principal) -> Response:
    """`GET /v1/models`: `auto`, the tier aliases and the deployment names this caller may use."""
    names = [
        m
        for m in visible_models(res.catalog)
        if (principal.allowed_models is None and principal.tenant_allowed_models is None)
        or _may_use(res, principal, m)
    ]
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "tiergate"} for name in names]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type=JSON)


def _may_use(res: Resources, principal: Principal, model: str) -> bool:
    plan = resolve(model, res.catalog, res.settings.escalation)
    return plan is not None and allowed_plan(res, principal, plan, model) is not None
