"""The hook a front door uses to give a relayed chat stream its own API's shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol


class BodyTranslator(Protocol):
    """Rewrites a chat-completions event stream into another API's (a front door's), chunk by chunk."""

    def feed(self, chunk: bytes) -> bytes:
        """The translated bytes for the next piece of the stream (split anywhere, even inside an event)."""
        ...

    def close(self) -> bytes:
        """What the translated stream still needs once the chat stream has ended."""
        ...


async def held(translator: BodyTranslator) -> bytes:
    """What a translator that `holds` (a `holds` attribute that is true) has held back until its async work
    was done (the Responses door: its stream's terminal event, until the response is stored); else ""."""
    return await translator.release() if getattr(translator, "holds", False) else b""  # type: ignore[attr-defined]


def translated(send: Any, translator: BodyTranslator) -> Callable[[dict[str, Any]], Awaitable[None]]:
    holds = getattr(translator, "holds", False)

    async def send_translated(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            body = translator.feed(message.get("body", b""))
            if not message.get("more_body", False):
                body += translator.close()
            if holds:
                body += await held(translator)
            message = {**message, "body": body}
        await send(message)

    return send_translated
