"""The admin API and /v1/usage in-process: CRUD, bad input, tenant walls, reports against the ledger."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.admin.conftest import ADMIN, config, serve

pytestmark = pytest.mark.asyncio


def _rows(db: Path, table: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT * FROM {table}").fetchall()


async def test_tenant_and_key_lifecycle(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant(
            budget_usd=2.5, rpm=60, allowed_models=["student"], metadata={"team": "a"}
        )
        assert tenant["budget_period"] == "monthly" and tenant["metadata"] == {"team": "a"}
        key = await s.new_key(tenant["id"], name="ci", tpm=1000)
        assert (
            key["key"].startswith("sk-tg-")
            and key["key"].startswith(key["prefix"])
            and key["status"] == "active"
        )
        r = await s.client.patch(
            f"/admin/tenants/{tenant['id']}", json={"rpm": None, "name": "acme2"}, headers=ADMIN
        )
        assert r.status_code == 200 and r.json()["rpm"] is None and r.json()["name"] == "acme2"
        listed = (await s.client.get(f"/admin/keys?tenant_id={tenant['id']}", headers=ADMIN)).json()["data"]
        assert [k["id"] for k in listed] == [key["id"]] and "key" not in listed[0]
        assert (await s.chat(key["key"])).status_code == 200
        assert (
            await s.chat(key["key"], model="teacher")
        ).status_code == 403  # the tenant allows students only
        r = await s.client.delete(f"/admin/tenants/{tenant['id']}", headers=ADMIN)
        assert r.status_code == 200
        assert (await s.chat(key["key"])).status_code == 401  # a deleted tenant's keys stop at once
        assert (await s.client.get(f"/admin/tenants/{tenant['id']}", headers=ADMIN)).status_code == 404


async def test_rotation_keeps_the_old_key_for_the_grace_period(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant()
        old = await s.new_key(tenant["id"], rpm=5)
        r = await s.client.post(
            f"/admin/keys/{old['id']}/rotate", json={"grace_period_s": 3600}, headers=ADMIN
        )
        assert r.status_code == 200
        new = r.json()["new_key"]
        assert new["rotated_from"] == old["id"] and new["rpm"] == 5 and new["key"] != old["key"]
        assert r.json()["old_key"]["expires_at"] is not None
        assert (await s.chat(old["key"])).status_code == 200
        assert (await s.chat(new["key"])).status_code == 200
        r = await s.client.post(f"/admin/keys/{new['id']}/rotate", json={"grace_period_s": 0}, headers=ADMIN)
        assert (await s.chat(new["key"])).status_code == 401  # no grace: gone at once
        assert (await s.chat(r.json()["new_key"]["key"])).status_code == 200


BAD_INPUT: list[tuple[str, str, Any, int]] = [
    ("POST", "/admin/tenants", b"{not json", 400),
    ("POST", "/admin/tenants", [1, 2], 400),
    ("POST", "/admin/tenants", {}, 400),  # name missing
    ("POST", "/admin/tenants", {"name": 5}, 400),
    ("POST", "/admin/tenants", {"name": "a", "budget_usd": -1}, 400),
    ("POST", "/admin/tenants", {"name": "a", "budget_usd": "10"}, 400),
    ("POST", "/admin/tenants", {"name": "a", "budget_period": "hourly"}, 400),
    ("POST", "/admin/tenants", {"name": "a", "rpm": 0}, 400),
    ("POST", "/admin/tenants", {"name": "a", "rpm": True}, 400),
    ("POST", "/admin/tenants", {"name": "a", "rpm": 1.5}, 400),
    ("POST", "/admin/tenants", {"name": "a", "allowed_models": "student"}, 400),
    ("POST", "/admin/tenants", {"name": "a", "surprise": 1}, 400),
    ("POST", "/admin/tenants", {"name": "a", "metadata": {"x": "y" * 70_000}}, 413),
    ("PATCH", "/admin/tenants/ten_missing", {"rpm": 5}, 404),
    ("PATCH", "/admin/tenants/{tenant}", {"budget_usd": -5}, 400),
    ("PATCH", "/admin/tenants/{tenant}", {"name": None}, 400),
    ("DELETE", "/admin/tenants/ten_missing", None, 404),
    ("GET", "/admin/tenants/ten_missing", None, 404),
    ("POST", "/admin/keys", {"tenant_id": "ten_missing"}, 404),
    ("POST", "/admin/keys", {"tenant_id": "{tenant}", "expires_at": "tomorrow"}, 400),
    ("POST", "/admin/keys", {"tenant_id": "{tenant}", "tpm": -3}, 400),
    ("POST", "/admin/keys", {"tenant_id": "{tenant}", "budget_usd": 1e12}, 400),
    ("GET", "/admin/keys?tenant_id=ten_missing", None, 404),
    ("GET", "/admin/keys/key_missing", None, 404),
    ("PATCH", "/admin/keys/key_missing", {"rpm": 5}, 404),
    ("PATCH", "/admin/keys/{key}", {"rpm": "fast"}, 400),
    ("DELETE", "/admin/keys/key_missing", None, 404),
    ("POST", "/admin/keys/key_missing/rotate", None, 404),
    ("POST", "/admin/keys/{key}/rotate", {"grace_period_s": -1}, 400),
    ("GET", "/admin/reports/cost?group_by=color", None, 400),
    ("GET", "/admin/reports/cost?start=yesterday", None, 400),
    ("GET", "/admin/reports/cost?start=", None, 400),  # empty is not a date
    ("GET", "/admin/reports/cost?format=xml", None, 400),
    ("PUT", "/admin/tenants", {"name": "a"}, 405),
    ("GET", "/admin/nothing", None, 404),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), BAD_INPUT)
async def test_bad_input_is_a_clear_4xx_and_writes_nothing(
    sqlite_url: str, tmp_path: Path, method: str, path: str, body: Any, status: int
) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant()
        key = await s.new_key(tenant["id"])
        before = (_rows(tmp_path / "tiergate.db", "tenants"), _rows(tmp_path / "tiergate.db", "api_keys"))
        path = path.replace("{tenant}", tenant["id"]).replace("{key}", key["id"])
        if isinstance(body, dict):
            body = {
                k: (v.replace("{tenant}", tenant["id"]) if isinstance(v, str) else v) for k, v in body.items()
            }
        kwargs: dict[str, Any] = (
            {"content": body} if isinstance(body, bytes) else ({"json": body} if body is not None else {})
        )
        r = await s.client.request(
            method, path, headers={**ADMIN, "content-type": "application/json"}, **kwargs
        )
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert error["message"] and error["type"] == "invalid_request_error"
        after = (_rows(tmp_path / "tiergate.db", "tenants"), _rows(tmp_path / "tiergate.db", "api_keys"))
        assert after == before


async def test_admin_needs_the_master_key(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant()
        key = await s.new_key(tenant["id"])
        for auth, status in (
            ({}, 401),
            ({"authorization": "Bearer wrong"}, 401),
            ({"authorization": f"Bearer {key['key']}"}, 403),
            ({"api-key": key["key"]}, 403),
        ):
            for method, path in (
                ("GET", "/admin/tenants"),
                ("GET", f"/admin/keys/{key['id']}"),
                ("GET", "/admin/reports/cost"),
                ("POST", "/admin/keys"),
            ):
                r = await s.client.request(method, path, headers=auth, json={"tenant_id": tenant["id"]})
                assert r.status_code == status, (auth, path)
        assert (
            await s.client.get("/admin/tenants", headers={"api-key": "sk-admin-master"})
        ).status_code == 200
        # The API's document is the admin's too: it names every operation and parameter.
        assert (await s.client.get("/admin/openapi.json")).status_code == 401
        tenant_key = {"authorization": f"Bearer {key['key']}"}
        assert (await s.client.get("/admin/openapi.json", headers=tenant_key)).status_code == 403
        assert (await s.client.get("/admin/openapi.json", headers=ADMIN)).json()["paths"].keys() >= {
            "/tenants",
            "/keys/{key_id}/rotate",
            "/reports/cost",
        }


async def test_a_key_sees_and_spends_only_its_own(sqlite_url: str) -> None:
    """Tenant walls on the key holder's paths: usage shows own figures only; no parameter widens it."""
    async with serve(config(sqlite_url)) as s:
        a, b = await s.new_tenant(name="a"), await s.new_tenant(name="b", allowed_models=["teacher"])
        key_a, key_b = await s.new_key(a["id"]), await s.new_key(b["id"])
        for _ in range(2):
            assert (await s.chat(key_b["key"], model="teacher")).status_code == 200
        assert (await s.chat(key_a["key"])).status_code == 200
        await s.flushed()
        auth_a = {"authorization": f"Bearer {key_a['key']}"}
        own = (await s.client.get("/v1/usage", headers=auth_a)).json()
        assert own["key_id"] == key_a["id"] and own["total"]["requests"] == 1
        for query in (f"tenant_id={b['id']}", f"key_id={key_b['id']}", "group_by=key", "group_by=tenant"):
            r = await s.client.get(f"/v1/usage?{query}", headers=auth_a)
            assert r.status_code == 400, query
        by_model = (await s.client.get("/v1/usage?group_by=model", headers=auth_a)).json()
        assert [row["model"] for row in by_model["rows"]] == ["small"]
        # Admin paths are closed to tenant keys (test_admin_needs_the_master_key); spending B's budget
        # with A's key is impossible because limits come from the key's own row, never from the request.
        b_report = (await s.client.get(f"/admin/reports/cost?tenant_id={b['id']}", headers=ADMIN)).json()
        assert b_report["total"]["requests"] == 2


async def test_report_totals_are_the_ledger_and_teacher_cost_uses_real_tokens(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with serve(config(sqlite_url)) as s:
        t1, t2 = await s.new_tenant(name="one"), await s.new_tenant(name="two")
        k1, k2 = await s.new_key(t1["id"]), await s.new_key(t2["id"])
        for key, model in ((k1, "student"), (k1, "teacher"), (k2, "student"), (k2, "student")):
            assert (await s.chat(key["key"], model=model)).status_code == 200
        r = await s.client.post(
            "/v1/embeddings",
            json={"model": "embedder", "input": "hi"},
            headers={"authorization": f"Bearer {k2['key']}"},
        )
        assert r.status_code == 200
        await s.flushed()
        rows = _rows(tmp_path / "tiergate.db", "ledger")
        with sqlite3.connect(tmp_path / "tiergate.db") as conn:
            ledger = conn.execute(
                "SELECT tenant_id, prompt_tokens, completion_tokens, cost_nano FROM ledger"
            ).fetchall()
        assert len(rows) == 5
        for group_by in ("key", "tenant", "model", "tier", "day"):
            report = (await s.client.get(f"/admin/reports/cost?group_by={group_by}", headers=ADMIN)).json()
            assert sum(r["requests"] for r in report["rows"]) == report["total"]["requests"] == 5
            assert report["total"]["cost_usd"] == pytest.approx(sum(c for *_, c in ledger) / 1e9, abs=1e-12)
            assert report["total"]["prompt_tokens"] == sum(p for _, p, _, _ in ledger)
        # Teacher prices are $10/$40 per Mtok: what every request's real tokens would have cost there.
        teacher = sum(p * 10 * 1000 + c * 40 * 1000 for _, p, c, _ in ledger) / 1e9
        tenants = (await s.client.get("/admin/reports/cost?group_by=tenant", headers=ADMIN)).json()
        assert tenants["total"]["cost_if_teacher_usd"] == pytest.approx(teacher)
        one = next(r for r in tenants["rows"] if r["tenant"] == t1["id"])
        assert one["cost_if_teacher_usd"] == pytest.approx(2 * (10 * 10 + 5 * 40) * 1000 / 1e9)
        assert one["cost_usd"] == pytest.approx(((10 * 1 + 5 * 2) + (10 * 10 + 5 * 40)) * 1000 / 1e9)
        csv = (await s.client.get("/admin/reports/cost?group_by=tier&format=csv", headers=ADMIN)).text
        lines = csv.lstrip("\ufeff").strip().splitlines()
        assert lines[0].startswith("tier,requests,") and lines[-1].startswith("TOTAL,5,")
        window = (
            await s.client.get("/admin/reports/cost?start=2000-01-01&end=2000-01-02", headers=ADMIN)
        ).json()
        assert window["total"]["requests"] == 0 and window["rows"] == []


async def test_keys_never_appear_in_plaintext(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets: list[str] = []
    async with serve(config(sqlite_url, access_log=True)) as s:
        tenant = await s.new_tenant(budget_usd=0.0)
        key = await s.new_key(tenant["id"])
        secrets.append(key["key"])
        rotated = (await s.client.post(f"/admin/keys/{key['id']}/rotate", headers=ADMIN)).json()
        secrets.append(rotated["new_key"]["key"])
        bodies = []
        for secret in secrets:
            bodies.append((await s.chat(secret)).text)  # 429: the budget is zero
            bodies.append(
                (await s.client.get("/v1/models", headers={"authorization": f"Bearer {secret}x"})).text
            )
            bodies.append(
                (await s.client.get("/admin/tenants", headers={"authorization": f"Bearer {secret}"})).text
            )
        await s.client.delete(f"/admin/keys/{key['id']}", headers=ADMIN)
        bodies.append((await s.chat(secrets[0])).text)
        await s.flushed()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())  # noqa: ASYNC240
    for secret in secrets:
        assert secret.encode() not in stored
        assert secret[len("sk-tg-") :].encode() not in stored
        assert all(secret not in b for b in bodies)
        assert secret not in caplog.text


async def test_what_the_body_alone_cannot_show_is_refused_by_name_and_writes_nothing(
    sqlite_url: str, tmp_path: Path
) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant()
        key = await s.new_key(tenant["id"], allowed_models=["student", "big", "auto"])
        before = _rows(tmp_path / "tiergate.db", "api_keys")
        for method, path, body, param in (
            (
                "POST",
                "/admin/keys",
                {"tenant_id": tenant["id"], "allowed_models": ["nosuchmodel"]},
                "allowed_models",
            ),
            ("PATCH", f"/admin/keys/{key['id']}", {"allowed_models": ["studnet"]}, "allowed_models"),
            (
                "POST",
                "/admin/keys",
                {"tenant_id": tenant["id"], "expires_at": "2001-01-01T00:00:00Z"},
                "expires_at",
            ),
            ("PATCH", f"/admin/keys/{key['id']}", {"expires_at": "2001-01-01"}, "expires_at"),
            (
                "PATCH",
                f"/admin/tenants/{tenant['id']}",
                {"allowed_models": ["nosuchmodel"]},
                "allowed_models",
            ),
        ):
            r = await s.client.request(method, path, json=body, headers=ADMIN)
            assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
        assert _rows(tmp_path / "tiergate.db", "api_keys") == before
        assert (await s.client.get(f"/admin/tenants/{tenant['id']}", headers=ADMIN)).json()[
            "allowed_models"
        ] is None


async def test_json_schema_integers_are_taken_and_a_body_that_is_not_text_is_a_400(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant()
        r = await s.client.patch(f"/admin/tenants/{tenant['id']}", json={"rpm": 2180.0}, headers=ADMIN)
        assert r.status_code == 200 and r.json()["rpm"] == 2180
        r = await s.client.patch(f"/admin/tenants/{tenant['id']}", json={"rpm": 2180.5}, headers=ADMIN)
        assert r.status_code == 400 and r.json()["error"]["param"] == "rpm"
        r = await s.client.post(
            "/admin/tenants", content=b"\xff\xfe\x10", headers={**ADMIN, "content-type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text


async def test_a_method_the_admin_api_does_not_take_is_a_405_naming_those_it_does(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant()
        for method, path, allow in (
            ("PUT", "/admin/tenants", "GET, HEAD, POST"),
            ("TRACE", f"/admin/tenants/{tenant['id']}", "DELETE, GET, HEAD, PATCH"),
            ("GET", f"/admin/tenants/{tenant['id']}/cache/purge", "POST"),
        ):
            r = await s.client.request(method, path, headers=ADMIN)
            assert r.status_code == 405 and r.headers["allow"] == allow, (method, path, r.headers)


async def test_a_deleted_tenants_keys_are_still_listed_as_revoked(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant()
        key = await s.new_key(tenant["id"])
        assert (await s.client.delete(f"/admin/tenants/{tenant['id']}", headers=ADMIN)).status_code == 200
        r = await s.client.get("/admin/keys", params={"tenant_id": tenant["id"]}, headers=ADMIN)
        assert r.status_code == 200 and [(k["id"], k["status"]) for k in r.json()["data"]] == [
            (key["id"], "revoked")
        ]
        r = await s.client.get("/admin/keys", params={"tenant_id": "ten_never"}, headers=ADMIN)
        assert r.status_code == 404
