"""A tenant's cache override through the admin API and the CLI: checked like the config, applied per request."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.admin.conftest import ADMIN, Served, config, serve
from tiergate.admin import store
from tiergate.admin.cli import main
from tiergate.admin.schemas import TenantCreate
from tiergate.gateway.config.cache import CacheSection
from tiergate.gateway.config.errors import ConfigError
from tiergate.gateway.config.settings import parse_settings

OVERRIDE = {"exact": {"ttl_s": 60}, "semantic": {"threshold": 0.95}}


def _tenants(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT * FROM tenants ORDER BY id").fetchall()


async def _cache(s: Served, key: str) -> str:
    """Which cache answered a deterministic request (the same one every time), once stores are written."""
    r = await s.chat(key, temperature=0)
    assert r.status_code == 200, r.text
    assert s.gateway.caches.exact is not None
    await s.gateway.caches.exact.flush()
    return r.headers["x-tiergate-cache"]


async def _patch(s: Served, tenant_id: str, cache: Any) -> dict[str, Any]:
    r = await s.client.patch(f"/admin/tenants/{tenant_id}", json={"cache": cache}, headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_the_override_is_stored_shown_replaced_and_removed(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant(cache=OVERRIDE)
        assert tenant["cache"] == OVERRIDE
        got = (await s.client.get(f"/admin/tenants/{tenant['id']}", headers=ADMIN)).json()
        assert got["cache"] == OVERRIDE
        r = await s.client.patch(f"/admin/tenants/{tenant['id']}", json={"rpm": 5}, headers=ADMIN)
        assert r.json()["cache"] == OVERRIDE  # absent: unchanged
        assert (await _patch(s, tenant["id"], {"nondeterministic": True}))["cache"] == {
            "nondeterministic": True
        }  # an object replaces the previous override
        assert (await _patch(s, tenant["id"], None))["cache"] is None
        assert (await s.new_tenant())["cache"] is None


BAD = [
    ("POST", "off", None),
    ("POST", {"exact": {"enabled": "no"}}, "cache.exact.enabled"),
    ("POST", {"semantic": {"threshold": 1.5}}, "cache.semantic.threshold"),
    ("PATCH", {"semantic": {"threshold": -0.1}}, "cache.semantic.threshold"),
    ("PATCH", {"semantic": {"threshold": "high"}}, "cache.semantic.threshold"),
    ("PATCH", {"exact": {"ttl_s": 0}}, "cache.exact.ttl_s"),
    ("PATCH", {"exact": {"max_bytes": 4096}}, "cache.exact.max_bytes"),  # the store's size is global
    ("PATCH", {"semantic": {"prune_s": 5}}, "cache.semantic.prune_s"),
    ("PATCH", {"exact": []}, "cache.exact"),
    ("PATCH", {"nondeterministic": 1}, "cache.nondeterministic"),
    ("PATCH", {"colour": "red"}, "cache.colour"),
]


@pytest.mark.parametrize(("method", "cache", "param"), BAD)
async def test_a_bad_override_is_a_400_naming_the_field_and_changes_nothing(
    sqlite_url: str, tmp_path: Path, method: str, cache: Any, param: str | None
) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant(cache=OVERRIDE)
        before = _tenants(tmp_path / "tiergate.db")
        if method == "POST":
            r = await s.client.post("/admin/tenants", json={"name": "b", "cache": cache}, headers=ADMIN)
        else:
            r = await s.client.patch(f"/admin/tenants/{tenant['id']}", json={"cache": cache}, headers=ADMIN)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"]
        assert error["param"] == (param or "cache")
        assert _tenants(tmp_path / "tiergate.db") == before
    if param is not None:
        # The config's `cache.tenants` says the same of the same override: one check serves both.
        with pytest.raises(ConfigError) as yaml_error:
            parse_settings({"cache": {"tenants": {"acme": cache}}}, env={})
        assert str(yaml_error.value).replace("cache.tenants.acme", "cache") == error["message"]


async def test_semantic_on_for_a_tenant_needs_the_config_to_open_it(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant()
        r = await s.client.patch(
            f"/admin/tenants/{tenant['id']}", json={"cache": {"semantic": {"enabled": True}}}, headers=ADMIN
        )
        # A valid override the gateway's state refuses: a conflict (409), not a bad request.
        assert r.status_code == 409 and "enable cache.semantic in the config" in r.json()["error"]["message"]
        assert r.json()["error"]["code"] == "cache_not_opened"
        # Its other fields may be set ahead: they take effect once the config opens the semantic cache.
        await _patch(s, tenant["id"], {"semantic": {"threshold": 0.97}})
    async with serve(config(sqlite_url, cache={"exact": {"enabled": False}})) as s:
        r = await s.client.post(
            "/admin/tenants", json={"name": "b", "cache": {"exact": {"enabled": True}}}, headers=ADMIN
        )
        assert r.status_code == 409 and r.json()["error"]["param"] == "cache.exact.enabled"


async def test_exact_off_for_one_tenant_makes_its_requests_miss_while_another_still_hits(
    sqlite_url: str,
) -> None:
    async with serve(config(sqlite_url)) as s:
        acme, globex = await s.new_tenant(), await s.new_tenant(name="globex")
        a, g = (await s.new_key(acme["id"]))["key"], (await s.new_key(globex["id"]))["key"]
        assert [await _cache(s, a), await _cache(s, a)] == ["miss", "exact"]
        assert [await _cache(s, g), await _cache(s, g)] == ["miss", "exact"]
        await _patch(s, acme["id"], {"exact": {"enabled": False}})
        assert await _cache(s, a) == "miss"
        assert await _cache(s, g) == "exact"
        await _patch(s, acme["id"], {"exact": {"enabled": True}})
        assert await _cache(s, a) == "exact"  # the entry stored before is served again
        await _patch(s, acme["id"], {"exact": {"enabled": False}})
        await _patch(s, acme["id"], None)  # removed: the config's policy, exact on
        assert await _cache(s, a) == "exact"


async def test_a_replica_without_redis_applies_the_change_at_its_next_key_poll(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as one, serve(config(sqlite_url)) as two:
        tenant = await one.new_tenant()
        key = (await one.new_key(tenant["id"]))["key"]
        assert [await _cache(two, key), await _cache(two, key)] == ["miss", "exact"]
        await _patch(one, tenant["id"], {"exact": {"enabled": False}})  # announced to `one` only
        deadline = time.monotonic() + 10  # the replica polls every 0.05 s (key_refresh_s)
        while await _cache(two, key) == "exact":
            assert time.monotonic() < deadline, "the other replica never saw the change"
        assert await _cache(two, key) == "miss"


async def test_a_purge_stops_serving_the_tenants_cached_answers_and_no_one_elses(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with serve(config(sqlite_url)) as s:
        acme, globex = await s.new_tenant(), await s.new_tenant(name="globex")
        a, g = (await s.new_key(acme["id"]))["key"], (await s.new_key(globex["id"]))["key"]
        assert [await _cache(s, a), await _cache(s, a), await _cache(s, g)] == ["miss", "exact", "miss"]
        r = await s.client.post(f"/admin/tenants/{acme['id']}/cache/purge", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json() == {"tenant_id": acme["id"], "cache_epoch": 1}
        assert [await _cache(s, a), await _cache(s, a)] == ["miss", "exact"]  # stored anew after the purge
        assert await _cache(s, g) == "exact"
        shown = (await s.client.get(f"/admin/tenants/{acme['id']}", headers=ADMIN)).json()
        assert shown["cache_epoch"] == 1 and shown["updated_at"] > acme["updated_at"]
        # Refused, changing nothing: an unknown tenant, a deleted one, a tenant's own key.
        await s.client.delete(f"/admin/tenants/{globex['id']}", headers=ADMIN)
        before = _tenants(tmp_path / "tiergate.db")
        for tenant_id in ("no-such-tenant", globex["id"]):
            r = await s.client.post(f"/admin/tenants/{tenant_id}/cache/purge", headers=ADMIN)
            assert r.status_code == 404 and r.json()["error"]["param"] == "tenant_id"
        r = await s.client.post(
            f"/admin/tenants/{acme['id']}/cache/purge", headers={"authorization": f"Bearer {a}"}
        )
        assert r.status_code == 403  # the admin API takes the master key only
        assert _tenants(tmp_path / "tiergate.db") == before
        paths = (await s.client.get("/admin/openapi.json", headers=ADMIN)).json()["paths"]
        assert "post" in paths["/tenants/{tenant_id}/cache/purge"]


async def test_purges_at_once_each_raise_the_epoch(engine: AsyncEngine) -> None:
    tenant = await store.create_tenant(engine, TenantCreate(name="acme"), CacheSection().settings())
    assert tenant.cache_epoch == 0
    await asyncio.gather(*(store.purge_cache(engine, tenant.id) for _ in range(5)))
    assert (await store.get_tenant(engine, tenant.id)).cache_epoch == 5


async def test_another_replica_stops_serving_at_its_next_key_poll_after_a_purge(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as one, serve(config(sqlite_url)) as two:
        tenant = await one.new_tenant()
        key = (await one.new_key(tenant["id"]))["key"]
        assert [await _cache(two, key), await _cache(two, key)] == ["miss", "exact"]
        r = await one.client.post(f"/admin/tenants/{tenant['id']}/cache/purge", headers=ADMIN)
        assert r.status_code == 200
        deadline = time.monotonic() + 10  # the replica polls every 0.05 s (key_refresh_s)
        while await _cache(two, key) == "exact":
            assert time.monotonic() < deadline, "the other replica kept serving purged answers"


def _cli(cfg: Path, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    code = main(["tenants", *argv, "--config", str(cfg), "--json"])
    out = capsys.readouterr()
    return code, json.loads(out.out) if code == 0 else out.err


def test_the_cli_sets_and_removes_the_override(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "cli.yaml"
    cfg.write_text(yaml.safe_dump({"master_key": "m", "database_url": sqlite_url}))
    code, tenant = _cli(cfg, "create", "acme", "--cache", json.dumps(OVERRIDE), capsys=capsys)
    assert code == 0 and tenant["cache"] == OVERRIDE
    code, err = _cli(cfg, "update", tenant["id"], "--cache", '{"semantic": {"threshold": 2}}', capsys=capsys)
    assert code == 2 and "cache.semantic.threshold: 2 is not a number from 0.0 to 1.0" in err
    code, err = _cli(cfg, "update", tenant["id"], "--cache", "{nope", capsys=capsys)
    assert code == 2 and "--cache" in err
    assert _cli(cfg, "show", tenant["id"], capsys=capsys)[1]["cache"] == OVERRIDE
    code, tenant = _cli(cfg, "update", tenant["id"], "--cache", "null", capsys=capsys)
    assert code == 0 and tenant["cache"] is None
    code, tenant = _cli(cfg, "purge-cache", tenant["id"], capsys=capsys)
    assert code == 0 and tenant["cache_epoch"] == 1
    code, err = _cli(cfg, "purge-cache", "no-such-tenant", capsys=capsys)
    assert code == 2 and "no tenant with id 'no-such-tenant'" in err
