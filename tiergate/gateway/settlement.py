"""The settle step, shared by chat completions and embeddings: usage and cost fixed, the reservation
released, the record handed to every sink; or, for an admitted request that got no answer, settled as failed.

Every admitted request is settled exactly once (`Accounting.settle` enforces it), whichever way it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from tiergate.gateway.accounting.books import Accounting
from tiergate.gateway.accounting.records import CallRecord, Sink
from tiergate.gateway.config.settings import Deployment
from tiergate.gateway.errors import GatewayError, ServiceUnavailable
from tiergate.gateway.upstream.client import Attempted
from tiergate.gateway.upstream.tokens import TokenCounter
from tiergate.policies.pricing import cost_nano

T = TypeVar("T")


def shutting_down() -> ServiceUnavailable:
    return ServiceUnavailable(
        "the gateway is shutting down and stopped this request before it was answered; retry it",
        code="shutting_down",
    )


def record_trail(record: CallRecord, trail: Attempted) -> None:
    record.attempts, record.escalations, record.upstream_s = (
        trail.attempts,
        tuple(trail.escalations),
        trail.upstream_wait_s,
    )


class Settlement:
    """Settles calls in the accounting and hands their records to `sinks` (ledger, metrics, traces, ...).

    `sinks` is the list the lifespan fills while it opens the parts that consume records.
    """

    def __init__(self, accounting: Accounting, tokens: TokenCounter, sinks: Sequence[Sink]) -> None:
        self._accounting = accounting
        self._tokens = tokens
        self.sinks = sinks

    async def settle(
        self,
        record: CallRecord,
        deployment: Deployment,
        usage: tuple[int, int] | None,
        count: Callable[[], tuple[int, int]],
        extra_nano: int = 0,
    ) -> None:
        """Fix tokens and cost, settle the reservation, and hand the record to every sink.

        `count` computes (prompt, completion) tokens locally when the upstream reported no usage (a client
        that disconnected before the usage chunk, a server that never sends one). `extra_nano` is what else
        the call used: cascade answers that were verified and discarded, judge calls.
        """
        if usage is None:
            await self._tokens.ready(deployment.model)
            usage = count()
            record.usage_source = "counted"
        record.prompt_tokens, record.completion_tokens = usage
        record.cost_nano = cost_nano(deployment.price, *usage) + extra_nano
        await self.finish(record, record.prompt_tokens + record.completion_tokens)

    async def finish(self, record: CallRecord, tokens: int) -> None:
        """Release the reservation against what was used (`tokens` upstream, `record.cost_nano`); record it."""
        await self._accounting.settle(record, tokens, self.sinks)

    async def failed(self, record: CallRecord, error: GatewayError) -> None:
        """An admitted request that got no answer: nothing spent, the reservation released, one ledger row.

        Nothing happens for a request that was not admitted or is already settled.
        """
        await self._accounting.settle_failed(record, error)

    async def ask_upstream(self, record: CallRecord, trail: Attempted, call: Awaitable[T]) -> T:
        """`await call`, settling the request as failed when it raises (so its reservation is never left held).

        A cancellation (the server stopping after its drain timeout) is settled too: the settlement runs in a
        task of its own, which the cancellation cannot reach, and the app's shutdown waits for it.
        """
        try:
            return await call
        except (GatewayError, asyncio.CancelledError) as exc:
            record_trail(record, trail)
            await self.failed(record, exc if isinstance(exc, GatewayError) else shutting_down())
            raise
