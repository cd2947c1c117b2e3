"""The chat event stream rewritten as the Responses stream: `response.created`, `response.in_progress`, one
added / delta / done run per output item (a message's text, each function call's arguments), then
`response.completed` (or `response.incomplete`) with usage. A gateway error event in the chat stream becomes
an `error` event and `response.failed`. Every event carries the next `sequence_number`.

A stream whose response is stored (`keep`) holds its terminal event back until `release` has written the
response: a client that continues it (`previous_response_id`) the moment the stream ends finds it stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from tiergate.gateway.doors.responses_output import (
    RequestEcho,
    function_call_item,
    item_id,
    message_item,
    response_object,
    status_of,
    text_part,
)

_TEXT_DELTA = (
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":'
)
_DELTA_END = b',"logprobs":[]}\n\n'
_NOT_TEXT_ONLY = (KeyError, TypeError, ValueError, orjson.JSONDecodeError)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


class ResponsesStream:
    """A `BodyTranslator` from chat SSE to Responses SSE; events may arrive split anywhere."""

    def __init__(
        self, echo: RequestEcho, keep: Callable[[dict[str, Any]], Awaitable[bool]] | None = None
    ) -> None:
        self._echo = echo
        # Stores the final response (False: it could not be); the terminal event waits for it in `_held`.
        self._keep = keep
        self.holds = keep is not None
        self._held: tuple[str, dict[str, Any]] | None = None
        self._pending = b""
        self._sequence = 0
        self._head: dict[str, Any] | None = None  # id, created, model of the chat stream
        self._items: list[dict[str, Any]] = []  # output items, the last one possibly still open
        self._open: str | None = None  # "message" | "function_call" while the last item is open
        self._open_call = -1  # the chat tool-call index the open function call item is for
        self._part: str | None = None  # the open message's open content part: output_text | refusal
        self._part_text = ""  # that part's text so far
        self._finish: Any = None
        self._usage: dict[str, Any] | None = None
        self._ended = False  # a terminal event was sent; anything after it is dropped
        self._delta_where = b""  # the open part's item_id, output_index and content_index, as event bytes
        self._echo_fields: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> bytes:
        self._pending += chunk
        *events, self._pending = self._pending.split(b"\n\n")
        out: list[bytes] = []
        for event in events:
            if self._part == "output_text" and event[:7] == b"data: {" and b"\n" not in event:
                # Most of a stream: a chunk whose one choice adds text to the open part and carries nothing
                # else. Written out without building its event, and with as few calls as can be: this loop
                # is the door's whole per-token cost. Any other chunk raises here and is translated in full.
                try:
                    doc = orjson.loads(event[6:])
                    (choice,) = doc["choices"]
                    delta = choice["delta"]
                    text = delta["content"] if delta else ""
                    if (
                        choice["finish_reason"] is None
                        and len(delta) < 2
                        and doc["object"] == "chat.completion.chunk"
                        and ("usage" not in doc or not doc["usage"])
                        and (text is None or isinstance(text, str))
                    ):
                        if text:
                            self._part_text += text
                            out += (
                                _TEXT_DELTA,
                                b"%d" % self._sequence,
                                self._delta_where,
                                orjson.dumps(text),
                                _DELTA_END,
                            )
                            self._sequence += 1
                        continue
                except _NOT_TEXT_ONLY:
                    pass
            out += (self._translate(event),)
        return b"".join(out)

    def _emit_text_delta(self, piece: str) -> bytes:
        sequence, self._sequence = self._sequence, self._sequence + 1
        return _TEXT_DELTA + b"%d" % sequence + self._delta_where + orjson.dumps(piece) + _DELTA_END

    def close(self) -> bytes:
        rest, self._pending = self._pending, b""
        out = self._translate(rest) if rest.strip() else b""
        if not self._ended and self._head is not None:  # the chat stream stopped without `[DONE]`
            if self._finish is not None:
                out += self._complete()
            else:
                out += self._fail("the answer ended before it was complete", "upstream_stream_broken")
        return out

    def _translate(self, event: bytes) -> bytes:
        lines = event.split(b"\n")
        data = [line[5:].lstrip() for line in lines if line.startswith(b"data:")]
        if not data:  # a comment or keep-alive: kept as it came
            return event + b"\n\n"
        if self._ended:
            return b""
        payload = b"\n".join(data)
        if payload.strip() == b"[DONE]":
            return self._complete()
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return self._fail("the upstream sent an unreadable event", "upstream_stream_broken")
        if not isinstance(doc, dict):
            return b""
        if isinstance(doc.get("error"), dict):
            error = doc["error"]
            return self._fail(str(error.get("message") or "error"), error.get("code") or "server_error")
        if doc.get("object") != "chat.completion.chunk":
            return b""
        return self._chunk(doc)

    def _emit(self, kind: str, **fields: Any) -> bytes:
        doc = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(doc) + b"\n\n"

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        assert self._head is not None
        if self._echo_fields is None:
            self._echo_fields = self._echo.fields()
        return response_object(
            self._echo, self._head, status=status, output=list(self._items), fields=self._echo_fields, **extra
        )

    def _start(self, doc: dict[str, Any]) -> bytes:
        self._head = {"id": doc.get("id"), "created": doc.get("created"), "model": doc.get("model")}
        started = orjson.dumps(self._response("in_progress"))  # once, for both events
        out = []
        for kind in ("response.created", "response.in_progress"):
            out.append(
                b'event: %s\ndata: {"type":"%s","sequence_number":%d,"response":%s}\n\n'
                % (kind.encode(), kind.encode(), self._sequence, started)
            )
            self._sequence += 1
        return b"".join(out)

    def _chunk(self, doc: dict[str, Any]) -> bytes:
        """A chunk's pieces; a piece of the wrong type (an upstream's mistake) adds nothing, it never breaks
        the stream."""
        out = self._start(doc) if self._head is None else b""
        for choice in _list(doc.get("choices")):
            if not isinstance(choice, dict):
                continue
            delta = _object(choice.get("delta"))
            if _text(delta.get("content")):
                out += self._message_delta("output_text", delta["content"])
            if _text(delta.get("refusal")):
                out += self._message_delta("refusal", delta["refusal"])
            for call in _list(delta.get("tool_calls")):
                if isinstance(call, dict):
                    out += self._call_delta(call)
            if choice.get("finish_reason") is not None:
                self._finish = choice["finish_reason"]
        if _object(doc.get("usage")):
            self._usage = doc["usage"]
        return out

    def _message_delta(self, kind: str, piece: str) -> bytes:
        """`piece` of the message's text (`kind` output_text) or refusal (`kind` refusal)."""
        out = b""
        if self._open != "message":
            out += self._close_item()
            self._open, self._part = "message", None
            item = message_item(item_id("msg", self._head_id, len(self._items)), "", None, "in_progress")
            item["content"] = []  # finished parts; the open one is at index len(content)
            self._items.append(item)
            out += self._emit("response.output_item.added", output_index=self._index, item=item)
        if self._part != kind:
            out += self._close_part()
            self._part, self._part_text = kind, ""
            where = {**self._where, "content_index": self._content}
            self._delta_where = b"," + orjson.dumps(where)[1:-1] + b',"delta":'
            part = text_part("") if kind == "output_text" else {"type": "refusal", "refusal": ""}
            out += self._emit(
                "response.content_part.added", **self._where, content_index=self._content, part=part
            )
        self._part_text += piece
        if kind == "output_text":
            return out + self._emit_text_delta(piece)
        return out + self._emit(
            "response.refusal.delta", **self._where, content_index=self._content, delta=piece
        )

    def _call_delta(self, call: dict[str, Any]) -> bytes:
        out = b""
        function = _object(call.get("function"))
        index = call.get("index", 0)
        if self._open != "function_call" or self._open_call != index:
            out += self._close_item()
            self._open, self._open_call = "function_call", index
            item = function_call_item(
                item_id("fc", self._head_id, len(self._items)),
                _text(call.get("id")),
                _text(function.get("name")),
                "",
                "in_progress",
            )
            self._items.append(item)
            out += self._emit("response.output_item.added", output_index=self._index, item=item)
        piece = _text(function.get("arguments"))
        if piece:
            self._items[-1]["arguments"] += piece
            out += self._emit("response.function_call_arguments.delta", **self._where, delta=piece)
        return out

    @property
    def _head_id(self) -> Any:
        return self._echo.name or (self._head or {}).get("id")

    @property
    def _index(self) -> int:
        return len(self._items) - 1

    @property
    def _where(self) -> dict[str, Any]:
        return {"item_id": self._items[-1]["id"], "output_index": self._index}

    @property
    def _content(self) -> int:
        return len(self._items[-1]["content"])

    def _close_part(self) -> bytes:
        if self._part is None:
            return b""
        where, index, text = self._where, self._content, self._part_text
        if self._part == "output_text":
            part = text_part(text)
            out = self._emit(
                "response.output_text.done", **where, content_index=index, text=text, logprobs=[]
            )
        else:
            part = {"type": "refusal", "refusal": text}
            out = self._emit("response.refusal.done", **where, content_index=index, refusal=text)
        self._items[-1]["content"].append(part)
        self._part = None
        return out + self._emit("response.content_part.done", **where, content_index=index, part=part)

    def _close_item(self, status: str = "completed") -> bytes:
        if self._open is None:
            return b""
        item, where = self._items[-1], self._where
        if self._open == "message":
            out = self._close_part()
            item["status"] = status
        else:
            out = self._emit("response.function_call_arguments.done", **where, arguments=item["arguments"])
            item["status"] = "completed"
        self._open = None
        return out + self._emit("response.output_item.done", output_index=where["output_index"], item=item)

    def _complete(self) -> bytes:
        if self._head is None:
            return b""
        status, incomplete = status_of(self._finish)
        out = self._close_item("incomplete" if status == "incomplete" else "completed")
        self._ended = True
        final = self._response(status, incomplete=incomplete, chat_usage=self._usage)
        if self._keep is not None:
            self._held = (f"response.{status}", final)
            return out
        return out + self._emit(f"response.{status}", response=final)

    async def release(self) -> bytes:
        """The held terminal event, once its response is stored ("" while there is none)."""
        if self._held is None or self._keep is None:
            return b""
        (kind, final), self._held = self._held, None
        if not await self._keep(final):
            final["store"] = False
        return self._emit(kind, response=final)

    def _fail(self, message: str, code: str) -> bytes:
        out = b""
        if self._head is None:  # failed before any chunk: the response still needs an id
            out += self._start({"id": "chatcmpl-" + uuid.uuid4().hex})
        self._ended = True
        error = {"code": code, "message": message}
        out += self._emit("error", code=code, message=message, param=None)
        return out + self._emit("response.failed", response=self._response("failed", error=error))
