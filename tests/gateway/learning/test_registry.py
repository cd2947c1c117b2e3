"""Registered models: loaded by the gateway in the background, shadowed while candidates, serving once
active, their API key read from the gateway's environment."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import respx
from httpx import Response
from sqlalchemy import select

from tests.gateway.conftest import AUTH, completion, gateway, settings
from tests.support import gateway_of
from tiergate.admin import models
from tiergate.gateway.db.learning import Evaluation

TINY = "http://tiny/v1/chat/completions"


def watch_installs(registry: Any) -> asyncio.Event:
    """An event set whenever the registry installs a changed set of models."""
    installed, install = asyncio.Event(), registry.install

    def watched(*args: Any) -> None:
        install(*args)
        installed.set()

    registry.install = watched
    return installed


def routes(router: respx.Router) -> respx.Route:
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a", "B"))
    )
    return router.post(TINY).mock(return_value=Response(200, json=completion("tiny", "B")))


async def test_a_candidate_is_shadowed_on_its_tiers_traffic_and_serves_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TINY_KEY", "sk-tiny-secret")
    router = respx.Router(assert_all_called=False)
    tiny = routes(router)
    config = settings(
        learning={"shadow": {"fraction": 1.0, "evaluation_share": 1000}, "models": {"refresh_s": 0.05}}
    )
    async with gateway(router, config) as (client, _):
        gw = gateway_of(client)
        installed = watch_installs(gw.learning.registry)
        before = {"model": "student", "messages": [{"role": "user", "content": "before"}]}
        assert (await client.post("/v1/chat/completions", json=before, headers=AUTH)).status_code == 200
        assert gw.learning.shadow.stats.sampled == 0  # nothing cheaper than student to compare with yet
        row = await models.register(
            gw.accounting.engine, tier="student", model="tiny", api_base="http://tiny/v1/", api_key_env="TINY_KEY",
            input_cost_per_mtok=0.1, output_cost_per_mtok=0.2,
        )  # fmt: skip
        await asyncio.wait_for(installed.wait(), 10)  # picked up by the background refresh
        assert gw.fleet.snapshot.candidates
        listed = {m["id"] for m in (await client.get("/v1/models", headers=AUTH)).json()["data"]}
        assert "tiny" not in listed
        assert (
            await client.post(
                "/v1/chat/completions",
                json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]},
                headers=AUTH,
            )
        ).status_code == 404
        served = await client.post("/v1/chat/completions", json={"model": "student", "messages": [{"role": "user", "content": "x"}]}, headers=AUTH)  # fmt: skip
        assert served.headers["x-tiergate-model"] == "small-a"
        await gw.learning.shadow.drain()
        async with gw.accounting.engine.connect() as conn:
            (evaluation,) = (await conn.execute(select(Evaluation.__table__))).all()  # type: ignore[attr-defined]
    assert tiny.call_count == 1  # the shadow call only
    assert tiny.calls.last.request.headers["authorization"] == "Bearer sk-tiny-secret"
    assert json.loads(tiny.calls.last.request.content)["model"] == "tiny"
    assert evaluation.registered and evaluation.candidate_deployment_id == f"registered/student/tiny#{row.id}"
    assert (evaluation.served_tier, evaluation.candidate_tier, evaluation.agreed) == (
        "student",
        "student",
        True,
    )
    assert evaluation.candidate_cost_nano == round(100 * 0.1 * 1000 + 50 * 0.2 * 1000)


async def test_activation_makes_it_serve_and_removal_forgets_it() -> None:
    router = respx.Router(assert_all_called=False)
    tiny = routes(router)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "x"}]}
    async with gateway(router, settings()) as (client, _):
        gw = gateway_of(client)
        engine, registry = gw.accounting.engine, gw.learning.registry
        row = await models.register(engine, tier="student", model="tiny", api_base="http://tiny/v1")
        assert await registry.refresh() and not await registry.refresh()  # changed once, then stable
        await models.activate(engine, row.id)
        assert await registry.refresh()
        r = await client.post("/v1/chat/completions", json=body, headers=AUTH)
        assert r.status_code == 200 and r.headers["x-tiergate-tier"] == "student" and tiny.call_count == 1
        assert f"registered/student/tiny#{row.id}" in gw.fleet.snapshot.catalog.tiers["student"]
        await models.deactivate(engine, row.id)
        await registry.refresh()
        assert (await client.post("/v1/chat/completions", json=body, headers=AUTH)).status_code == 404
        await models.remove(engine, row.id)
        await registry.refresh()
        assert gw.fleet.snapshot.candidates == {} and [m.id for m in await models.list_models(engine)] == []


async def test_a_model_whose_key_variable_is_missing_is_left_out(caplog: pytest.LogCaptureFixture) -> None:
    router = respx.Router(assert_all_called=False)
    routes(router)
    async with gateway(router, settings()) as (client, _):
        gw = gateway_of(client)
        await models.register(gw.accounting.engine, tier="student", model="tiny", api_base="http://tiny/v1", api_key_env="NO_SUCH_VARIABLE_X")  # fmt: skip
        assert not await gw.learning.registry.refresh()
        assert gw.fleet.snapshot.candidates == {}
    assert "$NO_SUCH_VARIABLE_X is not set" in caplog.text
