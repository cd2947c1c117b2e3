"""`POST /v1/feedback`: a user's verdict on an answer, given with a key of the tenant that made the request.

    {"request_id": "req_...", "score": 0.0-1.0 | "label": "good" | "bad", "comment": "optional"}

Exactly one of `score` and `label` (good counts as 1, bad as 0). The request must be one of the caller's
tenant's (found in the traces, or the ledger when traces are off); anyone else's, or one that does not
exist, is a 404 either way, so ids of other tenants cannot be probed. Its trace may still be on its way
to the database (traces are written in batches): a request this replica traced is found in the writer's
queue; one another replica answered is looked up again after a trace flush interval. Nothing is written
on bad input. The comment follows the tenant's content policy (redacted, or dropped under `none`).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import Response

from tiergate.gateway.accounting.auth import Authenticator
from tiergate.gateway.db.learning import Feedback, Trace
from tiergate.gateway.db.models import LedgerEntry
from tiergate.gateway.errors import BadRequest, NotFound
from tiergate.gateway.http.bodies import parse_object
from tiergate.gateway.learning.trace_writer import TraceWriter
from tiergate.policies.redaction import redact_text

MAX_COMMENT = 4000
MAX_BODY_BYTES = 64 * 1024
LABELS = {"good": 1.0, "bad": 0.0}
_FIELDS = {"request_id", "score", "label", "comment"}
_TRACES = Trace.__table__.c  # type: ignore[attr-defined]
_LEDGER = LedgerEntry.__table__.c  # type: ignore[attr-defined]
_FEEDBACK = Feedback.__table__  # type: ignore[attr-defined]


def parse_feedback(doc: dict[str, Any]) -> tuple[str, float, str | None, str | None]:
    """(request id, score, label, comment) from a request body; BadRequest naming the field otherwise."""
    unknown = set(doc) - _FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise BadRequest(f"unknown field(s) {', '.join(sorted(unknown))}", param=name)
    request_id = doc.get("request_id")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= 128:
        raise BadRequest("'request_id' is required: the x-request-id of the answer", param="request_id")
    score, label = doc.get("score"), doc.get("label")
    if (score is None) == (label is None):
        raise BadRequest("give exactly one of 'score' (0 to 1) and 'label' (good or bad)", param="score")
    if label is not None:
        if label not in LABELS:
            raise BadRequest("'label' must be good or bad", param="label")
        score = LABELS[label]
    elif (
        isinstance(score, bool)
        or not isinstance(score, int | float)
        or not math.isfinite(score)
        or not 0 <= score <= 1
    ):
        raise BadRequest("'score' must be a number from 0 to 1", param="score")
    comment = doc.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
        raise BadRequest(f"'comment' must be a string of at most {MAX_COMMENT} characters", param="comment")
    return request_id, float(score), label, comment


async def _stored(engine: AsyncEngine, request_id: str, tenant_id: str | None) -> bool:
    """Whether the tenant's traces or ledger know the request."""
    queries = []
    for c, extra in ((_TRACES, ()), (_LEDGER, (_LEDGER.kind == "request",))):
        tenant = c.tenant_id.is_(None) if tenant_id is None else c.tenant_id == tenant_id
        queries.append(select(c.request_id).where(c.request_id == request_id, tenant, *extra).limit(1))
    async with engine.connect() as conn:
        for query in queries:
            if (await conn.execute(query)).first() is not None:
                return True
    return False


class FeedbackIntake:
    """`POST /v1/feedback`: checks who may give it and writes it.

    `traces` is this replica's trace writer (None: traces are off); `other_replica_wait_s` how long another
    replica may take to write its trace or ledger row; `default_content` the config's trace content policy.
    """

    def __init__(
        self,
        auth: Authenticator,
        engine: AsyncEngine,
        traces: TraceWriter | None,
        *,
        other_replica_wait_s: float,
        default_content: str,
    ) -> None:
        self._auth = auth
        self._engine = engine
        self._traces = traces
        self._other_replica_wait_s = other_replica_wait_s
        self._default_content = default_content

    async def owns(self, request_id: str, tenant_id: str | None) -> bool:
        engine = self._engine
        if await _stored(engine, request_id, tenant_id):
            return True
        if self._traces is not None:
            found, owner = self._traces.pending_tenant(request_id)
            if found:
                return owner == tenant_id
        # Another replica may have answered it and not written its trace (nor ledger row) yet.
        await asyncio.sleep(min(2.0, 2 * self._other_replica_wait_s))
        return await _stored(engine, request_id, tenant_id)

    async def feedback(self, headers: Mapping[str, str], raw: bytes) -> Response:
        principal = await self._auth.authenticate(headers)
        request_id, score, label, comment = parse_feedback(parse_object(raw))
        if not await self.owns(request_id, principal.tenant_id):
            raise NotFound(
                f"no request '{request_id}' made with this key's tenant", param="request_id", code="not_found"
            )
        policy = principal.trace_content or self._default_content
        if comment is not None:
            comment = None if policy == "none" else redact_text(comment) if policy == "redacted" else comment
        row = {
            "id": "fb_" + uuid.uuid4().hex[:29],
            "request_id": request_id,
            "tenant_id": principal.tenant_id,
            "key_id": principal.key_id,
            "ts_ms": int(time.time() * 1000),
            "score": score,
            "label": label,
            "comment": comment,
        }
        async with self._engine.begin() as conn:
            await conn.execute(insert(_FEEDBACK), [row])
        out = {"object": "feedback", **{k: row[k] for k in ("id", "request_id", "score", "label", "comment")}}
        return Response(orjson.dumps(out), status_code=201, media_type="application/json")
