"""Every error that leaves the gateway, in OpenAI's shape and with the status OpenAI would use.

    GatewayError                      {"error": {"message", "type", "param", "code"}}
    ├── BadRequest            400     invalid_request_error (malformed JSON, wrong types, bad values)
    ├── Unauthorized          401     invalid_api_key
    ├── PermissionDenied      403     model or route not allowed for this key
    ├── NotFound              404     unknown model (model_not_found) or route
    ├── MethodNotAllowed      405
    ├── PayloadTooLarge       413     body over the configured limit
    ├── RateLimited           429     rate_limit_exceeded, with Retry-After
    ├── InsufficientQuota     429     insufficient_quota: the budget cannot hold the request
    ├── UpstreamRejected      4xx     the upstream refused the request itself (its own error body is kept)
    ├── UpstreamFailed        5xx     every deployment and retry failed (502, or 504 on timeouts)
    └── ServiceUnavailable    503     a dependency of the gateway is down, or nothing is configured

The official SDK maps these statuses onto its own exception classes, so callers need no tiergate code.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

__all__ = [
    "BadRequest",
    "GatewayError",
    "InsufficientQuota",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "ServiceUnavailable",
    "Unauthorized",
    "UpstreamFailed",
    "UpstreamRejected",
]


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> bytes:
        return orjson.dumps(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        )


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "invalid_request_error"
    code = "model_not_allowed"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        # Whole seconds, rounded up: clients that honour it must not come back too early.
        self.headers["retry-after"] = str(max(1, int(-(-retry_after_s // 1))))


class InsufficientQuota(GatewayError):
    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class UpstreamRejected(GatewayError):
    """An upstream's 4xx verdict on the request (e.g. context too long), passed on in its own words."""

    type = "invalid_request_error"
    code = "upstream_rejected"

    def __init__(self, status: int, raw: bytes) -> None:
        super().__init__(f"upstream rejected the request with HTTP {status}", status=status)
        self._raw = raw

    def body(self) -> bytes:
        return upstream_error_body(self.status, self._raw)


class UpstreamFailed(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_failed"


class ServiceUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


def upstream_error_body(status: int, raw: bytes) -> bytes:
    """An upstream's own 4xx body when it is already OpenAI-shaped, so the caller sees the real reason."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    if (
        isinstance(doc, dict)
        and isinstance(doc.get("error"), dict)
        and isinstance(doc["error"].get("message"), str)
    ):
        return raw
    text = raw[:500].decode("utf-8", "replace").strip() or f"HTTP {status}"
    return BadRequest(f"upstream rejected the request: {text}", code="upstream_rejected").body()
