"""The Anthropic Messages door (`POST /v1/messages`): Anthropic's request and answer shapes over the chat pipeline.

Translated: `system` (a string or text blocks), text, image, `tool_use` and `tool_result` blocks, `tools`,
`tool_choice` (with `disable_parallel_tool_use`), `stop_sequences`, `max_tokens` (required, as Anthropic
requires it), `temperature`, `top_p`, `metadata.user_id` and `stream`. Blocks' `cache_control` is dropped (a
chat request has nowhere to put it) and earlier `thinking` blocks of the conversation too (a chat history
has no place for the model's reasoning). Fields this door does not know (`top_k`, `thinking`, ...) pass
through to the upstream unchanged: Anthropic deployments (through litellm) and OpenAI-compatible servers that
have them honour them, others answer with their own 400. Refused with a 400 naming the field: server tools
and MCP servers (the gateway cannot run them), `document` and other blocks chat has no part for, a `system`
role inside `messages`, and a missing `max_tokens`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from tiergate.gateway.accounting.auth import Principal
from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.doors.messages_stream import (
    MessagesStream,
    anthropic_error,
    anthropic_usage,
    message_id,
    stop_reason,
)
from tiergate.gateway.errors import BadRequest, GatewayError, InsufficientQuota
from tiergate.gateway.http.bodies import parse_object

# Translated into their chat equivalents (or, for `messages`/`system`, into the chat messages).
_TRANSLATED = frozenset(
    {"messages", "system", "max_tokens", "stop_sequences", "metadata", "tools", "tool_choice", "stream"}
)
# Features run by Anthropic's servers, which a chat upstream behind this gateway cannot provide.
_REFUSED = {
    "mcp_servers": "MCP servers run on Anthropic's side; this gateway cannot connect them",
    "container": "code-execution containers run on Anthropic's side; this gateway has none",
}


def _field(path: str, message: str) -> BadRequest:
    return BadRequest(f"{path}: {message}", param=path)


def _text_of(blocks: Any, path: str) -> str:
    """The text of a `tool_result`'s content: a string, or text blocks joined."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise _field(path, "must be a string or an array of content blocks")
    texts = []
    for i, block in enumerate(blocks):
        if (
            not isinstance(block, dict)
            or block.get("type") != "text"
            or not isinstance(block.get("text"), str)
        ):
            raise _field(f"{path}[{i}]", "only text blocks can be translated inside a tool_result")
        texts.append(block["text"])
    return "\n".join(texts)


def _image_part(block: dict[str, Any], path: str) -> dict[str, Any]:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        data, media = source.get("data"), source.get("media_type")
        if isinstance(data, str) and isinstance(media, str):
            return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise _field(f"{path}.source", "must be a base64 source (media_type, data) or a url source")


def _tool_call(block: dict[str, Any], path: str) -> dict[str, Any]:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(arguments, dict):
        raise _field(path, "a tool_use block needs a string id, a string name and an object input")
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
    }


def _user_messages(blocks: list[Any], path: str) -> list[dict[str, Any]]:
    """A user turn's blocks as chat messages: its tool results first (as Anthropic requires them), then
    the rest as one user message."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        where = f"{path}[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_part(block, where))
        elif kind == "tool_result" and isinstance(block.get("tool_use_id"), str):
            text = _text_of(block.get("content", ""), f"{where}.content")
            if block.get("is_error"):
                text = f"Error: {text}"  # a chat tool message has no error flag; the model still must know
            results.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text})
        else:
            raise _field(where, f"a {kind or 'malformed'} block cannot be translated in a user turn")
    return results + ([{"role": "user", "content": parts}] if parts else [])


def _assistant_message(blocks: list[Any], path: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        where = f"{path}[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append(_tool_call(block, where))
        elif kind not in ("thinking", "redacted_thinking"):
            raise _field(where, f"a {kind or 'malformed'} block cannot be translated in an assistant turn")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str) and system:
        out.append({"role": "system", "content": system})
    elif isinstance(system, list) and system:
        out.append({"role": "system", "content": _text_of(system, "system")})
    elif system not in (None, "", []):
        raise _field("system", "must be a string or an array of text blocks")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _field("messages", "is required and must be a non-empty array")
    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise _field(f"{path}.role", 'must be "user" or "assistant" (the system prompt goes in "system")')
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
        elif isinstance(content, list):
            where = f"{path}.content"
            out += _user_messages(content, where) if role == "user" else [_assistant_message(content, where)]
        else:
            raise _field(f"{path}.content", "must be a string or an array of content blocks")
    return out


def _chat_tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _field("tools", "must be an array")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _field(
                f"tools[{i}].type",
                f"{kind!r} is a server tool run by Anthropic; this gateway forwards only client tools "
                "(name, description, input_schema)",
            )
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not isinstance(schema, dict):
            raise _field(f"tools[{i}]", "a tool needs a string name and an object input_schema")
        function: dict[str, Any] = {"name": name, "parameters": schema}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _chat_tool_choice(choice: Any) -> tuple[Any, bool]:
    """The chat `tool_choice` and whether parallel tool calls stay allowed."""
    kind = choice.get("type") if isinstance(choice, dict) else None
    parallel = not (isinstance(choice, dict) and choice.get("disable_parallel_tool_use"))
    if kind in ("auto", "none"):
        return kind, parallel
    if kind == "any":
        return "required", parallel
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    raise _field("tool_choice", 'must be {"type": "auto" | "any" | "none"} or {"type": "tool", "name": ...}')


def chat_from_messages(body: dict[str, Any], *, counting: bool = False) -> dict[str, Any]:
    """The chat-completions body equivalent to the Messages body `body` (BadRequest if there is none);
    `counting`: a count_tokens body, which has no `max_tokens`."""
    for name, reason in _REFUSED.items():
        if name in body:
            raise _field(name, reason)
    chat = {k: v for k, v in body.items() if k not in _TRANSLATED}
    chat["messages"] = _chat_messages(body)
    if not counting:
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise _field("max_tokens", "is required and must be an integer >= 1")
        chat["max_tokens"] = max_tokens
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _field("stop_sequences", "must be an array of strings")
        chat["stop"] = stops
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _field("metadata", "must be an object")
    if metadata and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    if body.get("tools"):
        chat["tools"] = _chat_tools(body["tools"])
        if body.get("tool_choice") is not None:
            chat["tool_choice"], parallel = _chat_tool_choice(body["tool_choice"])
            if not parallel:
                chat["parallel_tool_calls"] = False
    if body.get("stream") is not None:
        chat["stream"] = body["stream"]
        if body["stream"] is True:
            chat["stream_options"] = {"include_usage": True}  # usage belongs in message_delta
    return chat


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    try:
        arguments = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        arguments = None
    return {
        "type": "tool_use",
        "id": call.get("id"),
        "name": function.get("name"),
        # The model wrote arguments that are not an object; the caller still sees what it wrote.
        "input": arguments if isinstance(arguments, dict) else {"arguments": function.get("arguments")},
    }


def anthropic_message(completion: dict[str, Any]) -> dict[str, Any]:
    """The Messages answer for a chat completion (its first choice: Messages has no `n`)."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    content += [_tool_use(call) for call in message.get("tool_calls") or ()]
    return {
        "id": message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model"),
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": anthropic_usage(completion.get("usage")),
    }


class MessagesDoor:
    """`/v1/messages` over the chat pipeline, with Anthropic's errors and statuses."""

    endpoint = "messages"

    async def chat_body(self, principal: Principal, headers: Mapping[str, str], raw: bytes) -> bytes:
        return orjson.dumps(chat_from_messages(parse_object(raw)))

    def count_body(self, raw: bytes) -> bytes:
        """The chat body whose prompt tokens answer the count_tokens request `raw`."""
        return orjson.dumps(chat_from_messages(parse_object(raw), counting=True))

    async def answer(self, completion: dict[str, Any], record: CallRecord) -> bytes:
        return orjson.dumps(anthropic_message(completion))

    def stream(self, record: CallRecord) -> MessagesStream:
        return MessagesStream()

    def error(self, error: GatewayError) -> tuple[int, bytes]:
        status = error.status
        if isinstance(error, InsufficientQuota):
            status = 402  # Anthropic's billing_error: not a rate limit, so not worth retrying
        elif status in (502, 503):
            # No upstream could answer, or the gateway cannot serve now: Anthropic's "overloaded", which its
            # SDKs and Claude Code retry with backoff.
            status = 529
        return status, orjson.dumps(anthropic_error(status, error.message))
