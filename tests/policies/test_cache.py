"""Response-cache decisions: keys and semantic scopes, what is cacheable, and the request's cache options."""

from __future__ import annotations

from typing import Any

import pytest

from tiergate.policies.cache import (
    CacheControlError,
    CachePolicy,
    CacheRequest,
    cacheable,
    exact_key,
    fresh,
    parse_cache_request,
    partition,
    semantic_scope,
    storable,
)
from tiergate.policies.semantic import SemanticPolicy

BODY: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


@pytest.mark.parametrize(
    "change",
    [
        {"messages": [{"role": "user", "content": "hi!"}]},
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
        {"temperature": 0.0001},
        {"top_p": 0.5},
        {"seed": 1},
        {"n": 2},
        {"max_tokens": 5},
        {"max_completion_tokens": 5},
        {"stop": ["\n"]},
        {"logprobs": True},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"tool_choice": "none"},
        {"response_format": {"type": "json_object"}},
        {"some_vendor_field": 1},  # unknown fields count: they may change the answer
    ],
)
def test_every_answer_changing_field_changes_the_key(change: dict[str, Any]) -> None:
    assert exact_key("t:a", "r", BODY) != exact_key("t:a", "r", {**BODY, **change})


@pytest.mark.parametrize(
    "change",
    [{"model": "student"}, {"stream": True, "stream_options": {"include_usage": True}}, {"user": "u2"},
     {"cache": {"ttl_s": 5}}, {"metadata": {"x": "y"}}],
)  # fmt: skip
def test_delivery_and_bookkeeping_fields_do_not_change_the_key(change: dict[str, Any]) -> None:
    assert exact_key("t:a", "r", BODY) == exact_key("t:a", "r", {**BODY, **change})


def test_partition_and_route_are_part_of_the_key_and_key_order_is_not() -> None:
    assert exact_key("t:a", "r", BODY) != exact_key("t:b", "r", BODY)
    assert exact_key("t:a", "r", BODY) != exact_key("t:a", "r2", BODY)
    assert exact_key("t:a", "r", BODY) == exact_key("t:a", "r", dict(reversed(BODY.items())))


def test_partitions() -> None:
    assert partition("key", "acme", "k1") == partition("key", "acme", "k2") == "t:acme"
    assert partition("master", None, None) == "master:"
    assert partition("master", None, None) != partition("key", None, "k1")


@pytest.mark.parametrize(
    ("body", "policy", "expected"),
    [
        ({"temperature": 0}, CachePolicy(), True),
        ({"temperature": 0.0}, CachePolicy(), True),
        ({"seed": 3, "temperature": 1}, CachePolicy(), True),
        ({}, CachePolicy(), False),  # OpenAI's default temperature is 1
        ({"temperature": 0.7}, CachePolicy(), False),
        ({"temperature": 0.7}, CachePolicy(nondeterministic=True), True),
    ],
)
def test_cacheable(body: dict[str, Any], policy: CachePolicy, expected: bool) -> None:
    assert cacheable(body, policy) is expected


@pytest.mark.parametrize(
    ("header", "option", "expected"),
    [
        (None, None, CacheRequest()),
        ("no-cache", None, CacheRequest(lookup=False)),
        ("No-Store", None, CacheRequest(store=False)),
        ("no-cache, no-store", None, CacheRequest(lookup=False, store=False)),
        ("max-age=60", None, CacheRequest(max_age_s=60)),
        ("max-age=0", None, CacheRequest(lookup=False, max_age_s=0)),
        (None, {"no_cache": True}, CacheRequest(lookup=False)),
        (None, {"no_store": True, "ttl_s": 60}, CacheRequest(store=False, ttl_s=60)),
        (None, {"no_cache": False, "max_age_s": 30}, CacheRequest(max_age_s=30)),
        ("no-store", {"no_cache": True}, CacheRequest(lookup=False, store=False)),
    ],
)
def test_cache_request(header: str | None, option: Any, expected: CacheRequest) -> None:
    assert parse_cache_request(header, option) == expected


@pytest.mark.parametrize(
    ("header", "option", "param"),
    [
        ("no-cahce", None, "cache-control"),
        ("max-age=soon", None, "cache-control"),
        ("max-age", None, "cache-control"),
        ("no-cache=1", None, "cache-control"),
        ("private", None, "cache-control"),
        (None, "off", "cache"),
        (None, {"nocache": True}, "cache.nocache"),
        (None, {"no_cache": "yes"}, "cache.no_cache"),
        (None, {"ttl_s": 0}, "cache.ttl_s"),
        (None, {"ttl_s": True}, "cache.ttl_s"),
        (None, {"ttl_s": 10**9}, "cache.ttl_s"),
        (None, {"max_age_s": -1}, "cache.max_age_s"),
    ],
)
def test_bad_cache_options_are_rejected(header: str | None, option: Any, param: str) -> None:
    with pytest.raises(CacheControlError) as info:
        parse_cache_request(header, option)
    assert info.value.param == param and str(info.value)


@pytest.mark.parametrize(
    ("finishes", "expected"),
    [(["stop"], True), (["tool_calls"], True), (["length"], True), (["stop", None], False),
     (["content_filter"], False), ([], False)],
)  # fmt: skip
def test_storable(finishes: list[str | None], expected: bool) -> None:
    doc = {"choices": [{"index": i, "message": {}, "finish_reason": f} for i, f in enumerate(finishes)]}
    assert storable(doc) is expected


def test_fresh() -> None:
    assert fresh(100.0, 150.0, 60.0, None) and not fresh(100.0, 160.0, 60.0, None)
    assert not fresh(100.0, 150.0, 60.0, 10.0) and fresh(100.0, 105.0, 60.0, 10.0)


def test_the_semantic_scope_is_everything_but_the_compared_message() -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "a"}], "temperature": 0}
    scope = semantic_scope("student=a", "ctx", body)
    same = [
        semantic_scope("student=a", "ctx", {**body, "messages": [{"role": "user", "content": "b"}]}),
        semantic_scope("student=a", "ctx", {**body, "model": "student", "user": "u", "stream": True}),
    ]
    different = [
        semantic_scope("teacher=t", "ctx", body),
        semantic_scope("student=a", "other", body),
        semantic_scope("student=a", "ctx", {**body, "max_tokens": 5}),
        semantic_scope("student=a", "ctx", {**body, "tools": []}),
    ]
    assert all(s == scope for s in same) and all(s != scope for s in different)


def test_semantic_thresholds_per_domain_fall_back_to_the_tenants() -> None:
    policy = CachePolicy(semantic_threshold=0.93, semantic_domains={"legal": 0.97})
    assert policy.semantic_policy(None).threshold == 0.93 and policy.semantic_policy("code").threshold == 0.93
    assert policy.semantic_policy("legal").threshold == 0.97
    assert CachePolicy().semantic_policy(None) == SemanticPolicy()  # the tuned defaults
