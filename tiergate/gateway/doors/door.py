"""What a front door is, and the one function that puts the pipeline's answer through it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import orjson
from starlette.responses import Response

from tiergate.gateway.accounting.auth import Principal
from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.errors import GatewayError
from tiergate.gateway.upstream.relay import RelayResponse
from tiergate.gateway.upstream.translation import BodyTranslator, held


class Door(Protocol):
    """One API's request and response shapes over the chat pipeline."""

    endpoint: str  # the name calls through this door have in the ledger, traces and metrics

    async def chat_body(self, principal: Principal, headers: Mapping[str, str], raw: bytes) -> bytes:
        """The chat-completions request equivalent to this door's request `raw` (BadRequest if there is none)."""
        ...

    async def answer(self, completion: dict[str, Any], record: CallRecord) -> bytes:
        """This door's JSON answer for a chat completion."""
        ...

    def stream(self, record: CallRecord) -> BodyTranslator:
        """A translator from the chat event stream to this door's."""
        ...

    def error(self, error: GatewayError) -> tuple[int, bytes]:
        """This door's status and body for `error`."""
        ...


async def through(
    door: Door, response: Response | RelayResponse, record: CallRecord
) -> Response | RelayResponse:
    """The pipeline's `response` in `door`'s shape, headers (request id, tier, cache, ...) kept."""
    if isinstance(response, RelayResponse):
        response.translate_with(door.stream(record))
        return response
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        translator = door.stream(record)
        body = translator.feed(bytes(response.body)) + translator.close()
        body += await held(translator)
    else:
        body = await door.answer(orjson.loads(response.body), record)
    headers = {k: v for k, v in response.headers.items() if k != "content-length"}
    return Response(body, status_code=response.status_code, headers=headers)
