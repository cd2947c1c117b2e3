"""Request ids: the caller's own when it is a sane token, else a new one unique across replicas."""

from __future__ import annotations

import itertools
import os

from starlette.requests import Request

# New ids: a random per-process prefix and a counter (unique across replicas without a syscall per request).
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)
_SAFE_ID = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def request_id(request: Request) -> str:
    """The caller's x-request-id when it is a sane token (so their logs line up with ours), else a new one."""
    given = request.headers.get("x-request-id")
    if given and len(given) <= 128 and frozenset(given.encode()) <= _SAFE_ID:
        return given
    return f"req_{_ID_PREFIX}{next(_ID_COUNTER):012x}"
