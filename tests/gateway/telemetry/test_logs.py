"""The access log: one structured line per call, never a key, prompt text only when asked for."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import respx
from httpx import Response

from tests.gateway.conftest import AUTH, MASTER, completion, gateway, settings, sse
from tiergate.gateway.accounting.auth import Principal
from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.config.settings import Settings, parse_settings
from tiergate.gateway.errors import RateLimited
from tiergate.gateway.telemetry.logs import AccessLog, configure_logging, logging_options

PROMPT = "PROMPT-TEXT-7731 please keep this private"
ANSWER = "ANSWER-TEXT-9912 here is the private reply"
UPSTREAM_KEYS = ("sk-upstream-SECRET-a", "sk-upstream-SECRET-b", "sk-upstream-SECRET-t")
WRONG_KEY = "sk-proj-CALLER-TYPO-0042"


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """Root logging to a buffer for one test, restored afterwards (configure_logging replaces handlers)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    yield buffer
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def _config(**extra: Any) -> Settings:
    doc = {
        "master_key": MASTER,
        "access_log": True,
        "tiers": {
            "student": [
                {"model": "small-a", "api_base": "http://up-a/v1", "api_key": UPSTREAM_KEYS[0]},
                {"model": "small-b", "api_base": "http://up-b/v1", "api_key": UPSTREAM_KEYS[1]},
            ],
            "teacher": [{"model": "big", "api_base": "http://up-t/v1", "api_key": UPSTREAM_KEYS[2]}],
        },
        "upstream": {"max_retries": 0, "backoff_base_s": 0.001, "load_balance": "ordered"},
        **extra,
    }
    return parse_settings(doc, env={})


def _lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in buffer.getvalue().splitlines()]


def _access(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [line for line in _lines(buffer) if line["logger"] == "tiergate.access"]


async def _traffic(config: Settings) -> None:
    """Answered, streamed, refused and failed calls, all carrying the prompt; the upstream echoes it back."""
    router = respx.Router(assert_all_called=False)
    router.post("http://up-a/v1/chat/completions").mock(
        side_effect=[
            Response(200, json=completion("small-a", ANSWER)),
            Response(
                200, content=sse(completion("small-a", ANSWER)), headers={"content-type": "text/event-stream"}
            ),
            Response(400, json={"error": {"message": f"bad: {PROMPT}", "type": "invalid_request_error"}}),
            Response(500, text=f"crashed on {PROMPT}"),
        ]
    )
    router.post("http://up-b/v1/chat/completions").mock(return_value=Response(500, text=f"also {PROMPT}"))
    router.post("http://up-t/v1/chat/completions").mock(return_value=Response(503, text=PROMPT))
    body = {"model": "student", "messages": [{"role": "user", "content": PROMPT}]}
    async with gateway(router, config) as (client, _):
        assert (await client.post("/v1/chat/completions", json=body, headers=AUTH)).status_code == 200
        stream = await client.post("/v1/chat/completions", json={**body, "stream": True}, headers=AUTH)
        assert stream.status_code == 200
        bad_key = {"authorization": f"Bearer {WRONG_KEY}"}
        assert (await client.post("/v1/chat/completions", json=body, headers=bad_key)).status_code == 401
        assert (await client.post("/v1/chat/completions", json=body, headers=AUTH)).status_code == 400
        assert (await client.post("/v1/chat/completions", json=body, headers=AUTH)).status_code == 502


async def test_logs_never_hold_a_key_or_prompt_text(output: io.StringIO) -> None:
    configure_logging("debug", "json", output)  # every library's debug output too
    await _traffic(_config())
    text = output.getvalue()
    assert len(_access(output)) == 5, text
    for secret in (MASTER, WRONG_KEY, *UPSTREAM_KEYS, "PROMPT-TEXT-7731", "ANSWER-TEXT-9912"):
        assert secret not in text


async def test_log_prompts_adds_the_conversation_but_still_no_key(output: io.StringIO) -> None:
    configure_logging("info", "json", output)
    await _traffic(_config(log_prompts=True))
    answered = _access(output)[0]
    assert answered["request"]["messages"][0]["content"] == PROMPT
    assert answered["answer"]["choices"][0]["message"]["content"] == ANSWER
    text = output.getvalue()
    for secret in (MASTER, WRONG_KEY, *UPSTREAM_KEYS):
        assert secret not in text


async def test_one_line_per_call_with_ids_routing_and_timings(output: io.StringIO) -> None:
    configure_logging("info", "json", output)
    await _traffic(_config())
    ok, stream, unauthorized, rejected, failed = _access(output)
    assert ok["message"] == "chat 200" and ok["level"] == "info"
    assert ok["request_id"].startswith("req_") and ok["tier"] == "student" and ok["model"] == "small-a"
    assert ok["route_reason"] and ok["cache"] == "miss" and ok["status"] == 200
    for field in ("latency_ms", "upstream_ms", "overhead_ms", "prompt_tokens", "cost_usd"):
        assert isinstance(ok[field], int | float)
    assert stream["stream"] is True and "ttft_ms" in stream
    assert (unauthorized["status"], unauthorized["outcome"], unauthorized["error"]) == (
        401,
        "refused",
        "invalid_api_key",
    )
    assert rejected["status"] == 400 and rejected["error"] == "upstream_rejected"
    assert failed["status"] == 502 and failed["outcome"] == "error" and failed["attempts"] == 3
    assert "every upstream deployment failed" in failed["error_message"]


def test_tenant_and_key_ids_are_logged_for_tenant_keys(output: io.StringIO) -> None:
    configure_logging("info", "json", output)
    record = CallRecord(
        request_id="req_1", endpoint="chat", principal=Principal("key", tenant_id="acme", key_id="key_12"),
        requested_model="auto", started_at=time.time(), status_code=429, outcome="refused",
        error="rate_limit_exceeded",
    )  # fmt: skip
    AccessLog().refusal(record, RateLimited("slow down", retry_after_s=1))
    (line,) = _access(output)
    assert (line["tenant_id"], line["key_id"], line["status"]) == ("acme", "key_12", 429)


def test_text_format_and_level(output: io.StringIO) -> None:
    configure_logging("warning", "text", output)
    record = CallRecord(
        request_id="req_2", endpoint="chat", principal=Principal("master"), requested_model="auto",
        started_at=time.time(), tier="ta", escalations=("student->ta: HTTP 500",),
    )  # fmt: skip
    AccessLog().sink(record)
    logging.getLogger("tiergate").warning("something odd")
    assert "request_id" not in output.getvalue()  # access lines are info: below the level
    configure_logging("info", "text", output)
    AccessLog().sink(record)
    last = output.getvalue().splitlines()[-1]
    assert " INFO tiergate.access: chat 200 " in last
    assert (
        "request_id=req_2" in last and "tier=ta" in last and 'escalations=["student->ta: HTTP 500"]' in last
    )
    assert "something odd" in output.getvalue()


def test_logging_options_precedence() -> None:
    config = settings(log_level="warning", log_format="json")
    assert logging_options(config, {}) == ("warning", "json")
    assert logging_options(config, {"TIERGATE_LOG_LEVEL": "ERROR", "TIERGATE_LOG_FORMAT": "text"}) == (
        "error",
        "text",
    )
    assert logging_options(config, {"TIERGATE_LOG_LEVEL": "error"}, level="debug") == ("debug", "json")
    with pytest.raises(ValueError, match="log format"):
        configure_logging("info", "xml")
