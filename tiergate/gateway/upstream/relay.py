"""Relaying an upstream's server-sent events to the client as they arrive.

`SSEAccumulator` splits the byte stream into events, forwards each complete event at once (never waiting for
more), drops the usage chunk the gateway asked for on the client's behalf, and keeps what accounting, traces
and the cache need: usage, the assembled answer, finish reasons. `RelayResponse` is the ASGI response that
pumps it and watches the client: a disconnect cancels the pump, which closes the upstream connection.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from tiergate.gateway.http.sse import sse_chunks
from tiergate.gateway.upstream.translation import BodyTranslator, translated
from tiergate.gateway.upstream.transport import TransportError

_EVENT_END = re.compile(rb"\r?\n\r?\n")


@dataclass
class _Choice:
    role: str = "assistant"
    content: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    logprobs: list[Any] = field(default_factory=list)


class SSEAccumulator:
    """Splits, forwards and remembers a stream; parses only what it must while the stream runs: events that
    may carry usage or an error (the usage chunk may have to be dropped, an error noted). The others are kept
    as bytes and parsed once, on demand, when the answer is assembled (for the cache, a trace, or counting
    tokens) - which most streams never need."""

    def __init__(self, *, strip_usage_chunk: bool) -> None:
        self._strip_usage = strip_usage_chunk
        self._buffer = b""
        self.usage: dict[str, Any] | None = None
        self.done = False  # saw `data: [DONE]`
        self.truncated = False  # the stream ended in the middle of an event
        self.error: Any = None  # an error event the upstream sent
        self.events = 0
        self.completion_id: str | None = None
        self.model: str | None = None
        self.created: int | None = None
        self.system_fingerprint: str | None = None
        self._choices: dict[int, _Choice] = {}
        self._pending: list[bytes | dict[str, Any]] = []  # data payloads in order, parsed or not yet

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to forward now: every event completed by `chunk`."""
        data = self._buffer + chunk if self._buffer else chunk
        if b"\r" in data:  # CRLF framing is rare; the regex handles it (a plain find is ~5x faster)
            return self._feed_any(data)
        kept: list[bytes] = []
        dropped = False
        start = 0
        while (end := data.find(b"\n\n", start)) >= 0:
            event = data[start : end + 2]
            start = end + 2
            if self._keep(event):
                kept.append(event)
            else:
                dropped = True
        self._buffer = data[start:]
        # Usually every event is forwarded: the bytes as they came, without rebuilding them.
        return b"".join(kept) if dropped else data[:start]

    def _feed_any(self, data: bytes) -> bytes:
        out: list[bytes] = []
        start = 0
        for match in _EVENT_END.finditer(data):
            event = data[start : match.end()]
            start = match.end()
            if self._keep(event):
                out.append(event)
        self._buffer = data[start:]
        return b"".join(out)

    def flush(self) -> bytes:
        """The upstream's last event if it lacked the blank line that ends an event (normally nothing).
        It is forwarded, terminated, when it is whole (`[DONE]`, a comment, a payload that parses); a cut one
        is dropped and noted in `truncated`: the client would fail on it before reading the error event
        that follows, and that event must start on a line of its own."""
        rest, self._buffer = self._buffer, b""
        if not rest.strip():
            return b""
        payload = b"\n".join(line[5:].strip() for line in rest.splitlines() if line.startswith(b"data:"))
        if payload and payload != b"[DONE]":
            try:
                orjson.loads(payload)
            except orjson.JSONDecodeError:
                self.truncated = True
                return b""
        event = rest.rstrip(b"\r\n") + b"\n\n"
        return event if self._keep(event) else b""

    def restream(self, body: bytes) -> bytes:
        """A whole JSON body sent in answer to a stream request, as the events to forward instead. Some
        upstreams ignore `stream: true`. A chat completion is re-chunked as an OpenAI server would have
        streamed it (through `feed`, so usage and the answer are kept as for any stream); anything else (an
        error object, unreadable bytes) becomes one error event, since relaying the JSON would give the
        client's SDK neither a chunk nor an error."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("choices"), list) and "error" not in doc:
            return self.feed(sse_chunks(doc, include_usage=True)) + self.flush()
        error = doc.get("error") if isinstance(doc, dict) else None
        detail = error.get("message") if isinstance(error, dict) else None
        self.error = error if error is not None else "a body that is neither events nor a chat completion"
        return error_event(
            "the upstream answered the stream request with a JSON body instead of events"
            + (f": {detail}" if isinstance(detail, str) else ""),
            code="upstream_not_streaming",
        )

    def _keep(self, event: bytes) -> bool:
        self.events += 1
        if event.startswith(b"data: ") and event.count(b"\n", 0, -2) == 0:
            payload = event[6:].rstrip()  # the common shape: one `data:` line
        else:
            payload = b"\n".join(
                line[5:].lstrip() for line in event.splitlines() if line.startswith(b"data:")
            )
        if not payload:
            return True  # comments and keep-alives pass through
        if payload == b"[DONE]":
            self.done = True
            return True
        if b'"usage"' not in payload and b'"error"' not in payload:
            self._pending.append(payload)
            return True
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(doc, dict):
            return True
        if "error" in doc:
            self.error = doc["error"]
            return True
        self._pending.append(doc)
        usage = doc.get("usage")
        if usage:
            self.usage = usage
            if self._strip_usage and doc.get("choices") == []:
                return False
        return True

    def _parse_pending(self) -> None:
        for item in self._pending:
            if isinstance(item, bytes):
                try:
                    doc = orjson.loads(item)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(doc, dict):
                    continue
            else:
                doc = item
            if self.completion_id is None:
                self.completion_id = doc.get("id")
                self.model = doc.get("model")
                self.created = doc.get("created")
                self.system_fingerprint = doc.get("system_fingerprint")
            choices = doc.get("choices")
            if isinstance(choices, list):
                for choice in choices:
                    if isinstance(choice, dict):
                        self._add(choice)
        self._pending = []

    def _add(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        acc = self._choices.get(index)
        if acc is None:
            acc = self._choices[index] = _Choice()
        delta = choice.get("delta") or {}
        if delta.get("role"):
            acc.role = delta["role"]
        if isinstance(delta.get("content"), str):
            acc.content.append(delta["content"])
        for call in delta.get("tool_calls") or ():
            slot = acc.tool_calls.setdefault(
                call.get("index", 0), {"function": {"name": "", "arguments": ""}}
            )
            if call.get("id"):
                slot["id"] = call["id"]
            if call.get("type"):
                slot["type"] = call["type"]
            function = call.get("function") or {}
            if function.get("name"):
                slot["function"]["name"] += function["name"]
            if function.get("arguments"):
                slot["function"]["arguments"] += function["arguments"]
        if choice.get("finish_reason"):
            acc.finish_reason = choice["finish_reason"]
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict) and logprobs.get("content"):
            acc.logprobs.extend(logprobs["content"])

    @property
    def text(self) -> str:
        """All generated text (every choice), for counting tokens when the upstream reports no usage."""
        self._parse_pending()
        return "".join("".join(c.content) for c in self._choices.values())

    def tool_arguments(self) -> str:
        self._parse_pending()
        return "".join(
            call["function"]["name"] + call["function"]["arguments"]
            for c in self._choices.values()
            for call in c.tool_calls.values()
        )

    def assembled(self) -> dict[str, Any]:
        """The stream as the equivalent non-streamed chat completion."""
        self._parse_pending()
        choices = []
        for index in sorted(self._choices):
            c = self._choices[index]
            message: dict[str, Any] = {"role": c.role, "content": "".join(c.content) if c.content else None}
            if c.tool_calls:
                message["tool_calls"] = [
                    {"id": t.get("id"), "type": t.get("type", "function"), "function": t["function"]}
                    for _, t in sorted(c.tool_calls.items())
                ]
            entry: dict[str, Any] = {"index": index, "message": message, "finish_reason": c.finish_reason}
            if c.logprobs:
                entry["logprobs"] = {"content": c.logprobs}
            choices.append(entry)
        out: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.system_fingerprint:
            out["system_fingerprint"] = self.system_fingerprint
        if self.usage:
            out["usage"] = self.usage
        return out


def error_event(message: str, code: str = "upstream_stream_broken") -> bytes:
    """The final event of a stream that broke after bytes reached the client; the SDK raises on it."""
    return (
        b"data: "
        + orjson.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": code}})
        + b"\n\n"
    )


@dataclass
class StreamOutcome:
    """How a relayed stream ended; `finish` callbacks receive it."""

    status: str = "ok"  # ok | client_disconnected | upstream_broken
    error: str | None = None
    ttft_s: float | None = None  # from the start of the request to the first byte sent to the client
    upstream_wait_s: float = 0.0  # time spent waiting for the upstream's next chunk


class RelayResponse:
    """An ASGI response that pumps upstream chunks through an accumulator to the client."""

    def __init__(
        self,
        *,
        headers: list[tuple[bytes, bytes]],
        first_chunk: bytes,
        chunks: AsyncIterator[bytes],
        close_upstream: Callable[[], Awaitable[None]],
        accumulator: SSEAccumulator,
        started: float,
        upstream_wait_s: float,
        finish: Callable[[StreamOutcome], Awaitable[None]],
    ) -> None:
        self._headers = headers
        self._first = first_chunk
        self._chunks = chunks
        self._close_upstream = close_upstream
        self.accumulator = accumulator
        self._started = started
        self.outcome = StreamOutcome(upstream_wait_s=upstream_wait_s)
        self._finish = finish
        self._translator: BodyTranslator | None = None

    def translate_with(self, translator: BodyTranslator) -> None:
        """Before the response starts: send what the client gets through `translator` (a front door's)."""
        self._translator = translator

    def add_header(self, name: str, value: str) -> None:
        """Before the response starts: one more header (the app adds its own to every response)."""
        self._headers.append((name.encode(), value.encode()))

    async def _pump(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        acc = self.accumulator
        outcome = self.outcome
        await send({"type": "http.response.start", "status": 200, "headers": self._headers})
        # An event stream starts with a field (`data:`, `event:`, `id:`) or a comment, never with `{`.
        if self._first.lstrip()[:1] == b"{":
            await self._restream(send)
            return
        out = acc.feed(self._first)
        if out:
            await send({"type": "http.response.body", "body": out, "more_body": True})
            outcome.ttft_s = time.perf_counter() - self._started
        try:
            waited = time.perf_counter()
            async for chunk in self._chunks:
                now = time.perf_counter()
                outcome.upstream_wait_s += now - waited
                out = acc.feed(chunk)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                    if outcome.ttft_s is None:
                        outcome.ttft_s = time.perf_counter() - self._started
                waited = time.perf_counter()
            tail = acc.flush()
            if acc.truncated and outcome.status == "ok":
                outcome.status, outcome.error = "upstream_broken", "upstream ended the stream inside an event"
                tail += error_event("the upstream ended the stream in the middle of an event")
            elif not acc.done and acc.error is None and outcome.status == "ok":
                outcome.status, outcome.error = "upstream_broken", "upstream ended the stream without [DONE]"
                tail += error_event("the upstream ended the stream early; the answer is incomplete")
        except TransportError as exc:
            if outcome.status != "ok":  # the client left and the watcher closed the upstream: nobody to tell
                return
            outcome.status, outcome.error = "upstream_broken", str(exc)
            tail = acc.flush() + error_event(f"the upstream stream broke after the answer began: {exc}")
        if acc.error is not None and outcome.status == "ok":
            outcome.status, outcome.error = "upstream_broken", "upstream sent an error event"
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _restream(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        acc, outcome = self.accumulator, self.outcome
        parts = [self._first]
        try:
            waited = time.perf_counter()
            async for chunk in self._chunks:
                parts.append(chunk)
            outcome.upstream_wait_s += time.perf_counter() - waited
        except TransportError as exc:
            if outcome.status != "ok":
                return
            outcome.status, outcome.error = "upstream_broken", str(exc)
            body = error_event(f"the upstream broke while sending its answer: {exc}")
        else:
            body = acc.restream(b"".join(parts))
            if acc.error is not None and outcome.status == "ok":
                outcome.status, outcome.error = "upstream_broken", "upstream answered a stream with JSON"
        outcome.ttft_s = time.perf_counter() - self._started
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _watch(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        """On a client disconnect, close the upstream: the pump's next read then ends, and so does the relay."""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.outcome.status = "client_disconnected"
                await self._close_upstream()
                return

    async def __call__(self, scope: Any, receive: Callable[[], Awaitable[dict[str, Any]]], send: Any) -> None:
        # The pump runs in the request's own task; one watcher task is all a stream costs beyond it.
        watcher = asyncio.ensure_future(self._watch(receive))
        if self._translator is not None:
            send = translated(send, self._translator)
        finished = False

        async def send_settled(message: dict[str, Any]) -> None:
            # The last bytes leave once the call is settled and its ledger row written ahead (kill-safe).
            nonlocal finished
            if not finished and message["type"] == "http.response.body" and not message.get("more_body"):
                finished = True
                await self._finish(self.outcome)
            await send(message)

        try:
            await self._pump(send_settled)
        except (OSError, asyncio.CancelledError) as exc:  # the socket went away; the server is stopping
            self.outcome.status = "client_disconnected"
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            watcher.cancel()
            await self._close_upstream()
            if not finished:
                await self._finish(self.outcome)
