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
    "ChatRequest",
    "EmbeddingsRequest",
    "parse_chat",
    "parse_embeddings",
    "parse_object",
    "with_fields",
]

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


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


def _positive_int(doc: Mapping[str, Any], name: str) -> int | None:
    value = _expect(doc, name, (int,), "a positive integer")
    if value is not None and value < 1:
        raise BadRequest(f"'{name}' must be a positive integer", param=name)
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
    max_tokens = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    n = _positive_int(body, "n") or 1
    return ChatRequest(raw, body, model, messages, stream, include_usage, max_tokens, n)


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
    value = body.get("input")
    if not isinstance(value, str | list) or (isinstance(value, list) and not value):
        raise BadRequest(
            "'input' is required: a string, an array of strings or of token arrays", param="input"
        )
    return EmbeddingsRequest(raw, body, model)


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
