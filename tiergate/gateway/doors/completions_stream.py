"""The chat event stream rewritten as the legacy Completions stream: `text_completion` chunks, then `[DONE]`."""

from __future__ import annotations

from typing import Any

import orjson


def completion_id(chat_id: Any) -> str:
    """`cmpl-...` for the chat completion id `chat_id` (`chatcmpl-...`), so both name the same answer."""
    text = str(chat_id or "")
    return "cmpl-" + text.removeprefix("chatcmpl-")


def text_completion_object(chat: dict[str, Any], choices: list[dict[str, Any]]) -> dict[str, Any]:
    """A `text_completion` object (answer or chunk) with `choices`, named after the chat object `chat`."""
    out: dict[str, Any] = {
        "id": completion_id(chat.get("id")),
        "object": "text_completion",
        "created": chat.get("created"),
        "model": chat.get("model"),
        "choices": choices,
    }
    if chat.get("system_fingerprint"):
        out["system_fingerprint"] = chat["system_fingerprint"]
    if chat.get("usage") is not None:
        out["usage"] = chat["usage"]
    return out


def _choice(choice: dict[str, Any]) -> dict[str, Any] | None:
    """The Completions choice for one chat chunk choice; None for one that carries nothing (the role)."""
    text = (choice.get("delta") or {}).get("content") or ""
    finish = choice.get("finish_reason")
    if not text and finish is None:
        return None
    return {"text": text, "index": choice.get("index", 0), "logprobs": None, "finish_reason": finish}


def _event(data: bytes) -> bytes | None:
    """The translated `data:` payload of one chat event; None to drop the event. Anything that is not a chat
    chunk (`[DONE]`, the gateway's error events) passes unchanged."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    if not isinstance(doc, dict) or doc.get("object") != "chat.completion.chunk":
        return data
    choices = [c for c in map(_choice, doc.get("choices") or ()) if c is not None]
    usage = doc.get("usage")
    if not choices and (doc.get("choices") or usage is None):
        return None
    return orjson.dumps(text_completion_object(doc, choices))


class CompletionsStream:
    """A `BodyTranslator` from chat SSE to Completions SSE; events may arrive split anywhere."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        self._pending += chunk
        *events, self._pending = self._pending.split(b"\n\n")
        return b"".join(self._translate(event) for event in events)

    def close(self) -> bytes:
        rest, self._pending = self._pending, b""
        return self._translate(rest) if rest.strip() else b""

    @staticmethod
    def _translate(event: bytes) -> bytes:
        lines = event.split(b"\n")
        data = [line[5:].lstrip() for line in lines if line.startswith(b"data:")]
        if not data:  # a comment or keep-alive: kept as it came
            return event + b"\n\n"
        translated = _event(b"\n".join(data))
        if translated is None:
            return b""
        others = [line for line in lines if not line.startswith(b"data:")]
        return b"".join(line + b"\n" for line in others) + b"data: " + translated + b"\n\n"
