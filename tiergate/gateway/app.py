"""The ASGI application: routes, error shaping and the lifespan that owns every resource."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from tiergate.gateway import endpoints, feedback
from tiergate.gateway.accounting.auth import MASTER, require_master
from tiergate.gateway.accounting.records import CallRecord, Refusal
from tiergate.gateway.components import ControlPlane, Gateway, open_gateway
from tiergate.gateway.config.master_key import master_key_line
from tiergate.gateway.config.settings import Settings
from tiergate.gateway.db.engine import database_unavailable, database_unreachable
from tiergate.gateway.doors.completions import CompletionsDoor
from tiergate.gateway.doors.door import Door, through
from tiergate.gateway.doors.messages import MessagesDoor
from tiergate.gateway.doors.responses import ResponsesDoor
from tiergate.gateway.doors.responses_routes import stored_response
from tiergate.gateway.errors import (
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from tiergate.gateway.http.ids import request_id
from tiergate.gateway.http.protocol import ARRIVED
from tiergate.gateway.settlement import shutting_down
from tiergate.gateway.upstream.prices import with_known_prices
from tiergate.gateway.upstream.relay import RelayResponse

if TYPE_CHECKING:
    import httpx

__all__ = ["create_app", "error_response", "read_body", "request_id"]

log = logging.getLogger("tiergate")


def error_response(error: GatewayError, rid: str) -> Response:
    return Response(
        error.body(),
        status_code=error.status,
        headers={**error.headers, "x-request-id": rid},
        media_type="application/json",
    )


def door_error_response(door: Door, error: GatewayError, rid: str) -> Response:
    status, body = door.error(error)
    return Response(
        body,
        status_code=status,
        headers={**error.headers, "x-request-id": rid},
        media_type="application/json",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing early (before reading it) anything over `limit` bytes."""
    declared = request.headers.get("content-length")
    too_large = PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        parts.append(chunk)
    return b"".join(parts)


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return]


def _new_record(request: Request, rid: str, endpoint: str) -> CallRecord:
    record = CallRecord(
        request_id=rid, endpoint=endpoint, principal=MASTER, requested_model="", started_at=time.time(),
        started_perf=request.scope.get(ARRIVED) or time.perf_counter(),
    )  # fmt: skip
    request.scope[_RECORD] = record
    return record


_RECORD = "tiergate.record"  # scope key of the call's record


class GatewayApp(Starlette):
    """The app, timed from the moment a call arrived (its first bytes read, see `http_protocol`; else its
    entry into the app) to the moment its response has been handed over.

    That span minus the upstream wait is what the overhead histogram reports: it includes parsing, routing,
    reading the body and writing the response, which the handler alone cannot see.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        scope.setdefault(ARRIVED, time.perf_counter())
        await super().__call__(scope, receive, send)
        record: CallRecord | None = scope.get(_RECORD)
        if record is not None and record.status_code == 200 and record.outcome != "refused":
            self.state.gateway.telemetry.metrics.observe_overhead(
                record.endpoint, time.perf_counter() - scope[ARRIVED] - record.upstream_s
            )


def refused(refusals: Sequence[Refusal], record: CallRecord, error: GatewayError) -> None:
    """Complete the record of a call that ends in an error response and hand it to the refusal hooks."""
    record.status_code = error.status
    record.outcome = "refused" if record.attempts == 0 else "error"
    record.error = error.code or error.type
    record.latency_s = time.perf_counter() - record.started_perf
    for hook in refusals:
        hook(record, error)


def _stamp_overhead(response: Response | RelayResponse, record: CallRecord) -> None:
    """`x-tiergate-overhead-ms`: time in the gateway so far, minus the time spent waiting on upstreams.

    For a non-streamed answer that is all of the gateway's work; for a stream it covers everything up to the
    response headers (including the wait for the first chunk, which counts as upstream time), not the relay.
    """
    overhead_ms = (time.perf_counter() - record.started_perf - record.upstream_s) * 1000
    value = f"{max(0.0, overhead_ms):.3f}"
    if isinstance(response, RelayResponse):
        response.add_header("x-tiergate-overhead-ms", value)
    else:
        response.headers["x-tiergate-overhead-ms"] = value


async def _call(request: Request, endpoint: str, door: Door | None = None) -> Response | RelayResponse:
    """One call of the data plane: chat (through `door` when it came in by another API's shape) or embeddings."""
    gateway = _gateway(request)
    rid = request_id(request)
    record = _new_record(request, rid, door.endpoint if door is not None else endpoint)
    response: Response | RelayResponse
    failure: GatewayError
    try:
        raw = await read_body(request, gateway.settings.max_body_bytes)
        if endpoint == "chat":
            response = await gateway.chat.chat_completion(request.headers, raw, record, door)
            if door is not None:
                response = await through(door, response, record)
        else:
            response = await gateway.embeddings.embeddings(request.headers, raw, record)
    except asyncio.CancelledError:
        # The server stopped waiting for this request (its drain timeout expired). The client gets a 503 it
        # can retry elsewhere rather than the server's bare 500; the request was settled as it unwound.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        failure = shutting_down()
    except GatewayError as error:
        failure = error
    except Exception as exc:
        if not database_unreachable(exc):
            await gateway.settlement.failed(record, GatewayError("internal error"))
            refused(gateway.refusals, record, GatewayError("internal error"))
            raise
        # A key seen for the first time, a budget counter to rebuild: the database is needed and away.
        failure = database_unavailable()
    else:
        _stamp_overhead(response, record)
        return response
    # An error after admission releases the reservation (a no-op when the pipeline settled it already).
    await gateway.settlement.failed(record, failure)
    refused(gateway.refusals, record, failure)
    response = error_response(failure, rid) if door is None else door_error_response(door, failure, rid)
    _stamp_overhead(response, record)
    return response


async def chat_completions(request: Request) -> Response | RelayResponse:
    return await _call(request, "chat")


_COMPLETIONS = CompletionsDoor()


async def completions(request: Request) -> Response | RelayResponse:
    return await _call(request, "chat", _COMPLETIONS)


_MESSAGES = MessagesDoor()


async def messages(request: Request) -> Response | RelayResponse:
    return await _call(request, "chat", _MESSAGES)


async def count_message_tokens(request: Request) -> Response:
    """Anthropic's `POST /v1/messages/count_tokens`: the gateway's own count, with the tokenizer it bills by."""
    gateway = _gateway(request)
    rid = request_id(request)
    try:
        raw = await read_body(request, gateway.settings.max_body_bytes)
        count = await gateway.chat.prompt_tokens(request.headers, raw, _MESSAGES.count_body)
    except GatewayError as error:
        return door_error_response(_MESSAGES, error, rid)
    return Response(
        orjson.dumps({"input_tokens": count}), media_type="application/json", headers={"x-request-id": rid}
    )


async def responses(request: Request) -> Response | RelayResponse:
    # A door per request: it echoes (and stores) the request.
    return await _call(request, "chat", ResponsesDoor(_gateway(request).responses))


async def responses_stored(request: Request) -> Response:
    """`GET` or `DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`: the caller's own only."""
    gateway = _gateway(request)
    rid = request_id(request)
    try:
        principal = await gateway.auth.authenticate(request.headers)
        response = await stored_response(gateway.responses, principal, request)
    except GatewayError as error:
        return error_response(error, rid)
    response.headers["x-request-id"] = rid
    return response


async def embeddings(request: Request) -> Response | RelayResponse:
    return await _call(request, "embeddings")


async def models(request: Request) -> Response:
    gateway = _gateway(request)
    rid = request_id(request)
    try:
        principal = await gateway.auth.authenticate(request.headers)
        response = endpoints.models_response(
            gateway.fleet, gateway.access, principal, request.path_params.get("model_id")
        )
    except GatewayError as error:
        return error_response(error, rid)
    response.headers["x-request-id"] = rid
    return response


async def give_feedback(request: Request) -> Response:
    rid = request_id(request)
    try:
        raw = await read_body(request, feedback.MAX_BODY_BYTES)
        response = await _gateway(request).feedback.feedback(request.headers, raw)
    except GatewayError as error:
        return error_response(error, rid)
    response.headers["x-request-id"] = rid
    return response


async def metrics(request: Request) -> Response:
    """Prometheus exposition, for the master key only (tenant ids and spend are in it)."""
    gateway = _gateway(request)
    rid = request_id(request)
    try:
        require_master(await gateway.auth.authenticate(request.headers))
    except GatewayError as error:
        return error_response(error, rid)
    body, content_type = gateway.telemetry.metrics.render()
    return Response(body, headers={"content-type": content_type, "x-request-id": rid})


async def healthz(request: Request) -> Response:
    return Response(
        b'{"status":"ok"}', media_type="application/json", headers={"x-request-id": request_id(request)}
    )


async def readyz(request: Request) -> Response:
    gateway = _gateway(request)
    rid = request_id(request)
    problems = [p for check in gateway.readiness if (p := await check()) is not None]
    if problems:
        return error_response(ServiceUnavailable("not ready: " + "; ".join(problems)), rid)
    return Response(
        orjson.dumps({"status": "ready", "config": gateway.settings.source}),
        media_type="application/json",
        headers={"x-request-id": rid},
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 405:
        allow = exc.headers if isinstance(exc, HTTPException) else None  # Starlette's `Allow` header
        error: GatewayError = MethodNotAllowed(
            f"{request.method} is not allowed on {request.url.path}", headers=allow
        )
    elif status == 404:
        error = NotFound(
            f"no route {request.method} {request.url.path}; this is an OpenAI-compatible API under /v1",
            code="not_found",
        )
    else:
        error = GatewayError("internal error", status=status)
    return error_response(error, request_id(request))


async def _unexpected(request: Request, exc: Exception) -> Response:
    rid = request_id(request)
    if database_unreachable(exc):
        log.warning(
            "%s %s: the database is unreachable (%s)", request.method, request.url.path, type(exc).__name__
        )
        return error_response(database_unavailable(), rid)
    log.exception("unhandled error in %s %s (request %s)", request.method, request.url.path, rid)
    return error_response(GatewayError(f"internal error in the gateway (request {rid})"), rid)


def data_plane_routes() -> list[Route]:
    out = []
    for prefix in ("/v1", ""):
        out += [
            Route(f"{prefix}/chat/completions", chat_completions, methods=["POST"]),
            Route(f"{prefix}/completions", completions, methods=["POST"]),
            Route(f"{prefix}/messages", messages, methods=["POST"]),
            Route(f"{prefix}/messages/count_tokens", count_message_tokens, methods=["POST"]),
            Route(f"{prefix}/responses", responses, methods=["POST"]),
            Route(f"{prefix}/responses/{{response_id}}", responses_stored, methods=["GET", "DELETE"]),
            Route(f"{prefix}/responses/{{response_id}}/input_items", responses_stored, methods=["GET"]),
            Route(f"{prefix}/embeddings", embeddings, methods=["POST"]),
            Route(f"{prefix}/models", models, methods=["GET"]),
            Route(f"{prefix}/models/{{model_id:path}}", models, methods=["GET"]),
            Route(f"{prefix}/feedback", give_feedback, methods=["POST"]),
        ]
    return [
        *out,
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]


def create_app(
    settings: Settings,
    *,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    rng: random.Random | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    background: Sequence[Callable[[ControlPlane], Coroutine[Any, Any, None]]] = (),
) -> Starlette:
    """The gateway as an ASGI app. `upstream_transport` replaces the network (tests: respx, MockTransport).

    `extra_routes` are served beside the data plane (the admin API and `/v1/usage`, added by
    `tiergate.admin.server`, since the gateway never imports the control plane; they find the
    `ControlPlane` at `app.state.control`); `background` tasks are started once the gateway is open and
    cancelled at shutdown (the periodic promote job).
    """
    settings = with_known_prices(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for notice in (*settings.created, *settings.notices):
            log.warning("%s", notice)
        log.log(
            logging.INFO if settings.master_key else logging.WARNING,
            "%s",
            master_key_line(settings.master_key, settings.master_key_source),
        )
        gateway = await open_gateway(settings, upstream_transport=upstream_transport, rng=rng)
        app.state.gateway, app.state.control = gateway, gateway.control
        tasks = [asyncio.ensure_future(task(gateway.control)) for task in background]
        # Everything made so far lives as long as the process: moving it out of the collector's reach keeps
        # full collections short (they ran into tens of ms and showed up in the p99 latency).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            for task in tasks:  # before the gateway closes: they use its database and route-table store
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await gateway.aclose()

    return GatewayApp(
        routes=[*data_plane_routes(), *extra_routes],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
    )
