"""Logging: one structured line per call, and the process-wide format (text for people, JSON for machines).

The access line carries identifiers, routing and timings. It never carries a key (the record has none: only
the key's id) and carries prompt or answer text only when `log_prompts: true` says so explicitly.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

import orjson

from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.config.settings import LOG_FORMATS, LOG_LEVELS, Settings
from tiergate.gateway.errors import GatewayError

ACCESS_LOGGER = "tiergate.access"
_access = logging.getLogger(ACCESS_LOGGER)
_MAX_MODEL_CHARS = 200  # the requested model is caller text: keep a line a line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the structured `fields` of a record become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            doc.update(fields)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if not fields:
            return line
        pairs = (
            f"{k}={orjson.dumps(v).decode() if not isinstance(v, str | int | float) else v}"
            for k, v in fields.items()
        )
        return line + " " + " ".join(pairs)


def configure_logging(level: str, fmt: str, stream: IO[str] | None = None) -> None:
    """Replace the root logger's handlers with one writing `fmt` lines at `level` to `stream` (stderr)."""
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Alembic announces every plugin it loads at INFO; only its warnings matter to an operator.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))


def logging_options(
    settings: Settings, env: Mapping[str, str] | None = None, *, level: str | None = None
) -> tuple[str, str]:
    """(level, format): an explicit `level` (the CLI flag), else TIERGATE_LOG_LEVEL/_FORMAT, else the config."""
    env = os.environ if env is None else env
    return (
        (level or env.get("TIERGATE_LOG_LEVEL") or settings.log_level).lower(),
        env.get("TIERGATE_LOG_FORMAT") or settings.log_format,
    )


class AccessLog:
    """The per-call line, as a sink for answered calls and a refusal hook for the rest."""

    def __init__(self, *, log_prompts: bool = False) -> None:
        self.log_prompts = log_prompts

    def sink(self, record: CallRecord) -> None:
        if _access.isEnabledFor(logging.INFO):
            _access.info("%s %s", record.endpoint, record.status_code, extra={"fields": self.fields(record)})

    def refusal(self, record: CallRecord, error: GatewayError) -> None:
        if _access.isEnabledFor(logging.INFO):
            fields = self.fields(record)
            fields["error_type"] = error.type
            # Messages are the gateway's own words (an upstream's body is passed to the caller, not here).
            fields["error_message"] = error.message
            _access.info("%s %s", record.endpoint, record.status_code, extra={"fields": fields})

    def fields(self, record: CallRecord) -> dict[str, Any]:
        line: dict[str, Any] = {
            "request_id": record.request_id,
            "endpoint": record.endpoint,
            "status": record.status_code,
            "outcome": record.outcome,
            "tenant_id": record.principal.tenant_id,
            "key_id": record.principal.key_id,
            "requested_model": record.requested_model[:_MAX_MODEL_CHARS],
            "tier": record.tier,
            "model": record.model,
            "deployment_id": record.deployment_id,
            "stream": record.stream,
            "cache": record.cache,
            "route_reason": record.route_reason,
            "latency_ms": round(record.latency_s * 1000, 3),
            "upstream_ms": round(record.upstream_s * 1000, 3),
            "overhead_ms": round(record.overhead_s * 1000, 3),
            "ttft_ms": None if record.ttft_s is None else round(record.ttft_s * 1000, 3),
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "usage_source": record.usage_source,
            "cost_usd": record.cost_nano / 1e9,
            "attempts": record.attempts,
            "escalations": list(record.escalations),
            "error": record.error,
        }
        if self.log_prompts:
            line["request"] = record.request_body
            line["answer"] = record.answer
        return {k: v for k, v in line.items() if v not in (None, "", [])}
