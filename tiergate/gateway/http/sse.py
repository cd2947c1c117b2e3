"""A finished chat completion sent again in the shape the client asked for: JSON, or SSE chunks.

Used for cache hits and for cascade answers that were buffered until verified. The chunks are what an
OpenAI server would have streamed for the same answer (role, content, tool calls, finish reason, then the
usage chunk only when the client asked for it with `stream_options.include_usage`).
"""

from __future__ import annotations

from typing import Any

import orjson


def _frame(doc: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def sse_chunks(answer: dict[str, Any], *, include_usage: bool) -> bytes:
    head = {
        "id": answer.get("id"),
        "object": "chat.completion.chunk",
        "created": answer.get("created"),
        "model": answer.get("model"),
    }
    if answer.get("system_fingerprint"):
        head["system_fingerprint"] = answer["system_fingerprint"]
    out: list[bytes] = []
    for choice in answer.get("choices") or ():
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        delta: dict[str, Any] = {
            "role": message.get("role", "assistant"),
            "content": message.get("content") or "",
        }
        if message.get("refusal"):
            delta["refusal"] = message["refusal"]
        first: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": None}
        if choice.get("logprobs"):
            first["logprobs"] = choice["logprobs"]
        out.append(_frame({**head, "choices": [first]}))
        calls = message.get("tool_calls")
        if calls:
            indexed = [{"index": i, **call} for i, call in enumerate(calls)]
            out.append(
                _frame(
                    {
                        **head,
                        "choices": [
                            {"index": index, "delta": {"tool_calls": indexed}, "finish_reason": None}
                        ],
                    }
                )
            )
        out.append(
            _frame(
                {
                    **head,
                    "choices": [{"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}],
                }
            )
        )
    if include_usage and answer.get("usage"):
        out.append(_frame({**head, "choices": [], "usage": answer["usage"]}))
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)
