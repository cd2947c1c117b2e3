"""Monitoring promoted traffic end to end: a promoted domain's monitoring sample is served by the incumbent
and its promoted tier shadowed against it; `tiergate promote` reads those verdicts and demotes; the next
version's exploring share then drives the shadow sampler."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import respx
from httpx import Response
from sqlalchemy import select

from tests.gateway.conftest import AUTH, completion, settings
from tests.gateway.learning.test_shadow import judge_prefers
from tests.gateway.routing.test_routing_strategies import CountingEncoder
from tests.support import authenticate_with, embed_with
from tiergate.admin.jobs import promote
from tiergate.admin.server import create_server
from tiergate.gateway.accounting.auth import MASTER, Principal
from tiergate.gateway.db.learning import Evaluation, Trace
from tiergate.gateway.routing.table_store import refresh
from tiergate.policies.route_table import Sampling
from tiergate.policies.routing import MONITOR_KEY
from tiergate.policies.shadow import drawn

E0 = [1.0] + [0.0] * 383  # the CountingEncoder embeds every text as e0: every request is billing's
QUESTION = "Which planet is largest? (A) Mars (B) Jupiter (C) Venus"
STUDENT, TEACHER, JUDGE = (
    "http://up-a/v1/chat/completions",
    "http://up-t/v1/chat/completions",
    "http://up-j/v1/chat/completions",
)


class Encoder(CountingEncoder):
    """Queries all land in billing; any two answers are unrelated (the cheap check finds no agreement)."""

    async def aembed(self, texts: list[str]) -> np.ndarray:
        return np.eye(len(texts), 384, dtype=np.float32)


def config(database_url: str, spill_dir: Path, shadow: dict[str, Any] | None = None) -> Any:
    tiers = {
        "student": [{"model": "small-a", "api_base": "http://up-a/v1", "input_cost_per_mtok": 1, "output_cost_per_mtok": 2}],
        "teacher": [{"model": "big", "api_base": "http://up-t/v1", "input_cost_per_mtok": 10, "output_cost_per_mtok": 20}],
        "supervisor": [{"model": "judge", "api_base": "http://up-j/v1", "input_cost_per_mtok": 30, "output_cost_per_mtok": 60}],
    }  # fmt: skip
    return settings(
        database_url=database_url,
        tiers=tiers,
        upstream={"max_retries": 0, "backoff_base_s": 0.001, "backoff_max_s": 0.002},
        accounting={"spill_dir": str(spill_dir), "ledger_flush_s": 0.01},
        routing={"strategy": "promotion", "refresh_s": 60},
        cache={"exact": {"enabled": False}},
        # No static shadow fraction: every comparison below is one the route table asked for.
        learning={
            "traces": {"content": "full"},
            # The share cap (far above the spend) has its own tests; here every comparison the table asks for is made.
            "shadow": {"route_table": True, "evaluation_share": 1000, **(shadow or {})},
            "promote": {"clusters": 1, "quality": 0.9},
        },
    )


@asynccontextmanager
async def gateway(
    database_url: str, tmp_path: Path, shadow: dict[str, Any] | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, Any, Any]]:
    router = respx.Router(assert_all_called=False)
    # The promoted student says something else than the teacher, and the judge prefers the teacher's answer.
    router.post(STUDENT).mock(return_value=Response(200, json=completion("small-a", "Venus, answer C")))
    router.post(TEACHER).mock(return_value=Response(200, json=completion("big", "Jupiter, answer B")))
    router.post(JUDGE).mock(side_effect=judge_prefers("Jupiter"))
    settings_ = config(database_url, tmp_path, shadow)
    app = create_server(
        settings_, upstream_transport=httpx.MockTransport(router.handler), rng=random.Random(0)
    )
    async with app.router.lifespan_context(app):
        gw = app.state.gateway
        embed_with(gw, Encoder())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            yield client, gw, settings_


async def ask(client: httpx.AsyncClient, request_id: str) -> str:
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": QUESTION}]},
        headers={**AUTH, "x-request-id": request_id},
    )
    assert r.status_code == 200
    return r.headers["x-tiergate-tier"]


async def monitor_billing(client: httpx.AsyncClient) -> None:
    """billing promoted to the student, every request a monitoring sample served by the teacher."""
    r = await client.put(
        "/admin/route-table",
        json={"routes": {"billing": "student"}, "centroids": {"billing": E0},
              "sampling": {"billing": {"monitor": 1.0, "incumbent": "teacher"}}},
        headers=AUTH,
    )  # fmt: skip
    assert r.status_code == 201, r.text  # a new version


async def settled(gw: Any) -> tuple[list[Any], list[Any]]:
    """The traces and evaluations once every queued evaluation, ledger row and trace is written."""
    await gw.learning.shadow.drain()
    await gw.accounting.ledger.flush()
    await gw.learning.traces.flush()
    async with gw.accounting.engine.connect() as conn:
        traces = (await conn.execute(select(Trace.__table__))).all()  # type: ignore[attr-defined]
        evaluations = (await conn.execute(select(Evaluation.__table__))).all()  # type: ignore[attr-defined]
    return list(traces), list(evaluations)


async def test_a_monitoring_sample_is_served_by_the_incumbent_and_its_verdicts_demote(
    sqlite_url: str, tmp_path: Path
) -> None:
    ids = [f"mon-{i}" for i in range(40)]
    monitored = {i for i in ids if drawn(0, i, MONITOR_KEY, 0.5)}
    assert 10 < len(monitored) < 30
    # A static fraction of 1: where the route table sets a share, the table's wins.
    async with gateway(sqlite_url, tmp_path, {"fraction": 1.0}) as (client, gw, settings_):
        put = await client.put(
            "/admin/route-table",
            json={
                "routes": {"billing": "student"},
                "centroids": {"billing": E0},
                "names": {"billing": "billing"},
                "sampling": {"billing": {"monitor": 0.5, "incumbent": "teacher"}},
            },
            headers=AUTH,
        )
        assert put.status_code == 201
        served = {i: await ask(client, i) for i in ids}
        traces, evaluations = await settled(gw)

        # The drawn share is the teacher's, the rest the promoted student's; the trace says why.
        assert {i for i, tier in served.items() if tier == "teacher"} == monitored
        reasons = {t.request_id: t.route_reason for t in traces}
        assert all("teacher serves: monitoring sample" in reasons[i] for i in monitored)
        assert not any("monitoring" in reasons[i] for i in set(ids) - monitored)
        # One evaluation per monitoring sample: the student shadowed against the teacher, and worse.
        assert {e.request_id for e in evaluations} == monitored
        assert {(e.domain, e.served_tier, e.candidate_tier, e.verdict) for e in evaluations} == {
            ("billing", "teacher", "student", "worse")
        }

        outcome = await promote.run_promote(gw.accounting.engine, gw.control.route_tables, settings_)
        assert [(d.domain, d.action, d.from_tier, d.to_tier, d.samples) for d in outcome.plan.decisions] == [
            ("billing", "demote", "student", "teacher", len(monitored))
        ]
        written = outcome.written
        assert written is not None and written.doc.routes == {"billing": "teacher"}
        # Back on the teacher, billing is not explored: its student lost every comparison, so it cannot fit
        # the budget (futility), and on 40 requests of traffic a revisit could not repay the verdicts it needs.
        assert written.doc.sampling == {"billing": Sampling(0.0)}

        # This replica installs the new version; its share, not the static fraction, drives the shadow sampler.
        assert await refresh(gw.control.route_tables, gw.router)
        assert all([await ask(client, f"exp-{i}") == "teacher" for i in range(20)])
        _, evaluations = await settled(gw)
    assert {e.request_id for e in evaluations} == monitored


@pytest.mark.parametrize(
    "shadow",
    [
        {"route_table": False},  # the tenant does not follow the table's shares
        {"candidate": "none", "fraction": 1.0},  # compares nothing
        {"daily_budget_usd": 0.0},  # no evaluation budget: an incumbent's answer nobody compares
    ],
)
async def test_no_monitoring_sample_for_a_tenant_that_would_not_compare_it(
    shadow: dict[str, Any], sqlite_url: str, tmp_path: Path
) -> None:
    async with gateway(sqlite_url, tmp_path, shadow) as (client, gw, _):
        await monitor_billing(client)
        assert [await ask(client, f"r-{i}") for i in range(5)] == ["student"] * 5
        if gw.learning.shadow is not None:
            await gw.learning.shadow.drain()
            assert gw.learning.shadow.stats.sampled == 0


async def test_monitoring_stops_when_the_days_evaluation_budget_is_spent(
    sqlite_url: str, tmp_path: Path
) -> None:
    # The first sample's shadow call alone (200,000 nano-USD at the student's price) spends the cap.
    async with gateway(sqlite_url, tmp_path, {"daily_budget_usd": 0.0001}) as (client, gw, _):
        await monitor_billing(client)
        assert await ask(client, "r-0") == "teacher"
        await gw.learning.shadow.drain()
        # Back to the promoted tier: no incumbent answers that nobody could afford to compare.
        assert [await ask(client, f"r-{i}") for i in range(1, 4)] == ["student"] * 3


class RestrictedKeys:
    """Every key may use only `allowed`; the master key stays the master (for the admin API)."""

    def __init__(self, allowed: frozenset[str]) -> None:
        self.allowed = allowed

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        if headers.get("authorization") == AUTH["authorization"]:
            return MASTER
        return Principal("key", tenant_id="acme", key_id="acme-1", allowed_models=self.allowed)


@pytest.mark.parametrize("allowed", [{"student"}, {"student", "supervisor"}])
async def test_a_key_that_may_not_use_the_incumbent_takes_no_monitoring_sample(
    allowed: set[str], sqlite_url: str, tmp_path: Path
) -> None:
    async with gateway(sqlite_url, tmp_path) as (client, gw, _):
        await monitor_billing(client)
        authenticate_with(gw, RestrictedKeys(frozenset(allowed)))
        for i in range(3):
            r = await client.post(
                "/v1/chat/completions",
                json={"model": "auto", "messages": [{"role": "user", "content": QUESTION}]},
                headers={"authorization": "Bearer k-acme-1", "x-request-id": f"r-{i}"},
            )
            # Served by the promoted tier it may use, not refused, and not by a tier above the incumbent.
            assert r.status_code == 200 and r.headers["x-tiergate-tier"] == "student"
        await gw.learning.shadow.drain()
        assert gw.learning.shadow.stats.sampled == 0
