"""The Responses `response` object, built from a chat completion (an answer) or from a stream's state."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tiergate.policies.usage import reported_count

# finish_reason -> the reason a response is incomplete
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass(frozen=True)
class RequestEcho:
    """The request's own settings, which a `response` repeats back, and the name the gateway gave it."""

    body: dict[str, Any]
    # What names the response and its items when it is stored (a fresh, unique suffix: `resp_<name>`);
    # None: the chat completion's id names them.
    name: str | None = None

    def fields(self) -> dict[str, Any]:
        body = self.body
        tools = [
            {"strict": None, "parameters": None, "description": None, **t} for t in body.get("tools") or ()
        ]
        return {
            "instructions": body.get("instructions"),
            "tools": tools,
            "tool_choice": body.get("tool_choice") or "auto",
            "text": body.get("text") or {"format": {"type": "text"}},
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "max_output_tokens": body.get("max_output_tokens"),
            "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
            "metadata": body.get("metadata") or {},
            "user": body.get("user"),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": None,
            "truncation": "disabled",
            "store": self.name is not None,
            "background": False,
        }


def response_id(chat_id: Any) -> str:
    """`resp_...` for the chat completion id `chat_id` (`chatcmpl-...`), so both name the same answer."""
    return "resp_" + str(chat_id or "").removeprefix("chatcmpl-")


def item_id(prefix: str, chat_id: Any, index: int) -> str:
    """The id of output item `index` (a message `msg`, a function call `fc`) of chat completion `chat_id`."""
    return f"{prefix}_{str(chat_id or '').removeprefix('chatcmpl-')}_{index}"


def response_usage(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """Responses usage for chat usage (a field that is not a count reads as 0)."""
    if not isinstance(chat_usage, dict) or not chat_usage:
        return None
    input_tokens = reported_count(chat_usage, "prompt_tokens")
    output_tokens = reported_count(chat_usage, "completion_tokens")
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            "cached_tokens": reported_count(chat_usage, "prompt_tokens_details", "cached_tokens"),
            "cache_write_tokens": 0,
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {
            "reasoning_tokens": reported_count(chat_usage, "completion_tokens_details", "reasoning_tokens")
        },
        "total_tokens": reported_count(chat_usage, "total_tokens") or input_tokens + output_tokens,
    }


def message_item(item: str, text: str, refusal: str | None, status: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text or not refusal:
        content.append(text_part(text))
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": item, "type": "message", "role": "assistant", "status": status, "content": content}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(item: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def status_of(finish_reason: Any) -> tuple[str, dict[str, Any] | None]:
    """The response's status and incomplete details for the chat finish reason."""
    reason = _INCOMPLETE.get(finish_reason)
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def response_object(
    echo: RequestEcho,
    chat: dict[str, Any],
    *,
    status: str,
    output: list[dict[str, Any]],
    incomplete: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    chat_usage: dict[str, Any] | None = None,
    fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A `response` named after the chat completion (or first chunk) `chat`; `fields` are `echo.fields()`
    when the caller has them already."""
    created = chat.get("created") or int(time.time())
    return {
        "id": response_id(echo.name or chat.get("id")),
        "object": "response",
        "created_at": created,
        "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": incomplete,
        "model": chat.get("model"),
        "output": output,
        "usage": response_usage(chat_usage),
        **(fields if fields is not None else echo.fields()),
    }


def response_from_completion(completion: dict[str, Any], echo: RequestEcho) -> dict[str, Any]:
    """The `response` for a (non-streamed) chat completion: its first choice, since Responses has no `n`."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    status, incomplete = status_of(choice.get("finish_reason"))
    item_status = "incomplete" if status == "incomplete" else "completed"
    chat_id = echo.name or completion.get("id")
    output = []
    if message.get("content") or message.get("refusal") or not message.get("tool_calls"):
        output.append(
            message_item(
                item_id("msg", chat_id, 0), message.get("content") or "", message.get("refusal"), item_status
            )
        )
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        output.append(
            function_call_item(
                item_id("fc", chat_id, len(output)),
                call.get("id") or "",
                function.get("name") or "",
                function.get("arguments") or "",
                "completed",
            )
        )
    return response_object(
        echo,
        completion,
        status=status,
        output=output,
        incomplete=incomplete,
        chat_usage=completion.get("usage"),
    )
