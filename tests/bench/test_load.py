from __future__ import annotations

import json

import pytest

from bench.harness.load import chat_body, parse

WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:1/v1/chat/completions
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
BENCH_RESULT {"requests":3000,"duration_us":2000000,"bytes":1,\
"errors":{"connect":0,"read":1,"write":0,"status":2,"timeout":0},\
"latency_us":{"p50":5000,"p90":7000,"p99":12500,"max":30000,"mean":5200.5}}
"""


def test_the_result_line_is_parsed_into_rates_and_milliseconds() -> None:
    r = parse(WRK_OUTPUT)
    assert r.requests == 3000 and r.rps == 1500
    assert (r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms) == (5.0, 7.0, 12.5, 30.0)
    assert r.errors == 3  # a non-2xx answer is an error, not a fast success


def test_output_without_a_result_line_is_an_error_showing_wrks_output() -> None:
    with pytest.raises(ValueError, match="unable to connect"):
        parse("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_the_body_asks_for_a_stream_only_when_told() -> None:
    assert "stream" not in json.loads(chat_body("student", stream=False))
    doc = json.loads(chat_body("ta", stream=True))
    assert doc["stream"] is True and doc["model"] == "ta" and doc["messages"][-1]["role"] == "user"
