"""`POST /v1/embeddings` names a deployment; an upstream's 404 there never cools a chat deployment down."""

from __future__ import annotations

from typing import Any

import pytest
import respx
from httpx import Response

from tests.gateway.conftest import AUTH, chat, completion, gateway, settings

EMB = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}],
    "usage": {"prompt_tokens": 4, "total_tokens": 4},
}
NOT_FOUND = {
    "error": {"message": "This is a chat model", "type": "invalid_request_error", "code": "model_not_found"}
}


def embedder(api_base: str, **extra: Any) -> dict[str, Any]:
    return {"model": "embedder", "api_base": api_base, "input_cost_per_mtok": 0.1, **extra}


@pytest.mark.parametrize("model", ["auto", "student", "teacher", "ta"])
async def test_auto_and_tier_aliases_are_refused_with_the_embeddings_deployments(model: str) -> None:
    router = respx.Router()  # no route: any upstream call fails the test
    config = settings(models=[embedder("http://up-e/v1"), embedder("http://up-f/v1", name="embedder-2")])
    async with gateway(router, config) as (client, _):
        r = await client.post("/v1/embeddings", json={"model": model, "input": "hello"}, headers=AUTH)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "model" and error["code"] == "model_not_supported"
    assert error["type"] == "invalid_request_error"
    assert f"'{model}' routes chat completions" in error["message"]
    assert "embeddings deployment named in 'model' (one of: embedder, embedder-2)" in error["message"]


async def test_without_an_embeddings_deployment_the_error_says_how_to_add_one() -> None:
    async with gateway(respx.Router(), settings(models=[])) as (client, _):
        r = await client.post("/v1/embeddings", json={"model": "auto", "input": "hello"}, headers=AUTH)
    assert r.status_code == 400 and "add one under `models:`" in r.json()["error"]["message"]


async def test_a_404_on_embeddings_is_relayed_and_leaves_the_chat_deployment_healthy() -> None:
    router = respx.Router(assert_all_called=False)
    asked_a = router.post("http://up-a/v1/embeddings").mock(return_value=Response(404, json=NOT_FOUND))
    asked_b = router.post("http://up-b/v1/embeddings").mock(return_value=Response(200, json=EMB))
    asked_t = router.post("http://up-t/v1/embeddings").mock(return_value=Response(200, json=EMB))
    router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a"))
    )
    router.post("http://up-b/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-b"))
    )
    # Even with escalation for named deployments, embeddings never move on to a chat tier.
    config = settings(escalation={"deployments": True})
    async with gateway(router, config) as (client, _):
        for _ in range(5):  # more than cooldown_failures (3)
            r = await client.post("/v1/embeddings", json={"model": "small-a", "input": "x"}, headers=AUTH)
            assert r.status_code == 404 and r.json() == NOT_FOUND
        served = await client.post("/v1/chat/completions", json=chat("student"), headers=AUTH)
    assert asked_a.call_count == 5 and not asked_b.called and not asked_t.called
    # load_balance "ordered": small-a answers first unless it is resting.
    assert served.status_code == 200 and served.headers["x-tiergate-model"] == "small-a"


async def test_a_misconfigured_embeddings_deployment_still_falls_back_to_the_next() -> None:
    router = respx.Router()
    broken = router.post("http://up-e/v1/embeddings").mock(return_value=Response(401, json=NOT_FOUND))
    router.post("http://up-f/v1/embeddings").mock(return_value=Response(200, json=EMB))
    config = settings(models=[embedder("http://up-e/v1"), embedder("http://up-f/v1")])
    async with gateway(router, config) as (client, _):
        r = await client.post("/v1/embeddings", json={"model": "embedder", "input": "x"}, headers=AUTH)
    assert r.status_code == 200 and r.json() == EMB and broken.call_count == 1
