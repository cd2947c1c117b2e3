"""A scriptable OpenAI-compatible (and Anthropic Messages) upstream for tests, run as a real server.

    python tests/fake_upstream.py --port N

By default every chat request is answered "echo: <last user message>" with usage. Tests queue behaviours per
upstream model with `POST /_script {"model": m, "steps": [step, ...]}`; each request to `m` consumes one step,
and once they are used up it follows `"default": step` when a script set one (for every later request):

    status, body, retry_after   an error answer (body: JSON to send; default OpenAI-shaped)
    delay_s                     wait before answering
    drop                        close the connection without answering
    content, finish_reason      the answer's text and finish reason
    tool_calls                  answer with these tool calls
    no_usage                    omit usage (non-stream) / the usage chunk (stream)
    chunks, chunk_delay_s       stream: number of content chunks, and the pause between them
    break_after                 stream: break the connection after this many chunks
    logprob                     the log-probability of every token when the request asks for logprobs
                                (default -0.05)
    fail_first_chunk            stream: break the connection before the first chunk
    plain_json                  stream: answer with the plain (non-stream) JSON completion instead of events
    plain_body                  stream: answer with this JSON body, status 200, instead of events
    judge_prefers               answer as a pairwise judge (tiergate's prompt): the answer starting with this
                                text wins, as JSON {"winner": "A" | "B"}

`GET /_requests` lists what was received (path, selected headers, JSON body); `GET /_events` lists stream
events (`stream_closed_by_client`, `stream_completed`); `POST /_reset` clears everything.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

SCRIPTS: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
DEFAULTS: dict[str, dict[str, Any]] = {}
REQUESTS: list[dict[str, Any]] = []
EVENTS: list[dict[str, Any]] = []


class BrokenStream(Exception):
    """Raised inside a streaming body: uvicorn then aborts the connection mid-response."""


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json", headers=headers)


def _last_user(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages or []):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):  # content parts (Anthropic's translation always sends these)
                return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
            return c if isinstance(c, str) else ""
    return ""


async def _step_for(model: str) -> dict[str, Any]:
    queue = SCRIPTS.get(model)
    step = queue.popleft() if queue else DEFAULTS.get(model, {})
    if step.get("delay_s"):
        await asyncio.sleep(step["delay_s"])
    return step


def _error(step: dict[str, Any]) -> Response:
    status = step["status"]
    body = step.get("body") or {
        "error": {"message": f"scripted {status}", "type": "server_error", "param": None, "code": None}
    }
    headers = {"retry-after": str(step["retry_after"])} if "retry_after" in step else None
    return _json(body, status, headers)


async def chat(request: Request) -> Response:
    body = orjson.loads(await request.body())
    model = body.get("model", "")
    REQUESTS.append(
        {
            "path": request.url.path,
            "authorization": request.headers.get("authorization"),
            "body": body,
            "t": time.time(),
        }
    )
    step = await _step_for(model)
    if step.get("drop"):
        raise BrokenStream("scripted drop")
    if step.get("status", 200) != 200:
        return _error(step)
    if "plain_body" in step:
        return _json(step["plain_body"])
    content = step.get("content", "echo: " + _last_user(body.get("messages")))
    if "judge_prefers" in step:
        answer_a = _last_user(body.get("messages")).split("Answer A:\n<<<\n", 1)[-1]
        content = orjson.dumps(
            {"winner": "A" if answer_a.startswith(step["judge_prefers"]) else "B"}
        ).decode()
    finish = step.get("finish_reason", "tool_calls" if step.get("tool_calls") else "stop")
    prompt_tokens = 10 + len(_last_user(body.get("messages")).split())
    completion_tokens = max(1, len(content.split()))
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    cid, created = f"chatcmpl-fake-{len(REQUESTS)}", int(time.time())
    n = body.get("n") or 1
    if not body.get("stream") or step.get("plain_json"):
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if step.get("tool_calls") else content,
        }
        if step.get("tool_calls"):
            message["tool_calls"] = step["tool_calls"]
        logprobs = None
        if body.get("logprobs"):
            value = step.get("logprob", -0.05)
            logprobs = {
                "content": [
                    {"token": w, "logprob": value, "bytes": None, "top_logprobs": []} for w in content.split()
                ]
            }
        choices = [
            {"index": i, "message": message, "finish_reason": finish, "logprobs": logprobs} for i in range(n)
        ]
        doc: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": choices,
        }
        if not step.get("no_usage"):
            doc["usage"] = usage
        return _json(doc)

    include_usage = bool((body.get("stream_options") or {}).get("include_usage")) and not step.get("no_usage")
    chunks = step.get("chunks") or max(1, len(content.split()))
    words = content.split()
    pieces = [
        " ".join(words[i * len(words) // chunks : (i + 1) * len(words) // chunks]) for i in range(chunks)
    ]

    def frame(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        doc = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }
        return b"data: " + orjson.dumps(doc) + b"\n\n"

    async def events() -> AsyncIterator[bytes]:
        completed = False
        try:
            if step.get("fail_first_chunk"):
                raise BrokenStream("scripted failure before the first chunk")
            yield frame([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            for i, piece in enumerate(pieces):
                if step.get("break_after") is not None and i >= step["break_after"]:
                    raise BrokenStream("scripted break")
                if step.get("chunk_delay_s"):
                    await asyncio.sleep(step["chunk_delay_s"])
                text = piece if i == 0 else " " + piece
                yield frame([{"index": 0, "delta": {"content": text}, "finish_reason": None}])
            if step.get("tool_calls"):
                calls = [{"index": j, **c} for j, c in enumerate(step["tool_calls"])]
                yield frame([{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": None}])
            yield frame([{"index": 0, "delta": {}, "finish_reason": finish}])
            if include_usage:
                yield frame([], usage=usage)
            yield b"data: [DONE]\n\n"
            completed = True
        finally:
            EVENTS.append(
                {
                    "event": "stream_completed" if completed else "stream_closed_by_client",
                    "model": model,
                    "t": time.time(),
                }
            )

    return StreamingResponse(events(), media_type="text/event-stream")


async def embeddings(request: Request) -> Response:
    body = orjson.loads(await request.body())
    REQUESTS.append(
        {
            "path": request.url.path,
            "authorization": request.headers.get("authorization"),
            "body": body,
            "t": time.time(),
        }
    )
    step = await _step_for(body.get("model", ""))
    if step.get("status", 200) != 200:
        return _error(step)
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    data = [{"object": "embedding", "index": i, "embedding": [0.1 * (i + 1)] * 8} for i in range(len(inputs))]
    return _json(
        {
            "object": "list",
            "data": data,
            "model": body.get("model"),
            "usage": {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)},
        }
    )


async def anthropic_messages(request: Request) -> Response:
    """Anthropic's Messages API, enough for litellm's translation (plain and streamed)."""
    body = orjson.loads(await request.body())
    REQUESTS.append(
        {
            "path": request.url.path,
            "authorization": request.headers.get("x-api-key"),
            "body": body,
            "t": time.time(),
        }
    )
    step = await _step_for(body.get("model", ""))
    if step.get("status", 200) != 200:
        return _json({"type": "error", "error": {"type": "api_error", "message": "scripted"}}, step["status"])
    text = step.get("content", "echo: " + _last_user(body.get("messages")))
    usage = {"input_tokens": 12, "output_tokens": max(1, len(text.split()))}
    # `tool_calls` steps are OpenAI-shaped; Anthropic answers them as tool_use blocks after the text.
    tools = [{"type": "tool_use", "id": c["id"], "name": c["function"]["name"],
              "input": orjson.loads(c["function"]["arguments"])} for c in step.get("tool_calls", ())]  # fmt: skip
    stop = "tool_use" if tools else "end_turn"
    if not body.get("stream"):
        return _json({
            "id": "msg_fake", "type": "message", "role": "assistant", "model": body.get("model"),
            "content": [{"type": "text", "text": text}, *tools], "stop_reason": stop, "stop_sequence": None,
            "usage": usage,
        })  # fmt: skip

    def event(name: str, data: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    async def events() -> AsyncIterator[bytes]:
        message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": body.get("model"), "content": [],
                   "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 0}}  # fmt: skip
        yield event("message_start", {"type": "message_start", "message": message})
        yield event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
        for i, word in enumerate(text.split()):
            piece = word if i == 0 else " " + word
            yield event(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
            )
        yield event("content_block_stop", {"type": "content_block_stop", "index": 0})
        for index, tool in enumerate(tools, start=1):
            start = {"type": "content_block_start", "index": index, "content_block": {**tool, "input": {}}}
            yield event("content_block_start", start)
            delta = {"type": "input_json_delta", "partial_json": orjson.dumps(tool["input"]).decode()}
            yield event(
                "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
            )
            yield event("content_block_stop", {"type": "content_block_stop", "index": index})
        yield event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        yield event("message_stop", {"type": "message_stop"})

    return StreamingResponse(events(), media_type="text/event-stream")


async def script(request: Request) -> Response:
    doc = orjson.loads(await request.body())
    SCRIPTS[doc["model"]].extend(doc.get("steps", []))
    if "default" in doc:
        DEFAULTS[doc["model"]] = doc["default"]
    return _json({"queued": len(SCRIPTS[doc["model"]])})


async def requests_(request: Request) -> Response:
    return _json(REQUESTS)


async def events_(request: Request) -> Response:
    return _json(EVENTS)


async def reset(request: Request) -> Response:
    SCRIPTS.clear()
    DEFAULTS.clear()
    REQUESTS.clear()
    EVENTS.clear()
    return _json({"ok": True})


def create_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/messages", anthropic_messages, methods=["POST"]),
            Route("/_script", script, methods=["POST"]),
            Route("/_requests", requests_, methods=["GET"]),
            Route("/_events", events_, methods=["GET"]),
            Route("/_reset", reset, methods=["POST"]),
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
