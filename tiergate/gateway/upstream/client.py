"""Getting an answer from the plan's deployments: retries, fallback, escalation and cooldown.

For each target of the route plan (cheapest first), each deployment of it (healthy ones first, rotating for
load share), up to `1 + max_retries` attempts with jittered backoff on connect errors, timeouts, 429 and
5xx. A deployment that fails `cooldown_failures` times in a row rests for `cooldown_s`. When a whole target
fails and the plan allows it, the next, more capable target answers (an escalation). A 4xx that says the
request itself is wrong ends the search at once: another deployment would refuse it too.

The client owns the providers: callers say `chat` or `embeddings` and never choose between the byte-level
fast path and litellm; which deployments exist it reads from the fleet's snapshot in force.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from tiergate.gateway.config.settings import Deployment, UpstreamPolicy
from tiergate.gateway.errors import RateLimited, UpstreamFailed, UpstreamRejected
from tiergate.gateway.http.bodies import ChatRequest, EmbeddingsRequest
from tiergate.gateway.upstream.fleet import Fleet
from tiergate.gateway.upstream.providers import Provider
from tiergate.gateway.upstream.transport import TransportError, UpstreamResponse
from tiergate.policies.retry import Health, backoff_s, is_retryable_status, record_failure, record_success
from tiergate.policies.routing import RoutePlan, Target, prefer_healthy

# Upstream answers that mean "this deployment is misconfigured", not "the request is wrong": try the next one.
_DEPLOYMENT_FAULTS = frozenset({401, 403, 404})
# On /embeddings a 404 most often means "this model has no embeddings" (a chat model was named): the caller's
# mistake, relayed as it is. Counting it would cool down a deployment that serves its chat traffic well.
EMBEDDINGS_FAULTS = frozenset({401, 403})


@dataclass
class Attempted:
    """What happened on the way to an answer; lands in the call record."""

    attempts: int = 0
    escalations: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    upstream_wait_s: float = 0.0


@dataclass
class Answer:
    deployment: Deployment
    tier: str | None
    response: UpstreamResponse
    first_chunk: bytes  # streams only: the first bytes, read before committing to this deployment
    body: bytes  # non-streams only: the whole answer


Send = Callable[[Deployment], Awaitable[UpstreamResponse]]


def _retry_after(response: UpstreamResponse) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class UpstreamClient:
    def __init__(
        self,
        policy: UpstreamPolicy,
        fleet: Fleet,
        *,
        fast_path: Provider,
        translated: Provider,
        rng: random.Random | None = None,
    ) -> None:
        self._policy = policy
        self._fleet = fleet
        self._fast_path = fast_path
        self._translated = translated  # litellm, for deployments that are not OpenAI-compatible
        self.health: dict[str, Health] = {}
        self._rng = rng or random.Random()
        self._rotation = 0
        # Called with (deployment id, kind) for every failed attempt, whoever made the call: client requests
        # and the background calls (shadow, judge, domain embeddings), whose records never reach the metrics.
        # kind is the HTTP status, "timeout" or "connection".
        self.on_error: Callable[[str, str], None] | None = None

    def provider(self, deployment: Deployment) -> Provider:
        return self._fast_path if deployment.fast_path else self._translated

    def chat(
        self,
        plan: RoutePlan,
        request: ChatRequest,
        *,
        stream: bool,
        trail: Attempted,
        may_escalate: Callable[[Target, int], Awaitable[bool]] | None = None,
        want_usage_chunk: bool = True,
    ) -> Awaitable[Answer]:
        """A chat completion along the plan (see `_call`); `want_usage_chunk` asks a stream for its usage.

        Not a coroutine itself: the request path awaits `_call` directly, with no frame in between."""
        provider = self.provider
        return self._call(
            plan,
            lambda d: provider(d).chat(d, request, want_usage_chunk=want_usage_chunk),
            stream=stream,
            trail=trail,
            may_escalate=may_escalate,
        )

    def embeddings(
        self, plan: RoutePlan, request: EmbeddingsRequest, *, trail: Attempted
    ) -> Awaitable[Answer]:
        """Embeddings along the plan; a 404 is the caller's (see `EMBEDDINGS_FAULTS`)."""
        provider = self.provider
        return self._call(
            plan,
            lambda d: provider(d).embeddings(d, request),
            stream=False,
            trail=trail,
            faults=EMBEDDINGS_FAULTS,
        )

    async def chat_once(self, deployment: Deployment, request: ChatRequest) -> bytes:
        """One non-streamed chat completion from exactly this deployment: no retry, no fallback, no cooldown
        (a registered candidate under evaluation). Raises UpstreamFailed on any status but 200."""
        response = await self.provider(deployment).chat(deployment, request, want_usage_chunk=False)
        body = await response.read()
        if response.status != 200:
            raise UpstreamFailed(f"{deployment.id}: HTTP {response.status}")
        return body

    async def aclose(self) -> None:
        await self._fast_path.aclose()
        await self._translated.aclose()

    def _error(self, deployment_id: str, kind: str) -> None:
        if self.on_error is not None:
            self.on_error(deployment_id, kind)

    def _failed(self, deployment: Deployment, now: float) -> bool:
        """Record a failure; True when the deployment is now resting and should not be retried."""
        state = record_failure(
            self.health.get(deployment.id, Health()),
            now,
            self._policy.cooldown_failures,
            self._policy.cooldown_s,
        )
        self.health[deployment.id] = state
        return not state.available(now)

    def _succeeded(self, deployment: Deployment) -> None:
        state = self.health.get(deployment.id)
        if state is not None:
            self.health[deployment.id] = record_success(state)

    async def _call(
        self,
        plan: RoutePlan,
        send: Send,
        *,
        stream: bool,
        trail: Attempted,
        may_escalate: Callable[[Target, int], Awaitable[bool]] | None = None,
        faults: frozenset[int] = _DEPLOYMENT_FAULTS,
    ) -> Answer:
        """The first good answer along the plan, or the error the caller should see.

        `may_escalate` is asked before each escalation (the budget must hold the pricier tier); False ends
        the search with the failures so far. `faults`: the 4xx statuses that blame the deployment (counted
        towards its cooldown, next deployment); any other 4xx is relayed to the caller at once.
        """
        rotation = self._rotation if self._policy.load_balance == "round_robin" else 0
        self._rotation += 1
        by_id = self._fleet.snapshot.by_id
        all_timeouts = all_throttled = True
        retry_afters: list[float] = []
        for position, target in enumerate(plan.targets):
            if position:
                if may_escalate is not None and not await may_escalate(target, 0):
                    trail.failures.append(f"escalation to {target.tier} refused: the budget cannot hold it")
                    all_throttled = all_timeouts = False
                    break
                trail.escalations.append(
                    f"{plan.targets[position - 1].tier}->{target.tier}: {trail.failures[-1]}"
                )
            order = prefer_healthy(target.deployments, self.health, time.monotonic(), rotation)
            for deployment_id in order:
                deployment = by_id[deployment_id]
                for attempt in range(self._policy.max_retries + 1):
                    trail.attempts += 1
                    waited = time.perf_counter()
                    retry_after: float | None = None
                    try:
                        response = await send(deployment)
                        if response.status == 200:
                            answer = await self._complete(deployment, target.tier, response, stream)
                            trail.upstream_wait_s += time.perf_counter() - waited
                            self._succeeded(deployment)
                            return answer
                        error_body = await response.read()
                        trail.upstream_wait_s += time.perf_counter() - waited
                        status = response.status
                        retry_after = _retry_after(response)
                        all_timeouts = False
                        all_throttled = all_throttled and status == 429
                        if retry_after is not None:
                            retry_afters.append(retry_after)
                    except TransportError as exc:
                        trail.upstream_wait_s += time.perf_counter() - waited
                        trail.failures.append(f"{deployment.id}: {exc}")
                        self._error(deployment.id, "timeout" if exc.timeout else "connection")
                        all_timeouts = all_timeouts and exc.timeout
                        all_throttled = False
                    else:
                        trail.failures.append(f"{deployment.id}: HTTP {status}")
                        self._error(deployment.id, str(status))
                        if not is_retryable_status(status):
                            if status in faults:
                                self._failed(deployment, time.monotonic())
                                break  # next deployment: this one's key, model or URL is wrong
                            raise UpstreamRejected(status, error_body)
                    if self._failed(deployment, time.monotonic()) or attempt == self._policy.max_retries:
                        break
                    await asyncio.sleep(
                        backoff_s(
                            attempt,
                            self._policy.backoff_base_s,
                            self._policy.backoff_max_s,
                            self._rng,
                            retry_after,
                        )
                    )
        summary = "; ".join(trail.failures[-4:])
        if all_throttled:
            # Every deployment is rate-limiting us: the caller should back off, as it would with OpenAI.
            raise RateLimited(
                f"every upstream deployment is rate limited ({summary})",
                retry_after_s=min(retry_afters, default=self._policy.backoff_max_s),
            )
        if all_timeouts:
            raise UpstreamFailed(
                f"every upstream deployment timed out ({summary})", status=504, code="upstream_timeout"
            )
        raise UpstreamFailed(f"every upstream deployment failed after retries ({summary})")

    @staticmethod
    async def _complete(
        deployment: Deployment, tier: str | None, response: UpstreamResponse, stream: bool
    ) -> Answer:
        if not stream:
            return Answer(deployment, tier, response, b"", await response.read())
        chunks = response.chunks()
        try:
            # Committing to a stream only once its first bytes arrived keeps a stream that dies before
            # sending anything retryable: the client has not seen a byte yet.
            first = await anext(chunks, b"")
        except TransportError:
            await response.aclose()
            raise
        if not first:
            await response.aclose()
            raise TransportError("upstream closed the stream before sending anything")
        return Answer(deployment, tier, _Resumed(response, chunks), first, b"")


class _Resumed:
    """A streamed response whose first chunk was already taken; iteration continues where it stopped."""

    def __init__(self, response: UpstreamResponse, chunks: AsyncIterator[bytes]) -> None:
        self._response = response
        self._chunks = chunks
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        return await self._response.read()

    def chunks(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def aclose(self) -> None:
        await self._response.aclose()
