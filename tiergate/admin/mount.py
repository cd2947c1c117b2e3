"""`/admin`, mounted without importing FastAPI until the first admin call (keeps the gateway's startup fast
and its memory small: a gateway that is never administered through HTTP never loads it)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tiergate.gateway.app import request_id
from tiergate.gateway.components import ControlPlane
from tiergate.gateway.errors import GatewayError, PayloadTooLarge


class LazyAdmin:
    """Mounted at /admin: builds the FastAPI app on first use (keeps the gateway's startup fast) over the
    gateway's control plane, and refuses oversized bodies before anything reads them."""

    def __init__(self) -> None:
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        send = _stamped(send, request_id(Request(scope)))
        control: ControlPlane = scope["app"].state.control
        limit = control.settings.accounting.admin_max_body_bytes
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await _send_error(
                    send, PayloadTooLarge(f"the request body exceeds the admin API's limit of {limit} bytes")
                )
                return

        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if self._app is None:
            from tiergate.admin.api import create_admin_app

            self._app = create_admin_app(control)
        await self._app(scope, replay, send)


def _stamped(send: Send, rid: str) -> Send:
    """`send` that gives the response the request's id, as the data plane does, unless it has one."""

    async def stamped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if not any(name.lower() == b"x-request-id" for name, _ in headers):
                headers.append((b"x-request-id", rid.encode()))
            message = {**message, "headers": headers}
        await send(message)

    return stamped


async def _send_error(send: Send, error: GatewayError) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": error.body()})
