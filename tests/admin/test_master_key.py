"""One master-key check with one answer on every master-key surface: the admin API, the route-table
endpoints and `/metrics`. No key or a wrong one: 401; a tenant's valid key: 403 `master_key_required`."""

from __future__ import annotations

import pytest

from tests.admin.conftest import ADMIN, config, serve
from tiergate.gateway.accounting.auth import MASTER, Principal, require_master
from tiergate.gateway.errors import PermissionDenied

SURFACES = [
    ("GET", "/admin/tenants"),  # the admin API (FastAPI)
    ("GET", "/admin/route-table"),  # the route-table endpoints (Starlette routes before the mount)
    ("GET", "/admin/route-table/history"),
    ("GET", "/metrics"),
]
ANSWERS = [
    ("no key", 401, "invalid_api_key"),
    ("wrong key", 401, "invalid_api_key"),
    ("tenant key", 403, "master_key_required"),
    ("master key", 200, None),
]


@pytest.mark.parametrize(("method", "path"), SURFACES)
async def test_every_master_key_surface_gives_the_same_answers(
    sqlite_url: str, method: str, path: str
) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant_key = (await s.new_key((await s.new_tenant())["id"]))["key"]
        headers = {
            "no key": {},
            "wrong key": {"authorization": "Bearer sk-admin-mastex"},
            "tenant key": {"authorization": f"Bearer {tenant_key}"},
            "master key": ADMIN,
        }
        for who, status, code in ANSWERS:
            r = await s.client.request(method, path, headers=headers[who])
            assert r.status_code == status, (who, r.text)
            if code is not None:
                error = r.json()["error"]
                assert error["code"] == code and error["type"] == "invalid_request_error", who
                assert tenant_key not in r.text and "sk-admin-master" not in r.text


def test_require_master_refuses_every_principal_but_the_master() -> None:
    assert require_master(MASTER) is MASTER
    with pytest.raises(PermissionDenied) as refused:
        require_master(Principal("key", tenant_id="acme", key_id="key_1"))
    assert refused.value.status == 403 and refused.value.code == "master_key_required"
