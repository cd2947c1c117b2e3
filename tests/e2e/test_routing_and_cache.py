"""Cascade and response cache through real processes and the official openai SDK."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml

from tests.e2e.conftest import Stack, gateway_config, sdk_client
from tests.support import fake_upstream, free_port, running, wait_for

pytestmark = pytest.mark.e2e
MESSAGES = [{"role": "user", "content": "What is two plus two?"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("gateway")
    with fake_upstream() as upstream:
        config = gateway_config(upstream)
        config["routing"] = {
            "strategy": "cascade",
            "cascade": {
                "verifiers": ["truncated", "refusal", "json", "tool_args", "logprob"],
                "min_mean_logprob": -1.0,
            },
        }
        path = workdir / "tiergate.yaml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        args = [sys.executable, "-m", "tiergate", "serve", "--config", str(path), "--port", str(port)]
        with running(args, url=f"http://127.0.0.1:{port}/healthz", cwd=workdir):
            yield Stack(f"http://127.0.0.1:{port}/v1", upstream)


@pytest.fixture
def gw(stack: Stack) -> Stack:
    stack.reset()
    return stack


def client(gw: Stack) -> openai.OpenAI:
    return sdk_client(gw.url)


@pytest.mark.parametrize(
    ("step", "fields", "verifier"),
    [
        ({"content": "Two plus", "finish_reason": "length"}, {}, "truncated"),
        ({"content": "I'm sorry, but I can't help with that."}, {}, "refusal"),
        ({"content": "{not json"}, {"response_format": {"type": "json_object"}}, "json"),
        ({"content": "Four, I think", "logprob": -2.0}, {}, "logprob"),
    ],
)
def test_cascade_escalates_weak_answers(
    gw: Stack, step: dict[str, object], fields: dict[str, object], verifier: str
) -> None:
    gw.script("student-1", step)
    gw.script("teacher-1", {"content": '{"answer": 4}'})
    raw = client(gw).chat.completions.with_raw_response.create(model="auto", messages=MESSAGES, **fields)  # type: ignore[call-overload]
    assert raw.headers["x-tiergate-tier"] == "teacher" and raw.headers["x-tiergate-escalations"] == "1"
    completion = raw.parse()
    assert completion.choices[0].message.content == '{"answer": 4}' and completion.choices[0].logprobs is None
    sent = gw.received()
    assert [r["body"]["model"] for r in sent] == ["student-1", "teacher-1"]
    assert sent[0]["body"]["logprobs"] is True and "logprobs" not in sent[1]["body"]


def test_cascade_streams_a_verified_student_answer(gw: Stack) -> None:
    stream = client(gw).chat.completions.create(
        model="auto", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )  # type: ignore[call-overload]
    chunks = list(stream)
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == "echo: What is two plus two?"
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert [r["body"]["model"] for r in gw.received()] == ["student-1"]


def test_cached_answer_is_replayed_as_a_stream_through_the_sdk(gw: Stack) -> None:
    c = client(gw)
    messages = [{"role": "user", "content": "Cache me, deterministically."}]
    first = c.chat.completions.with_raw_response.create(model="auto", messages=messages, temperature=0)  # type: ignore[arg-type]
    assert first.headers["x-tiergate-cache"] == "miss"

    def hit() -> tuple[list[object], int] | None:
        before = len(gw.received())
        raw = c.chat.completions.with_raw_response.create(
            model="auto", messages=messages, temperature=0, stream=True
        )  # type: ignore[call-overload]
        chunks = list(raw.parse())
        return (chunks, len(gw.received()) - before) if raw.headers["x-tiergate-cache"] == "exact" else None

    # The write is queued off the response path: poll until it lands.
    chunks, upstream_calls = wait_for(hit, timeout=5, what="the cached entry")
    assert upstream_calls == 0
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)  # type: ignore[attr-defined]
    assert text == first.parse().choices[0].message.content
    assert all(ch.usage is None for ch in chunks)  # type: ignore[attr-defined]
