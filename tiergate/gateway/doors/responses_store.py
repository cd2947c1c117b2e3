"""Stored responses: what `store` keeps, what `previous_response_id` continues, and their retention.

A stored row holds one response: the request's own input items and the `response` object as the door
returned it (output items, model, status, usage, ...), with the tenant and key that made it. A conversation
is a chain of rows linked by `previous_id`, read in one recursive query (bounded by `max_chain`), oldest
first. A tenant's keys see only its own rows; the master key sees every row. A row that is not visible is
reported exactly as one that does not exist, so ids of other tenants cannot be probed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy import and_, delete, literal, select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.gateway.accounting.auth import Principal
from tiergate.gateway.config.responses import ResponsesPolicy
from tiergate.gateway.db.batches import log_refused, write_each
from tiergate.gateway.db.engine import database_error_types
from tiergate.gateway.db.models import StoredResponse
from tiergate.gateway.doors.responses_writer import open_writer
from tiergate.gateway.errors import BadRequest, NotFound

log = logging.getLogger("tiergate.responses")
_T = StoredResponse.__table__  # type: ignore[attr-defined]
_DAY_MS = 86_400_000


def not_found(response_id: str, param: str | None = None) -> NotFound:
    return NotFound(
        f"No response with id '{response_id}' found: it does not exist, has expired, was deleted or was "
        "made with another tenant's key",
        param=param,
        code="not_found",
    )


def _visible(principal: Principal) -> Any:
    """The rows `principal` may see: its tenant's, or every row for the master key."""
    if principal.kind == "master":
        return true()
    return _T.c.tenant_id == principal.tenant_id


class ResponseStore:
    """The `responses` table, read and written for the Responses door and its `/v1/responses/{id}` routes."""

    def __init__(self, engine: AsyncEngine, policy: ResponsesPolicy) -> None:
        self._engine = engine
        self._rows = open_writer(engine)
        self.policy = policy
        self._pending: list[tuple[dict[str, Any], asyncio.Future[bool]]] = []  # rows for the next write
        self._writer: asyncio.Future[None] | None = None  # the task writing them, while there are any

    async def conversation(self, principal: Principal, previous_id: str) -> list[dict[str, Any]]:
        """The items of the stored chain ending at `previous_id` (each response's input, then its output),
        oldest first; NotFound (param previous_response_id) when `previous_id` or a response it continues is
        not there for `principal`, BadRequest when the chain is longer than `max_chain`."""
        limit = self.policy.max_chain
        visible = _visible(principal)
        start = select(_T.c.id, _T.c.previous_id, literal(0).label("depth")).where(
            _T.c.id == previous_id, visible
        )
        chain = start.cte("chain", recursive=True)
        chain = chain.union_all(
            select(_T.c.id, _T.c.previous_id, (chain.c.depth + 1).label("depth")).where(
                and_(_T.c.id == chain.c.previous_id, chain.c.depth < limit, visible)
            )
        )
        query = (
            select(chain.c.id, chain.c.previous_id, chain.c.depth, _T.c.input_items, _T.c.response)
            .join(_T, _T.c.id == chain.c.id)
            .order_by(chain.c.depth.desc())
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        param = "previous_response_id"
        if not rows:
            raise not_found(previous_id, param)
        if len(rows) > limit:
            raise BadRequest(
                f"the conversation of '{previous_id}' has more than {limit} responses (responses.max_chain); "
                "start a new one with the whole conversation as input",
                param=param,
            )
        oldest = rows[0]
        if oldest.previous_id is not None:
            raise NotFound(
                f"the conversation of '{previous_id}' continues '{oldest.previous_id}', which has expired or "
                "was deleted: send the conversation as input instead",
                param=param,
                code="not_found",
            )
        items: list[dict[str, Any]] = []
        for row in rows:
            items += row.input_items
            items += row.response.get("output") or ()
        return items

    async def save(
        self,
        principal: Principal,
        response: dict[str, Any],
        input_items: list[dict[str, Any]],
        previous_id: str | None,
    ) -> bool:
        """Store `response` (made from `input_items`); False (logged) when the database refused or is away,
        so that the caller still gets the answer it paid for, marked as not stored.

        Returns once the row is committed. Rows that arrive while a write is under way are committed
        together in the next one (a group commit): one transaction per wave of requests, not per request.
        """
        row = {
            "id": response["id"],
            "tenant_id": principal.tenant_id,
            "key_id": principal.key_id,
            "previous_id": previous_id,
            "created_ms": int(time.time() * 1000),
            "model": response.get("model"),
            "status": response["status"],
            "input_items": input_items,
            "response": response,
        }
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((row, done))
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_pending())
        return await done

    async def _write_pending(self) -> None:
        batch: list[tuple[dict[str, Any], asyncio.Future[bool]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                for (_, done), stored in zip(
                    batch, await self._write([row for row, _ in batch]), strict=True
                ):
                    if not done.done():
                        done.set_result(stored)
        finally:
            # No await between the loop's last look at `_pending` and here: a row added after it starts a
            # new writer. Cancelled (shutdown): whoever still waits gets "not stored".
            self._writer = None
            left, self._pending = [*batch, *self._pending], []
            for _, done in left:
                if not done.done():
                    done.set_result(False)

    async def _write(self, rows: list[dict[str, Any]]) -> list[bool]:
        """Which of `rows` were stored: all, or (the batch refused) each written alone, so that a row the
        database refuses never costs another its place (`db/batches.py`)."""
        writer = self._rows
        try:
            await writer.write(rows)
            return [True] * len(rows)
        except Exception as exc:
            if len(rows) == 1 or writer.unreachable(exc):
                log.warning("%d response(s) not stored (%s)", len(rows), type(exc).__name__)
                return [False] * len(rows)
        each = await write_each(rows, writer.write, writer.unreachable)
        for row, error in each.refused:
            log_refused(log, "response", row["id"], error, "answered as not stored")
        refused = {id(row) for row, _ in each.refused} | {id(row) for row in each.away}
        return [id(row) not in refused for row in rows]

    def close(self) -> None:
        self._rows.close()

    async def _row(self, principal: Principal, response_id: str, *columns: Any) -> Any:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(*columns).where(_T.c.id == response_id, _visible(principal)))
            ).first()
        if row is None:
            raise not_found(response_id)
        return row

    async def get(self, principal: Principal, response_id: str) -> dict[str, Any]:
        """The stored `response` object."""
        row = await self._row(principal, response_id, _T.c.response)
        return row.response  # type: ignore[no-any-return]

    async def input_items(self, principal: Principal, response_id: str) -> list[dict[str, Any]]:
        """The input items the response was made from (its own `input`), in the order they were sent."""
        row = await self._row(principal, response_id, _T.c.input_items)
        return row.input_items  # type: ignore[no-any-return]

    async def delete(self, principal: Principal, response_id: str) -> None:
        async with self._engine.begin() as conn:
            done = await conn.execute(delete(_T).where(_T.c.id == response_id, _visible(principal)))
        if not done.rowcount:
            raise not_found(response_id)

    async def prune(self, now_ms: int) -> int:
        """Delete the responses stored more than `retention_days` before `now_ms`; how many were deleted."""
        cutoff = now_ms - self.policy.retention_days * _DAY_MS
        async with self._engine.begin() as conn:
            done = await conn.execute(delete(_T).where(_T.c.created_ms < cutoff))
        return int(done.rowcount or 0)

    async def keep_pruned(self) -> None:
        """`prune` now and every `prune_interval_s`; every replica runs it (deleting twice is harmless)."""
        while True:
            try:
                pruned = await self.prune(int(time.time() * 1000))
                if pruned:
                    log.info("deleted %d stored response(s) past their retention", pruned)
            except database_error_types() as exc:  # the database is away: try again next interval
                log.warning("stored responses not pruned (%s)", type(exc).__name__)
            await asyncio.sleep(self.policy.prune_interval_s)
