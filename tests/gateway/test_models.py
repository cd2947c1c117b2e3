"""`GET /v1/models` and `GET /v1/models/{id}`: what a key may see, in OpenAI's shapes."""

from __future__ import annotations

import pytest

from tests.admin.conftest import ADMIN, config, serve

pytestmark = pytest.mark.asyncio


async def test_one_model_is_retrieved_under_the_same_visibility_as_the_list(sqlite_url: str) -> None:
    async with serve(config(sqlite_url)) as s:
        tenant = await s.new_tenant()
        key = await s.new_key(tenant["id"], allowed_models=["student", "small"])
        auth = {"authorization": f"Bearer {key['key']}"}
        listed = (await s.client.get("/v1/models", headers=auth)).json()["data"]
        assert {m["id"] for m in listed} == {"auto", "student", "small"}  # auto routes within what it may use
        for name in ("auto", "student", "small"):
            one = await s.client.get(f"/v1/models/{name}", headers=auth)
            assert one.status_code == 200 and one.headers["x-request-id"]
            assert one.json() == {"id": name, "object": "model", "created": 0, "owned_by": "tiergate"}
        for hidden in ("teacher", "big", "nosuchmodel", "a/b"):
            refused = await s.client.get(f"/v1/models/{hidden}", headers=auth)
            error = refused.json()["error"]
            assert refused.status_code == 404 and error["code"] == "model_not_found", hidden
            assert hidden in error["message"] and error["param"] == "model"
        # The master key sees every configured model; no key sees nothing but a 401.
        assert (await s.client.get("/v1/models/big", headers=ADMIN)).status_code == 200
        anonymous = await s.client.get("/v1/models/student")
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"
