"""Local stand-in models for `tiergate demo`: an OpenAI-compatible server that needs no account or network.

Every answer says it comes from a stand-in, so nobody mistakes the demo for a real model. It honours the
parts of the protocol the gateway relays (streaming with usage, tools, JSON mode, `n`, embeddings).

Where the label goes without breaking what the client asked for:
- plain text and JSON mode: in the content;
- tool calls: in the assistant message's `content`, which OpenAI allows beside `tool_calls`; the arguments
  stay valid for the function's schema, so they get no extra field (apps call `fn(**arguments)`) - only
  their unconstrained strings say "[stand-in ...]";
- `json_schema`: a `stand_in` field when the schema allows additional properties (JSON Schema's default;
  not with `additionalProperties: false` or `strict`), and the same labelled strings. A schema with neither is answered unlabelled
  inside; the `standin-*` model name still marks it.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tiergate.policies.messages import content_text

PREFIX = "standin-"


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def _example(schema: Any, label: str) -> Any:
    """A value that satisfies a (simple) JSON schema, for tool arguments and JSON-schema answers."""
    if not isinstance(schema, dict):
        return "example"
    kind = schema.get("type")
    if schema.get("enum"):
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {name: _example(sub, label) for name, sub in props.items()}
    if kind == "array":
        return [_example(schema.get("items"), label)]
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind in (None, "string") and not {"format", "pattern", "maxLength"} & schema.keys():
        return f"{label} example"
    return "example"


def _schema_answer(spec: dict[str, Any], label: str) -> Any:
    schema = spec.get("schema")
    value = _example(schema, label)
    # Strict mode forbids properties the schema does not name, whatever `additionalProperties` says.
    open_object = (
        isinstance(schema, dict)
        and schema.get("additionalProperties", True) is not False
        and not spec.get("strict")
    )
    if isinstance(value, dict) and open_object and "stand_in" not in value:
        value["stand_in"] = label
    return value


def _reply(body: dict[str, Any], model: str) -> tuple[str, list[dict[str, Any]] | None]:
    label = f"[stand-in {model.removeprefix(PREFIX)} model, not a real LLM]"
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if tools and choice != "none":
        function = tools[0].get("function", {})
        if isinstance(choice, dict):
            wanted = choice.get("function", {}).get("name")
            function = next(
                (t["function"] for t in tools if t.get("function", {}).get("name") == wanted), function
            )
        arguments = orjson.dumps(_example(function.get("parameters"), label)).decode()
        call_id = "call_" + hashlib.sha1(arguments.encode()).hexdigest()[:12]
        return label, [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": function.get("name", ""), "arguments": arguments},
            }
        ]
    question = _last_user_text(body.get("messages") or [])
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        value = _schema_answer(fmt.get("json_schema") or {}, label)
        return orjson.dumps(value).decode(), None
    if fmt.get("type") == "json_object":
        return orjson.dumps({"stand_in": label, "you_asked": question}).decode(), None
    return f"{label} You asked: {question}", None


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


async def chat(request: Request) -> Response:
    body = orjson.loads(await request.body())
    model = body.get("model", PREFIX + "model")
    content, tool_calls = _reply(body, model)
    n = int(body.get("n") or 1)
    prompt_tokens = _tokens(orjson.dumps(body.get("messages")).decode())
    completion_tokens = _tokens(content + (orjson.dumps(tool_calls).decode() if tool_calls else "")) * n
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    finish = "tool_calls" if tool_calls else "stop"
    created = int(time.time())
    completion_id = "chatcmpl-standin-" + hashlib.sha1(orjson.dumps(body)).hexdigest()[:16]
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if tool_calls:
            message["tool_calls"] = tool_calls
        choices = [
            {"index": i, "message": message, "finish_reason": finish, "logprobs": None} for i in range(n)
        ]
        doc = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": usage,
        }
        return Response(orjson.dumps(doc), media_type="application/json")

    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def frame(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        doc = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        return b"data: " + orjson.dumps(doc) + b"\n\n"

    async def events() -> AsyncIterator[bytes]:
        for i in range(n):
            yield frame([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            for word in content.split(" "):
                yield frame([{"index": i, "delta": {"content": word + " "}, "finish_reason": None}])
            if tool_calls:
                yield frame(
                    [
                        {
                            "index": i,
                            "delta": {"tool_calls": [{"index": 0, **tool_calls[0]}]},
                            "finish_reason": None,
                        }
                    ]
                )
            yield frame([{"index": i, "delta": {}, "finish_reason": finish}])
        if include_usage:
            yield frame([], usage=usage)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def standin_embeddings(request: Request) -> Response:
    body = orjson.loads(await request.body())
    inputs = body.get("input")
    texts = [inputs] if isinstance(inputs, str) else [str(x) for x in inputs or []]
    data = []
    for i, text in enumerate(texts):
        digest = hashlib.sha256(text.encode()).digest()
        vector = [(b - 127.5) / 127.5 for b in digest]
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        data.append({"object": "embedding", "index": i, "embedding": [v / norm for v in vector]})
    tokens = sum(_tokens(t) for t in texts)
    doc = {
        "object": "list",
        "data": data,
        "model": body.get("model"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return Response(orjson.dumps(doc), media_type="application/json")


def create_standin_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/embeddings", standin_embeddings, methods=["POST"]),
        ]
    )
