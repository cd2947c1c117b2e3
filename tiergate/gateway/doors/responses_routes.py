"""`GET` / `DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`, in OpenAI's shapes.

A response that is not the caller's (another tenant's) is a 404 like one that does not exist.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tiergate.gateway.accounting.auth import Principal
from tiergate.gateway.doors.responses_store import ResponseStore
from tiergate.gateway.errors import BadRequest

_JSON = "application/json"


def _limit(value: str | None) -> int:
    if value is None:
        return 20
    if not value.isdigit() or not 1 <= int(value) <= 100:
        raise BadRequest("'limit' must be an integer from 1 to 100", param="limit")
    return int(value)


def item_page(items: list[dict[str, Any]], query: Any) -> dict[str, Any]:
    """OpenAI's list of input items: `order` (desc, the default, or asc), `limit` (1-100, 20) items after the
    item `after` (in that order)."""
    order = query.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise BadRequest("'order' must be 'asc' or 'desc'", param="order")
    limit = _limit(query.get("limit"))
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after")
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise BadRequest(f"'after' names no input item of this response: {after!r}", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    page = ordered[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": len(ordered) > limit,
    }


async def stored_response(store: ResponseStore, principal: Principal, request: Request) -> Response:
    """The answer to one of the routes above for the authenticated `principal`."""
    response_id = request.path_params["response_id"]
    if request.url.path.endswith("/input_items"):
        page = item_page(await store.input_items(principal, response_id), request.query_params)
        return Response(orjson.dumps(page), media_type=_JSON)
    if request.method == "DELETE":
        await store.delete(principal, response_id)
        body = {"id": response_id, "object": "response", "deleted": True}
        return Response(orjson.dumps(body), media_type=_JSON)
    return Response(orjson.dumps(await store.get(principal, response_id)), media_type=_JSON)
