"""Routing strategies in the gateway: rules on request features, promotion by inferred domain, and
embeddings computed only when a feature needs them."""

from __future__ import annotations

from typing import Any

import numpy as np
import respx
from httpx import Response

from tests.gateway.conftest import AUTH, chat, completion, gateway, settings
from tests.support import authenticate_with, gateway_of
from tiergate.gateway.routing.local_embeddings import Encoded

SEEDS = {
    "billing": [
        "How do I update my credit card?",
        "Why was I charged twice on my invoice?",
        "Can I get a refund for my subscription?",
    ],
    "cooking": [
        "How long should I boil an egg?",
        "What temperature should I roast a chicken at?",
        "How do I bake sourdough bread?",
    ],
}


def both_tiers(router: respx.Router) -> tuple[respx.Route, respx.Route]:
    student = router.post("http://up-a/v1/chat/completions").mock(
        return_value=Response(200, json=completion("small-a"))
    )
    teacher = router.post("http://up-t/v1/chat/completions").mock(
        return_value=Response(200, json=completion("big"))
    )
    return student, teacher


def ask(text: str, **fields: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **fields}


async def test_promotion_routes_by_the_inferred_domain() -> None:
    router = respx.Router(assert_all_called=False)
    both_tiers(router)
    config = settings(
        routing={
            "strategy": "promotion",
            "route_table": {"billing": "student"},
            "domains": {"floor": 0.4, "seed": SEEDS},
        },
        cache={"exact": {"enabled": False}},
    )
    async with gateway(router, config) as (client, records):
        billing = await client.post(
            "/v1/chat/completions",
            json=ask("I was billed twice this month, can you refund me?"),
            headers=AUTH,
        )
        cooking = await client.post(
            "/v1/chat/completions", json=ask("What is the best way to bake a cake?"), headers=AUTH
        )
        general = await client.post(
            "/v1/chat/completions", json=ask("Explain quantum entanglement to a child"), headers=AUTH
        )
    assert billing.headers["x-tiergate-tier"] == "student"
    assert cooking.headers["x-tiergate-tier"] == general.headers["x-tiergate-tier"] == "teacher"
    assert records[0].route_reason.startswith("promotion: domain billing -> student (route table v0)")
    assert "domain cooking not in route table" in records[1].route_reason
    assert "domain general not in route table" in records[2].route_reason


async def test_rules_from_the_config_see_headers_tools_and_keywords() -> None:
    router = respx.Router(assert_all_called=False)
    both_tiers(router)
    rules = [
        {"name": "vip", "tier": "teacher", "when": {"header": {"name": "X-Priority", "value": "high"}}},
        {"name": "tools", "tier": "teacher", "when": {"tools": True}},
        {"name": "legal", "tier": "teacher", "when": {"keywords": ["contract"]}},
        {"name": "long", "tier": "teacher", "when": {"min_prompt_tokens": 200}},
    ]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    async with gateway(router, settings(routing={"strategy": "rules", "rules": rules})) as (client, records):
        cases = [
            (ask("hello"), {}),
            (ask("hello"), {"x-priority": "high"}),
            (ask("hello", tools=tools), {}),
            (ask("Review this contract please"), {}),
            (ask("word " * 300), {}),
        ]
        tiers = []
        for body, headers in cases:
            r = await client.post("/v1/chat/completions", json=body, headers={**AUTH, **headers})
            tiers.append(r.headers["x-tiergate-tier"])
    assert tiers == ["student", "teacher", "teacher", "teacher", "teacher"]
    assert [r.route_reason for r in records][:2] == [
        "rules: no rule matched -> student",
        "rules: vip -> teacher",
    ]


async def test_a_tenant_policy_overrides_the_global_one() -> None:
    from tests.gateway.cache.test_response_cache import TenantKeys

    router = respx.Router(assert_all_called=False)
    both_tiers(router)
    config = settings(routing={"strategy": "fixed", "tenants": {"acme": {"tier": "teacher"}}})
    async with gateway(router, config) as (client, _):
        authenticate_with(gateway_of(client), TenantKeys())
        acme = await client.post(
            "/v1/chat/completions", json=chat(), headers={"authorization": "Bearer k-acme-1"}
        )
        other = await client.post(
            "/v1/chat/completions", json=chat(), headers={"authorization": "Bearer k-globex-1"}
        )
    assert acme.headers["x-tiergate-tier"] == "teacher" and other.headers["x-tiergate-tier"] == "student"


class CountingEncoder:
    def __init__(self) -> None:
        self.texts: list[str] = []

    async def aencode(self, text: str) -> Encoded:
        self.texts.append(text)
        vector = np.zeros(384, dtype=np.float32)
        vector[0] = 1.0
        return Encoded(vector, (), (), np.zeros((0, 384), dtype=np.float32))

    def close(self) -> None:
        pass


async def test_embeddings_only_when_a_feature_needs_them_and_once_per_request() -> None:
    router = respx.Router(assert_all_called=False)
    both_tiers(router)
    config = settings(routing={"strategy": "promotion", "tenants": {"acme": {"strategy": "fixed"}}})
    async with gateway(router, config) as (client, _):
        gw = gateway_of(client)
        from tests.gateway.cache.test_response_cache import TenantKeys

        authenticate_with(gw, TenantKeys())
        encoder = CountingEncoder()
        gw.chat.embedder = encoder  # type: ignore[assignment]
        await client.post(
            "/v1/chat/completions", json=ask("Where is my invoice?", temperature=0), headers=AUTH
        )
        assert encoder.texts == ["Where is my invoice?"]
        await client.post("/v1/chat/completions", json=ask("explicit"), headers=AUTH)
        await client.post("/v1/chat/completions", json={**ask("explicit"), "model": "student"}, headers=AUTH)
        await client.post(
            "/v1/chat/completions", json={**ask("deployment"), "model": "small-a"}, headers=AUTH
        )
        await client.post(
            "/v1/chat/completions", json=ask("fixed tenant"), headers={"authorization": "Bearer k-acme-1"}
        )
    # "explicit" under `auto` embeds (promotion); the tier alias, the deployment and the fixed tenant do not.
    assert encoder.texts == ["Where is my invoice?", "explicit"]


async def test_no_embedding_model_is_loaded_when_nothing_needs_one() -> None:
    async with gateway(respx.Router(), settings(routing={"strategy": "cascade"})) as (client, _):
        assert gateway_of(client).embedder is None


def test_the_query_is_the_last_user_message_and_its_context_is_hashed_apart() -> None:
    from tiergate.gateway.routing.query import ChatQuery

    system = {"role": "system", "content": "Be brief."}
    question = {"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}
    a = ChatQuery([system, question], None)
    b = ChatQuery([{"role": "system", "content": "Be verbose."}, question], None)
    assert a.text == b.text == "Capital of France?" and a.turns == 1
    assert (
        a.context_hash != b.context_hash
        and a.context_hash == ChatQuery([system, question], None).context_hash
    )
    assert not a.embedded
