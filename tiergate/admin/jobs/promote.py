"""`tiergate promote`: the learning loop's decision on live evidence, written as a new route-table version.

One run:
1. reads the newest route-table version and the evidence window (`learning.promote.window_days` back):
   traces with their embeddings, shadow verdicts, feedback (`promote_evidence.load`). The embeddings are
   the vectors routing compared with the centroids (the local MiniLM, or the deployment
   `routing.domains.embeddings` names), so the new centroids are in the space the gateway routes in;
   vectors of another length (an earlier embedder) are left out, and a table whose centroids are of
   another length is refused;
2. re-discovers the domains from the embeddings, keeping the previous ids and names, and gathers each
   domain's traffic, costs, verdicts and feedback (`promote_evidence.build`, in a worker thread);
3. decides with `tiergate.policies.promotion.plan`, the function `tiergate replay` calls;
4. computes each domain's shadow share with `tiergate.policies.exploration.sampling` and its defaults, as
   `tiergate replay` does: a promoted domain's monitoring share, served by the tier above it (the incumbent)
   while the promoted tier is shadowed, and an unpromoted domain's exploring share at the next cheaper tier,
   by value of information with futility (`shadow_sampling`);
5. writes a new version when a domain moved, the set of domains changed or a share moved (`exploration.moved`),
   conditional on the version it read (`base_version`): its routes, the fresh centroids, the names, the
   shares (`sampling`, which the gateways' routing and shadow sampler follow) and the changelog as its note.
   Nothing is written when nothing changed, nor on a dry run.

Several writers (replicas running the periodic task, a CronJob) cannot both land on one version: the write
is conditional, and the loser re-reads and decides again on the new version (or, in the periodic task,
leaves it to the next interval). No lock is needed: a run that loses has only spent CPU.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate.admin.jobs.promote_evidence import Built, Window, build, ladder_of, load, summarize
from tiergate.gateway.config.settings import Settings
from tiergate.gateway.routing.router import CentroidMismatch, check_centroids
from tiergate.gateway.routing.table_store import (
    RouteTableStore,
    SqlRouteTableStore,
    StoredRouteTable,
    VersionConflict,
)
from tiergate.gateway.upstream.fleet import build_catalog
from tiergate.policies import domains as dom
from tiergate.policies.exploration import moved, sampling
from tiergate.policies.promotion import Plan, changelog, gap_estimates, plan
from tiergate.policies.route_table import MAX_NOTE, RouteTableDoc, Sampling
from tiergate.policies.tiers import above

log = logging.getLogger("tiergate.promote")

AUTHOR = "promote"
DAY_MS = 86_400_000


class PromoteError(Exception):
    """The job cannot run as configured, or could not write; the message says why."""


@dataclass(frozen=True, slots=True)
class PromoteRun:
    """One run: what it read, decided and (unless a dry run or nothing changed) wrote."""

    base_version: int
    written: StoredRouteTable | None
    plan: Plan
    built: Built
    note: str
    since_ms: int
    dry_run: bool
    domains: list[dict[str, Any]]  # the evidence per domain, as the report shows it
    sampling: dict[str, Sampling]  # the shadow shares of the domains decided on
    sampling_changed: bool  # differ from the base version's

    @property
    def changed(self) -> bool:
        return bool(
            self.plan.decisions or self.built.new_domains or self.built.retired or self.sampling_changed
        )

    def as_json(self) -> dict[str, Any]:
        p = self.plan
        return {
            "dry_run": self.dry_run,
            "since_ms": self.since_ms,
            "base_version": self.base_version,
            "written_version": self.written.version if self.written else None,
            "changed": self.changed,
            "quality": {
                "estimate": p.quality.estimate,
                "lower": p.quality.lower,
                "samples": p.quality.samples,
            },
            "budget": p.budget,
            "loss_estimate": p.loss_estimate,
            "loss_bound": p.loss_bound,
            "decisions": [
                {
                    "action": d.action,
                    "domain": d.domain,
                    "name": d.name,
                    "from": d.from_tier,
                    "to": d.to_tier,
                    "samples": d.samples,
                    "worse_rate": d.worse_rate,
                    "better_rate": d.better_rate,
                    "gap": d.gap,
                    "bound": d.bound,
                    "saving_usd": d.saving,
                }
                for d in p.decisions
            ],
            "sampling": {d: s.as_json() for d, s in self.sampling.items()},
            "new_domains": list(self.built.new_domains),
            "retired_domains": list(self.built.retired),
            "rows": self.built.counts,
            "domains": self.domains,
            "note": self.note,
        }


def open_store(engine: AsyncEngine) -> RouteTableStore:
    """The route tables every gateway of this database serves."""
    return SqlRouteTableStore(engine)


def ladder_for(settings: Settings) -> list[str]:
    """The tiers promotion moves domains between: configured ones up to where unknown domains go."""
    configured = build_catalog(settings.deployments).configured_tiers
    wanted = settings.routing.policy.unknown_tier
    baseline = (
        wanted
        if wanted in configured
        else next(iter(above(configured, wanted)), configured[-1] if configured else None)
    )
    ladder = ladder_of(configured, baseline) if baseline else []
    if len(ladder) < 2:
        raise PromoteError(
            "promotion needs at least two configured tiers at or below "
            f"routing.unknown_tier ({wanted}); configured: {', '.join(configured) or 'none'}"
        )
    return ladder


def _note(
    outcome_plan: Plan, built: Built, base: StoredRouteTable | None, since_ms: int, sampling_changed: bool
) -> str:
    lines = [
        f"tiergate promote on v{base.version if base else 0}: evidence since {_iso(since_ms)} "
        f"({built.counts['traces']} traces, {built.counts['verdicts']} verdicts, "
        f"{built.counts['feedback']} feedback)",
        changelog(outcome_plan),
    ]
    names = built.names
    lines += [f"new domain {names.get(d, d)} [{d}]" for d in built.new_domains]
    old_routes = base.doc.routes if base else {}
    lines += [
        f"retired domain {names.get(d, d)} [{d}] (was {old_routes.get(d, 'unrouted')})" for d in built.retired
    ]
    if sampling_changed:
        lines.append("shadow shares (sampling) updated")
    note = "\n".join(lines)
    if len(note) > MAX_NOTE:
        note = note[: MAX_NOTE - 40].rsplit("\n", 1)[0] + "\n... (truncated)"
    return note


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def new_doc(
    previous: RouteTableDoc | None,
    result: Plan,
    built: Built,
    note: str,
    sampling: Mapping[str, Sampling],
) -> RouteTableDoc:
    """The next version: managed domains as decided, other hand-written routes (and their shares) kept."""
    managed = {d.id for d in built.domain_set.domains} | set(built.retired) | {dom.GENERAL}
    kept = {d: t for d, t in (previous.routes if previous else {}).items() if d not in managed}
    kept_sampling = {d: s for d, s in (previous.sampling if previous else {}).items() if d in kept}
    return RouteTableDoc(
        routes={**kept, **result.routes},
        centroids={d.id: tuple(float(x) for x in d.centroid) for d in built.domain_set.domains},
        note=note,
        names=built.names,
        sampling={**kept_sampling, **sampling},
    )


async def run_promote(
    engine: AsyncEngine,
    store: RouteTableStore,
    settings: Settings,
    *,
    dry_run: bool = False,
    now_ms: int | None = None,
    retries: int = 2,
) -> PromoteRun:
    """One promote run (see the module docstring); a concurrent write makes it decide again on the new
    version, up to `retries` times, then raises VersionConflict."""
    config = settings.learning.promote
    ladder = ladder_for(settings)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    since_ms = now_ms - int(config.window_days * DAY_MS)
    window = in_space(await load(engine, since_ms, config.max_traces), settings.routing.domains.dimensions)
    for attempt in range(retries + 1):
        base = await store.get()
        if base is not None:
            try:
                check_centroids(base.doc.centroids, settings.routing.domains.dimensions)
            except CentroidMismatch as exc:
                raise PromoteError(f"route table v{base.version}: {exc}") from None
        outcome = await asyncio.to_thread(_decide, window, base, ladder, settings, now_ms, dry_run)
        if dry_run or not outcome.changed:
            return outcome
        doc = new_doc(base.doc if base else None, outcome.plan, outcome.built, outcome.note, outcome.sampling)
        try:
            written = await store.append(doc, author=AUTHOR, base_version=outcome.base_version)
        except VersionConflict:
            if attempt == retries:
                raise
            log.info("route table moved on while deciding; deciding again on the new version")
            continue
        log.info("route table version %d written:\n%s", written.version, outcome.note)
        return dataclasses.replace(outcome, written=written)
    raise AssertionError("unreachable")


def in_space(window: Window, dimensions: int) -> Window:
    """The window with the embeddings of another model dropped: the traces store the vector routing used,
    so after `routing.domains.embeddings` changed, older traces hold vectors that cannot be clustered with
    the new ones; they count by the domain they recorded."""
    traces = [
        t if t.vector is None or len(t.vector) == dimensions else dataclasses.replace(t, vector=None)
        for t in window.traces
    ]
    return dataclasses.replace(window, traces=traces)


def _decide(
    window: Window,
    base: StoredRouteTable | None,
    ladder: Sequence[str],
    settings: Settings,
    now_ms: int,
    dry_run: bool,
) -> PromoteRun:
    config = settings.learning.promote
    since_ms = window.since_ms
    built = build(
        window,
        base.doc if base else None,
        ladder,
        floor=settings.routing.domains.floor,
        clusters=config.clusters,
        seed=config.seed,
        quality=config.quality,
        alpha=config.promotion.alpha,
    )
    result = plan(built.evidence, ladder, built.quality, config.promotion)
    sampling = shadow_sampling(built, result, ladder, settings, now_ms)
    previous = base.doc.sampling if base else {}
    sampling_changed = any(moved(previous.get(d), s) for d, s in sampling.items())
    note = _note(result, built, base, since_ms, sampling_changed)
    gaps = gap_estimates(built.evidence, ladder, config.promotion)
    domains = summarize(built, gaps, {d: s.share for d, s in sampling.items()})
    return PromoteRun(
        base.version if base else 0, None, result, built, note, since_ms, dry_run, domains, sampling,
        sampling_changed,
    )  # fmt: skip


def shadow_sampling(
    built: Built, result: Plan, ladder: Sequence[str], settings: Settings, now_ms: int
) -> dict[str, Sampling]:
    """Each domain's shadow share by `policies.exploration.sampling`, the function and defaults `tiergate
    replay` uses: monitoring a promoted domain (the tier above it, the incumbent, serving the share), or
    exploring below an unpromoted one by value of information. The next decision is `interval_s` away, so
    the traffic expected before it is that time's share of the window's, which arrived since its oldest
    trace. A configured `explore` replaces value of information with a fixed share (as `replay --explore`)."""
    config = settings.learning.promote
    span_ms = now_ms - built.first_ms if built.first_ms is not None else 0
    shares = sampling(
        built.evidence,
        result,
        ladder,
        config.promotion,
        judge_cost=built.judge_cost,
        next_run=config.interval_s * 1000 / max(span_ms, 1),
        quality_budget=config.promotion.quality_budget,
        unpriced=built.unpriced,
        config=config.exploration,
    )
    if config.explore is not None:
        shares |= {d: Sampling(config.explore) for d, s in shares.items() if s.incumbent is None}
    return shares


async def periodically(
    run_once: Callable[[], Awaitable[PromoteRun]],
    interval_s: float,
    *,
    claim: Callable[[], Awaitable[bool]] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """The gateway's background task: a run every `interval_s`, off the request path; a failed run is logged
    and the next interval tries again, a run that lost the conditional write to another replica is left to it.
    With `claim` (`lease.claim`), an interval whose run another replica claimed is skipped."""
    while True:
        await sleep(interval_s)
        try:
            if claim is not None and not await claim():
                log.debug("promote: another replica ran this interval's job")
                continue
            outcome = await run_once()
        except VersionConflict as exc:
            log.info("promote: another writer landed first (%s); next run in %.0f s", exc, interval_s)
        except Exception:
            log.exception("promote run failed; next run in %.0f s", interval_s)
        else:
            if outcome.written is None:
                log.info("promote: nothing changed (route table v%d)", outcome.base_version)
