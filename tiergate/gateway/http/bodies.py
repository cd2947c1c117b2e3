"""Reading, validating and minimally rewriting request bodies.

The gateway validates only the fields it reads and forwards the caller's original bytes; when it must change
a top-level field (the upstream model name, `stream_options`) it splices the new value into the original
bytes, so unknown fields, number formatting and key order reach the upstream exactly as the client wrote them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from tiergate.gateway.errors import BadRequest

__all__ = [
    "MAX_CHOICES",
    "MAX_EMBEDDING_INPUTS",
    "UNKNOWN_OUTPUT_LIMIT",
    "ChatRequest",
    "EmbeddingsRequest",
    "check_output_limit",
    "embedding_inputs",
    "parse_chat",
    "parse_embeddings",
    "parse_object",
    "with_fields",
]

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# OpenAI's own bounds: choices per chat completion, inputs per embeddings call.
MAX_CHOICES = 128
MAX_EMBEDDING_INPUTS = 2048
# The output limit assumed for a deployment whose limit neither the config nor litellm's price map gives:
# generous (no model produces more today), yet small enough that `n` times it stays far from 64 bits.
UNKNOWN_OUTPUT_LIMIT = 1_000_000
_MAX_TOKENS_FIELDS = ("max_completion_tokens", "max_tokens")


def parse_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson refuses integers beyond 64 bits, which are valid JSON; there is no field where we need them.
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("the request body must be a JSON object")
    return doc


def _expect(doc: Mapping[str, Any], name: str, kinds: tuple[type, ...], what: str) -> Any:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in kinds:
        raise BadRequest(f"'{name}' must be {what}", param=name)
    if not isinstance(value, kinds):
        raise BadRequest(f"'{name}' must be {what}", param=name)
    return value


def _int_in_range(doc: Mapping[str, Any], name: str, highest: int | str) -> int | None:
    """The integer field `name`, refused unless from 1 to `highest` (a number, or what bounds it in words)."""
    what = f"an integer from 1 to {highest}"
    value = _expect(doc, name, (int,), what)
    if value is not None and (value < 1 or (isinstance(highest, int) and value > highest)):
        raise BadRequest(f"'{name}' must be {what}, got {value}", param=name, code="invalid_value")
    return value  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    raw: bytes
    body: dict[str, Any]
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool  # the client asked for the usage chunk of a stream
    max_tokens: int | None
    n: int


def parse_chat(raw: bytes) -> ChatRequest:
    body = parse_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a non-empty string", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"'messages[{i}]' must be an object", param=f"messages[{i}]")
        role = message.get("role")
        if role not in _ROLES:
            raise BadRequest(
                f"'messages[{i}].role' must be one of {', '.join(sorted(_ROLES))}",
                param=f"messages[{i}].role",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise BadRequest(
                f"'messages[{i}].content' must be a string or an array of parts",
                param=f"messages[{i}].content",
            )
    stream = _expect(body, "stream", (bool,), "a boolean") or False
    options = _expect(body, "stream_options", (dict,), "an object") or {}
    if options and not stream:
        raise BadRequest("'stream_options' is only allowed when 'stream' is true", param="stream_options")
    include_usage = _expect(options, "include_usage", (bool,), "a boolean") or False
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        _expect(body, name, (int, float), "a number")
    _expect(body, "stop", (str, list), "a string or an array of strings")
    _expect(body, "tools", (list,), "an array")
    _expect(body, "response_format", (dict,), "an object")
    _expect(body, "user", (str,), "a string")
    _expect(body, "seed", (int,), "an integer")
    _expect(body, "logprobs", (bool,), "a boolean")
    # The upper bound of the two is the model's output limit, known once the request is routed (see
    # `check_output_limit`).
    limits = [_int_in_range(body, name, "the model's output limit") for name in _MAX_TOKENS_FIELDS]
    max_tokens = next((v for v in limits if v is not None), None)
    n = _int_in_range(body, "n", MAX_CHOICES) or 1
    return ChatRequest(raw, body, model, messages, stream, include_usage, max_tokens, n)


def check_output_limit(request: ChatRequest, limit: int, model: str) -> None:
    """Refuse a `max_tokens` / `max_completion_tokens` above `limit`: the most that `model` can produce."""
    for name in _MAX_TOKENS_FIELDS:
        value = request.body.get(name)
        if isinstance(value, int) and value > limit:
            raise BadRequest(
                f"'{name}' must be an integer from 1 to {limit} (the most '{model}' can produce), got {value}",
                param=name,
                code="invalid_value",
            )


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    raw: bytes
    body: dict[str, Any]
    model: str


def parse_embeddings(raw: bytes) -> EmbeddingsRequest:
    body = parse_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a non-empty string", param="model")
    _check_embedding_input(body.get("input"))
    return EmbeddingsRequest(raw, body, model)


def embedding_inputs(value: str | list[Any]) -> list[str | list[int]]:
    """The inputs of a valid embeddings `input`: one string, one token array, or a list of either."""
    return [value] if isinstance(value, str) or _is_tokens(value) else value


def _is_tokens(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(type(t) is int for t in value)


def _check_embedding_input(value: object) -> None:
    what = (
        f"'input' must be a non-empty string, a token array, or an array of 1 to {MAX_EMBEDDING_INPUTS} "
        "non-empty strings or token arrays"
    )
    if isinstance(value, str) and value:
        return
    if not isinstance(value, list) or not value:
        raise BadRequest(what, param="input")
    if _is_tokens(value):
        return
    if len(value) > MAX_EMBEDDING_INPUTS:
        raise BadRequest(f"{what}; got {len(value)} items", param="input", code="invalid_value")
    for i, item in enumerate(value):
        if not ((isinstance(item, str) and item) or _is_tokens(item)):
            raise BadRequest(f"{what}; 'input[{i}]' is not", param="input")


def _key_pattern(key: str) -> re.Pattern[bytes]:
    # A quote directly before the key and `:` after it only occur at a real key: quotes inside JSON strings
    # are escaped. Scalar values only; objects and arrays take the re-serialising path.
    return re.compile(
        rb'"' + re.escape(key.encode()) + rb'"\s*:\s*("(?:[^"\\]|\\.)*"|-?[0-9.eE+-]+|true|false|null)'
    )


_PATTERNS: dict[str, re.Pattern[bytes]] = {}


def with_fields(raw: bytes, body: Mapping[str, Any], updates: Mapping[str, Any]) -> bytes:
    """`raw` with top-level fields set to new values, touching nothing else.

    New keys are inserted after the opening brace; an existing scalar value is replaced in place when its key
    occurs exactly once. The result is checked by parsing it back; anything unusual (a key also used in a
    nested object, escaped key spellings) falls back to re-serialising the parsed body.
    """
    out = raw
    try:
        inserts = b""
        for key, value in updates.items():
            encoded = orjson.dumps(value)
            if key not in body:
                inserts += orjson.dumps(key) + b":" + encoded + b","
                continue
            pattern = _PATTERNS.get(key) or _PATTERNS.setdefault(key, _key_pattern(key))
            matches = list(pattern.finditer(out))
            if len(matches) != 1:
                raise ValueError(key)
            start, end = matches[0].span(1)
            out = out[:start] + encoded + out[end:]
        if inserts:
            brace = out.index(b"{")
            rest = out[brace + 1 :].lstrip()
            out = out[: brace + 1] + (inserts if rest[:1] != b"}" else inserts[:-1]) + out[brace + 1 :]
        if orjson.loads(out) != {**body, **updates}:
            raise ValueError("splice check")
        return out
    except (ValueError, orjson.JSONDecodeError):
        return orjson.dumps({**body, **updates})
