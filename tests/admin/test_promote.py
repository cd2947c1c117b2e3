"""`tiergate promote`'s job on evidence seeded in a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.admin.promote_rows import NOW_MS, promote_settings, seed
from tiergate.admin.jobs import promote
from tiergate.admin.route_tables import rollback
from tiergate.gateway.db import migrate
from tiergate.gateway.db.engine import open_engine
from tiergate.gateway.routing.table_store import SqlRouteTableStore, StoredRouteTable, VersionConflict
from tiergate.policies.embeddings import LOCAL_DIMENSIONS
from tiergate.policies.exploration import JUDGE_COST
from tiergate.policies.route_table import RouteTableDoc, Sampling


def domain_named(doc: RouteTableDoc, word: str) -> str:
    (found,) = [d for d, name in doc.names.items() if word in name and d in doc.centroids]
    return found


async def test_promotes_the_domain_where_the_student_agrees_and_keeps_the_other(
    engine: AsyncEngine, database_url: str
) -> None:
    await seed(engine, "billing", requests=100, verdicts={"as_good": 60})
    await seed(engine, "code", requests=100, verdicts={"as_good": 40, "worse": 20})
    store = SqlRouteTableStore(engine)
    outcome = await promote.run_promote(engine, store, promote_settings(database_url), now_ms=NOW_MS)
    assert outcome.written is not None and outcome.written.version == 1
    assert outcome.written.author == "promote"
    doc = outcome.written.doc
    billing, code = domain_named(doc, "invoice"), domain_named(doc, "function")
    assert doc.routes == {billing: "student", code: "teacher"}
    assert set(doc.centroids) == {billing, code} and len(doc.centroids[billing]) == 384
    # The shares the gateways follow: billing's monitoring sample served by the teacher; code's student is
    # worse on a third of its verdicts, so it cannot fit the budget: revisited at `revisit`, falling as
    # 1 / verdicts past `min_samples` (0.01 * 30 / 60).
    assert doc.sampling == {billing: Sampling(0.03, "teacher"), code: Sampling(0.005)}
    stored = await store.get()
    assert stored is not None and stored.doc == doc  # read back as written, shares included
    ((decision),) = outcome.plan.decisions
    assert (decision.domain, decision.from_tier, decision.to_tier, decision.samples) == (
        billing,
        "teacher",
        "student",
        60,
    )
    # The changelog names the domain, the move, the samples, the rates and the bound.
    line = (
        f"promote {doc.names[billing]} [{billing}]: teacher -> student; 60 verdicts, worse 0.0%, better 0.0%"
    )
    assert line in doc.note and "bound +" in doc.note
    assert f"new domain {doc.names[code]} [{code}]" in doc.note
    report = outcome.as_json()
    assert report["written_version"] == 1 and report["rows"]["verdicts"] == 120
    code_row = next(d for d in report["domains"] if d["domain"] == code)
    assert code_row["steps"][0] | {"gap": None, "bound": None} == {
        "candidate": "student", "incumbent": "teacher", "better": 0, "same": 40, "worse": 20,
        "gap": None, "bound": None,
    }  # fmt: skip
    assert code_row["traffic"] == 100 and code_row["costs_usd"] == {"student": 1e-6, "teacher": 1e-5}
    # What the shares were priced with: each verdict's judge cost (20 nano-USD) over the teacher's answer
    # on the same request (10,000), every tier priced, the traffic arrived since the oldest trace.
    assert outcome.built.judge_cost == pytest.approx(0.002) and outcome.built.unpriced == ()
    assert outcome.built.first_ms == NOW_MS - 3_600_000


async def test_a_tier_never_called_is_unpriced_and_the_judge_at_its_prior(
    engine: AsyncEngine, database_url: str
) -> None:
    await seed(engine, "code", requests=100)  # no shadow call yet: the student's price is unknown
    store = SqlRouteTableStore(engine)
    outcome = await promote.run_promote(
        engine, store, promote_settings(database_url), dry_run=True, now_ms=NOW_MS
    )
    assert outcome.built.unpriced == ("student",) and outcome.built.judge_cost == JUDGE_COST


async def test_no_promotion_without_the_evidence_and_no_new_version_when_nothing_changed(
    engine: AsyncEngine, database_url: str
) -> None:
    await seed(engine, "billing", requests=100, verdicts={"as_good": 20})  # too few verdicts
    await seed(engine, "code", requests=100, verdicts={"as_good": 30, "worse": 30})  # too often worse
    store = SqlRouteTableStore(engine)
    settings = promote_settings(database_url)
    first = await promote.run_promote(engine, store, settings, now_ms=NOW_MS)
    assert not first.plan.decisions
    # The domains are new, so the first run records them (every route still on the teacher).
    assert first.written is not None and set(first.written.doc.routes.values()) == {"teacher"}
    assert "no change" in first.note
    second = await promote.run_promote(engine, store, settings, now_ms=NOW_MS + 60_000)
    assert second.written is None and not second.changed and await store.latest_version() == 1


async def test_domain_ids_and_names_survive_a_second_run_on_more_traffic(
    engine: AsyncEngine, database_url: str
) -> None:
    await seed(engine, "billing", requests=80, verdicts={"as_good": 10})
    await seed(engine, "code", requests=80)
    store = SqlRouteTableStore(engine)
    settings = promote_settings(database_url)
    first = (await promote.run_promote(engine, store, settings, now_ms=NOW_MS)).written
    assert first is not None
    await seed(engine, "billing", requests=60, verdicts={"as_good": 50}, seed=1, ts_ms=NOW_MS - 1000)
    await seed(engine, "code", requests=60, seed=1, ts_ms=NOW_MS - 1000)
    second = await promote.run_promote(engine, store, settings, now_ms=NOW_MS)
    assert second.written is not None and not second.built.new_domains and not second.built.retired
    assert second.written.doc.names == first.doc.names
    assert set(second.written.doc.centroids) == set(first.doc.centroids)
    billing = domain_named(first.doc, "invoice")
    assert [(d.domain, d.action) for d in second.plan.decisions] == [(billing, "promote")]


async def test_demotes_when_monitoring_shows_the_budget_broken(
    engine: AsyncEngine, database_url: str
) -> None:
    await seed(engine, "billing", requests=100, verdicts={"as_good": 60})
    await seed(engine, "code", requests=100)
    store = SqlRouteTableStore(engine)
    settings = promote_settings(database_url)
    promoted = (await promote.run_promote(engine, store, settings, now_ms=NOW_MS)).written
    assert promoted is not None
    billing = domain_named(promoted.doc, "invoice")
    assert promoted.doc.routes[billing] == "student"
    # Monitoring: the teacher serves a share of the promoted domain, the student shadowed, and loses.
    await seed(engine, "billing", requests=80, verdicts={"worse": 60}, seed=2, ts_ms=NOW_MS - 1000)
    outcome = await promote.run_promote(engine, store, settings, now_ms=NOW_MS)
    assert [(d.domain, d.action, d.from_tier, d.to_tier) for d in outcome.plan.decisions] == [
        (billing, "demote", "student", "teacher")
    ]
    assert outcome.written is not None and outcome.written.doc.routes[billing] == "teacher"
    assert f"demote {promoted.doc.names[billing]} [{billing}]: student -> teacher; 120 verdicts" in (
        outcome.written.doc.note
    )


async def test_a_new_version_when_only_a_share_moved(engine: AsyncEngine, database_url: str) -> None:
    settings = promote_settings(database_url)
    await seed(engine, "billing", requests=100, verdicts={"as_good": 20})
    await seed(engine, "code", requests=100)
    store = SqlRouteTableStore(engine)
    first = (await promote.run_promote(engine, store, settings, now_ms=NOW_MS)).written
    assert first is not None
    billing, code = domain_named(first.doc, "invoice"), domain_named(first.doc, "function")
    # Value of information: each domain asks for the verdicts it still needs by the next run, an hour away
    # (its 100 requests arrived in the hour before, so 100 more are expected): billing is 10 short of
    # `min_samples`, code, with none, 30.
    assert first.doc.sampling == {billing: Sampling(0.1), code: Sampling(0.3)}
    # A quarter of an hour on, the same traffic is spread over more time: the shares move, but too little to
    # write a version for.
    later = await promote.run_promote(engine, store, settings, now_ms=NOW_MS + 900_000)
    assert later.sampling[billing].share != 0.1 and not later.sampling_changed and later.written is None
    # Billing's student turns out worse: futile, revisited at a low share; code, through the pooled prior
    # of the step, too.
    await seed(engine, "billing", requests=40, verdicts={"worse": 30}, seed=5, ts_ms=NOW_MS - 1000)
    second = await promote.run_promote(engine, store, settings, now_ms=NOW_MS)
    assert not second.plan.decisions and second.sampling_changed
    assert second.written is not None and second.written.doc.routes == first.doc.routes
    assert second.written.doc.sampling == {billing: Sampling(0.006), code: Sampling(0.01)}
    assert "shadow shares (sampling) updated" in second.written.doc.note
    assert second.as_json()["sampling"][billing] == {"explore": 0.006}
    third = await promote.run_promote(engine, store, settings, now_ms=NOW_MS)
    assert third.written is None and not third.changed


async def test_a_configured_explore_share_replaces_value_of_information(
    engine: AsyncEngine, database_url: str
) -> None:
    await seed(engine, "billing", requests=100, verdicts={"as_good": 60})
    await seed(engine, "code", requests=100, verdicts={"as_good": 40, "worse": 20})
    settings = promote_settings(database_url, explore=0.2)
    written = (await promote.run_promote(engine, SqlRouteTableStore(engine), settings, now_ms=NOW_MS)).written
    assert written is not None
    billing, code = domain_named(written.doc, "invoice"), domain_named(written.doc, "function")
    # The promoted domain keeps its monitoring share; the futile one is explored at the fixed share anyway.
    assert written.doc.sampling == {billing: Sampling(0.03, "teacher"), code: Sampling(0.2)}


async def test_hand_written_routes_keep_their_shares(engine: AsyncEngine, database_url: str) -> None:
    store = SqlRouteTableStore(engine)
    mine = {"vip": Sampling(0.1, "supervisor")}
    await store.append(RouteTableDoc({"vip": "teacher"}, sampling=mine), author="master", base_version=None)
    await seed(engine, "billing", requests=100, verdicts={"as_good": 60})
    written = (
        await promote.run_promote(engine, store, promote_settings(database_url), now_ms=NOW_MS)
    ).written
    assert written is not None and written.doc.routes["vip"] == "teacher"
    assert written.doc.sampling["vip"] == mine["vip"]
    assert set(written.doc.sampling) == set(written.doc.routes)  # and a share for every domain it decided


async def test_dry_run_writes_nothing(engine: AsyncEngine, database_url: str) -> None:
    await seed(engine, "billing", requests=100, verdicts={"as_good": 60})
    store = SqlRouteTableStore(engine)
    outcome = await promote.run_promote(
        engine, store, promote_settings(database_url), dry_run=True, now_ms=NOW_MS
    )
    assert outcome.plan.decisions and outcome.written is None and await store.latest_version() == 0
    assert outcome.as_json()["dry_run"] and outcome.as_json()["decisions"][0]["action"] == "promote"


async def test_the_budget_comes_from_feedback_on_the_incumbent_when_not_configured(
    engine: AsyncEngine, database_url: str
) -> None:
    settings = promote_settings(database_url, quality=None)
    await seed(engine, "billing", requests=100, verdicts={"as_good": 60})
    store = SqlRouteTableStore(engine)
    # No feedback: the incumbent's quality is unknown, so its lower bound is 0 and no loss fits.
    unknown = await promote.run_promote(engine, store, settings, dry_run=True, now_ms=NOW_MS)
    assert unknown.plan.budget == 0 and not unknown.plan.decisions
    await seed(engine, "code", requests=100, feedback_score=1.0, seed=3)
    known = await promote.run_promote(engine, store, settings, dry_run=True, now_ms=NOW_MS)
    assert known.plan.quality.samples == 100 and 0.9 < known.plan.quality.lower < 1
    assert [d.action for d in known.plan.decisions] == ["promote"]


async def test_evidence_older_than_the_window_is_not_read(engine: AsyncEngine, database_url: str) -> None:
    old = NOW_MS - 40 * 86_400_000
    await seed(engine, "billing", requests=100, verdicts={"as_good": 60}, ts_ms=old)
    outcome = await promote.run_promote(
        engine, SqlRouteTableStore(engine), promote_settings(database_url), now_ms=NOW_MS
    )
    assert outcome.built.counts == {"traces": 0, "embedded": 0, "verdicts": 0, "feedback": 0}
    assert outcome.written is None


async def test_rollback_through_the_store_restores_the_earlier_version(
    engine: AsyncEngine, database_url: str
) -> None:
    await seed(engine, "billing", requests=100, verdicts={"as_good": 20})
    await seed(engine, "code", requests=100)
    store = SqlRouteTableStore(engine)
    settings = promote_settings(database_url)
    first = (await promote.run_promote(engine, store, settings, now_ms=NOW_MS)).written
    await seed(engine, "billing", requests=60, verdicts={"as_good": 50}, seed=4, ts_ms=NOW_MS - 1000)
    second = (await promote.run_promote(engine, store, settings, now_ms=NOW_MS)).written
    assert first is not None and second is not None and second.doc.routes != first.doc.routes
    back = await rollback(store, 1, author="master", dimensions=LOCAL_DIMENSIONS)
    assert back.version == 3
    restored = await store.get()
    assert restored is not None and restored.doc == first.doc  # names and centroids too
    # The next run decides from the restored version: the evidence still supports the promotion.
    again = await promote.run_promote(engine, store, settings, now_ms=NOW_MS)
    assert again.base_version == 3 and [d.action for d in again.plan.decisions] == ["promote"]


class RacingStore(SqlRouteTableStore):
    """Another writer lands a version just before each of the job's first `races` writes."""

    def __init__(self, engine: AsyncEngine, races: int) -> None:
        super().__init__(engine)
        self.races = races

    async def append(self, doc: RouteTableDoc, *, author: str, base_version: int | None) -> StoredRouteTable:
        if author == "promote" and self.races:
            self.races -= 1
            await super().append(RouteTableDoc({"other": "teacher"}), author="master", base_version=None)
        return await super().append(doc, author=author, base_version=base_version)


async def test_a_concurrent_write_makes_the_job_decide_again_on_top_of_it(
    engine: AsyncEngine, database_url: str
) -> None:
    await seed(engine, "billing", requests=100, verdicts={"as_good": 60})
    settings = promote_settings(database_url)
    with pytest.raises(VersionConflict):  # a writer landing before every attempt wins in the end
        await promote.run_promote(engine, RacingStore(engine, races=3), settings, now_ms=NOW_MS)
    outcome = await promote.run_promote(engine, RacingStore(engine, races=1), settings, now_ms=NOW_MS)
    assert outcome.written is not None and outcome.written.version == 5 and outcome.base_version == 4
    assert outcome.written.doc.routes["other"] == "teacher"  # a hand-written route is kept as it was


def test_promotion_needs_two_tiers_below_the_unknown_tier(tmp_path: Any) -> None:
    settings = promote_settings(f"sqlite:///{tmp_path}/x.db")
    one_tier = type(settings.routing.policy)(unknown_tier="student")
    import dataclasses

    routing = dataclasses.replace(settings.routing, policy=one_tier)
    with pytest.raises(promote.PromoteError, match="at least two configured tiers"):
        promote.ladder_for(dataclasses.replace(settings, routing=routing))


async def test_the_periodic_task_logs_a_failure_and_runs_again_next_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="tiergate.promote")
    runs: list[str] = []
    sleeps: list[float] = []

    async def run_once() -> Any:
        runs.append("run")
        if len(runs) == 1:
            raise RuntimeError("database went away")
        if len(runs) == 2:
            raise VersionConflict(7)
        raise asyncio.CancelledError  # the gateway shutting down ends the task

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    with pytest.raises(asyncio.CancelledError):
        await promote.periodically(run_once, 30.0, sleep=sleep)
    assert len(runs) == 3 and sleeps == [30.0, 30.0, 30.0]
    assert "promote run failed" in caplog.text and "database went away" in caplog.text
    assert "another writer landed first" in caplog.text


async def test_the_gateway_runs_the_job_in_the_background_and_serves_what_it_wrote(
    sqlite_url: str,
) -> None:
    from tests.admin.conftest import config, serve

    await migrate.upgrade(sqlite_url)
    engine = open_engine(sqlite_url)
    try:
        await seed(engine, "billing", requests=100, verdicts={"as_good": 60}, ts_ms=NOW_MS)
    finally:
        await engine.dispose()
    settings = config(
        sqlite_url,
        routing={"strategy": "promotion", "refresh_s": 0.05},
        learning={"promote": {"enabled": True, "interval_s": 0.05, "clusters": 1, "quality": 0.9,
                              "window_days": 36500}},
    )  # fmt: skip
    async with serve(settings) as served:
        store, router = served.gateway.control.route_tables, served.gateway.router
        deadline = asyncio.get_running_loop().time() + 30
        while router.snapshot.table.version == 0:
            assert asyncio.get_running_loop().time() < deadline, "no route table written"
            await asyncio.sleep(0.02)
        stored = await store.get()
        assert stored is not None and stored.author == "promote"
        assert set(router.snapshot.table.routes.values()) == {"student"}
        assert router.snapshot.names == tuple(stored.doc.centroids)
        # Nothing changes on the next runs: no further version.
        await asyncio.sleep(0.3)
        assert await store.latest_version() == stored.version == 1
        # Each run was claimed first (one replica per interval): the claim names this process.
        async with served.gateway.accounting.engine.connect() as conn:
            (holder,) = (await conn.execute(text("SELECT holder FROM job_runs WHERE name = 'promote'"))).one()
        assert holder.split(":")[1] == str(os.getpid())
