"""Response-cache decisions: what may be cached, under which key, and what a request asks of the cache.

The exact key is a hash of the tenant's partition, the resolved route and every request field that can
change the answer. Rather than listing the fields that matter (and silently missing a vendor's new one),
it lists the few that cannot change the answer and hashes all others, canonically (sorted keys).

The semantic cache compares the last user message by meaning; everything else must match exactly. That
"everything else" is its scope: the route, the conversation around the query (`context_hash`) and the same
answer-changing fields, so a paraphrase is served only under the same system prompt, turns and parameters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from tiergate.policies.semantic import SemanticPolicy

# Fields that do not change the answer's content: how it is delivered, who asks, bookkeeping.
NOT_ANSWER_CHANGING = frozenset(
    {"model", "stream", "stream_options", "user", "cache", "metadata", "store", "service_tier",
     "prompt_cache_key", "safety_identifier"}
)  # fmt: skip
MAX_TTL_S = 30 * 86_400
_SEMANTIC_DEFAULTS = SemanticPolicy()  # the tuned thresholds (docs/semantic-cache.md)
CACHE_FIELD = "cache"  # the request-body field (`extra_body={"cache": {...}}`) with per-request options
_BODY_OPTIONS = {"no_cache": bool, "no_store": bool, "ttl_s": int, "max_age_s": int}


class CacheControlError(ValueError):
    """A cache option of the request is malformed; `param` names it for the 400 answer."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """The cache settings in force for one tenant."""

    exact: bool = True
    exact_ttl_s: float = 3600.0
    semantic: bool = False
    semantic_threshold: float = _SEMANTIC_DEFAULTS.threshold
    semantic_ttl_s: float = 3600.0
    # Also cache requests that sample (temperature > 0 and no seed): the tenant accepts repeated answers.
    nondeterministic: bool = False
    semantic_align_threshold: float = _SEMANTIC_DEFAULTS.align_threshold
    # Thresholds of the domains that need a different one (the domain routing inferred for the query).
    semantic_domains: Mapping[str, float] = field(default_factory=dict)

    def semantic_policy(self, domain: str | None) -> SemanticPolicy:
        """The decision's knobs for a query of `domain` (None: routing inferred none)."""
        threshold = (
            self.semantic_domains.get(domain, self.semantic_threshold) if domain else self.semantic_threshold
        )
        return SemanticPolicy(threshold=threshold, align_threshold=self.semantic_align_threshold)


@dataclass(frozen=True, slots=True)
class CacheRequest:
    """What one request asks of the cache."""

    lookup: bool = True  # False: `no-cache` - do not answer from the cache
    store: bool = True  # False: `no-store` - do not keep this answer
    ttl_s: float | None = None  # keep the answer this long instead of the configured TTL
    max_age_s: float | None = None  # only serve entries at most this old


def parse_cache_request(header: str | None, option: Any) -> CacheRequest:
    """The request's `Cache-Control` header and body `cache` object combined; raises CacheControlError.

    Accepted directives: `no-cache`, `no-store`, `max-age=N`; accepted body keys: no_cache, no_store,
    ttl_s, max_age_s. Anything else is rejected rather than ignored, so a typo cannot silently cache.
    """
    lookup = store = True
    ttl_s: float | None = None
    max_age_s: float | None = None
    if header is not None:
        for part in header.split(","):
            directive = part.strip().lower()
            name, eq, value = directive.partition("=")
            if name == "no-cache" and not eq:
                lookup = False
            elif name == "no-store" and not eq:
                store = False
            elif name == "max-age" and eq and value.isdigit():
                max_age_s = float(value)
            else:
                raise CacheControlError(
                    f"unsupported Cache-Control directive {part.strip()!r}: use no-cache, no-store or max-age=N",
                    "cache-control",
                )
    if option is not None:
        if not isinstance(option, dict):
            raise CacheControlError("'cache' must be an object", CACHE_FIELD)
        for key, value in option.items():
            kind = _BODY_OPTIONS.get(key)
            if kind is None:
                raise CacheControlError(
                    f"unknown cache option '{key}': use {', '.join(_BODY_OPTIONS)}", f"{CACHE_FIELD}.{key}"
                )
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                what = "a boolean" if kind is bool else "an integer"
                raise CacheControlError(f"'cache.{key}' must be {what}", f"{CACHE_FIELD}.{key}")
        if option.get("no_cache"):
            lookup = False
        if option.get("no_store"):
            store = False
        if "ttl_s" in option:
            if not 0 < option["ttl_s"] <= MAX_TTL_S:
                raise CacheControlError(f"'cache.ttl_s' must be between 1 and {MAX_TTL_S}", "cache.ttl_s")
            ttl_s = float(option["ttl_s"])
        if "max_age_s" in option:
            if option["max_age_s"] < 0:
                raise CacheControlError("'cache.max_age_s' must be >= 0", "cache.max_age_s")
            max_age_s = float(option["max_age_s"])
    if max_age_s == 0:
        lookup = False
    return CacheRequest(lookup, store, ttl_s, max_age_s)


def deterministic(body: Mapping[str, Any]) -> bool:
    """Asks for a reproducible answer: temperature 0, or a seed."""
    temperature = body.get("temperature")
    return temperature == 0 or isinstance(body.get("seed"), int)


def cacheable(body: Mapping[str, Any], policy: CachePolicy) -> bool:
    return policy.nondeterministic or deterministic(body)


def partition(kind: str, tenant_id: str | None, key_id: str | None) -> str:
    """The wall between callers' entries: a tenant's keys share one; the master key has its own."""
    if tenant_id is not None:
        return "t:" + tenant_id
    return f"{kind}:{key_id or ''}"


def exact_key(partition_id: str, route: str, body: Mapping[str, Any]) -> str:
    """Hex digest naming the answer to `body` routed along `route` for `partition_id`."""
    fields = {k: v for k, v in body.items() if k not in NOT_ANSWER_CHANGING}
    canonical = orjson.dumps([partition_id, route, fields], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def semantic_scope(route: str, context_hash: str, body: Mapping[str, Any]) -> str:
    """Names what must match exactly for a semantic hit: route, conversation context, answer-changing fields."""
    fields = {k: v for k, v in body.items() if k not in NOT_ANSWER_CHANGING and k != "messages"}
    canonical = orjson.dumps([route, context_hash, fields], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:32]


def storable(answer: Mapping[str, Any]) -> bool:
    """A complete answer: every choice finished normally (not cut by an error or a content filter)."""
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    return all(
        isinstance(c, dict) and c.get("finish_reason") in ("stop", "tool_calls", "length") for c in choices
    )


def fresh(stored_at: float, now: float, ttl_s: float, max_age_s: float | None) -> bool:
    age = now - stored_at
    return age < ttl_s and (max_age_s is None or age <= max_age_s)
