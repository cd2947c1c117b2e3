from __future__ import annotations

from typing import Any

import orjson
import pytest

from tiergate.gateway.errors import BadRequest
from tiergate.gateway.http.bodies import (
    MAX_CHOICES,
    MAX_EMBEDDING_INPUTS,
    check_output_limit,
    parse_chat,
    parse_embeddings,
    parse_object,
    with_fields,
)

MSG = [{"role": "user", "content": "hi"}]


def body(**fields: Any) -> bytes:
    return orjson.dumps({"model": "auto", "messages": MSG, **fields})


def test_parse_chat_reads_only_what_the_gateway_needs() -> None:
    req = parse_chat(
        body(stream=True, stream_options={"include_usage": True}, max_completion_tokens=50, n=2, foo={"x": 1})
    )
    assert (req.model, req.stream, req.include_usage, req.max_tokens, req.n) == ("auto", True, True, 50, 2)
    assert req.body["foo"] == {"x": 1}
    assert parse_chat(body(max_tokens=7)).max_tokens == 7


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"", None),
        (b"{not json", None),
        (b"[1, 2]", None),
        (orjson.dumps({"messages": MSG}), "model"),
        (orjson.dumps({"model": 3, "messages": MSG}), "model"),
        (orjson.dumps({"model": "auto"}), "messages"),
        (orjson.dumps({"model": "auto", "messages": []}), "messages"),
        (orjson.dumps({"model": "auto", "messages": ["hi"]}), "messages[0]"),
        (
            orjson.dumps({"model": "auto", "messages": [{"role": "wizard", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": 5}]}),
            "messages[0].content",
        ),
        (body(stream="yes"), "stream"),
        (body(stream_options={"include_usage": True}), "stream_options"),
        (body(temperature="hot"), "temperature"),
        (body(temperature=True), "temperature"),
        (body(max_tokens=0), "max_tokens"),
        (body(max_tokens=1.5), "max_tokens"),
        (body(n=-1), "n"),
        (body(n=0), "n"),
        (body(n=129), "n"),
        (body(n=10**12), "n"),
        (body(max_completion_tokens=0), "max_completion_tokens"),
        (body(max_completion_tokens=5, max_tokens=-1), "max_tokens"),
        (body(tools={"a": 1}), "tools"),
        (body(response_format="json"), "response_format"),
        (body(seed="1"), "seed"),
        (body(stop=5), "stop"),
    ],
)
def test_bad_chat_bodies_are_400s_naming_the_field(raw: bytes, param: str | None) -> None:
    with pytest.raises(BadRequest) as info:
        parse_chat(raw)
    assert info.value.status == 400
    assert info.value.param == param
    assert orjson.loads(info.value.body())["error"]["type"] == "invalid_request_error"


def test_n_is_bounded_as_openai_bounds_it_and_the_message_says_the_range() -> None:
    assert parse_chat(body(n=MAX_CHOICES)).n == 128 and parse_chat(body()).n == 1
    with pytest.raises(BadRequest) as info:
        parse_chat(body(n=10**12, max_tokens=5))
    assert info.value.param == "n" and "from 1 to 128" in info.value.message


def test_max_tokens_above_the_output_limit_is_refused_naming_the_field_given() -> None:
    request = parse_chat(body(max_completion_tokens=4097))
    check_output_limit(parse_chat(body(max_tokens=4096)), 4096, "student")
    with pytest.raises(BadRequest) as info:
        check_output_limit(request, 4096, "student")
    assert info.value.param == "max_completion_tokens"
    assert "from 1 to 4096" in info.value.message and "'student'" in info.value.message


@pytest.mark.parametrize(
    "value", ["hello", ["a", "b"], [1, 2, 3], [[1, 2], [3]], ["a", [4]], ["x"] * MAX_EMBEDDING_INPUTS]
)
def test_embeddings_inputs_openai_accepts(value: Any) -> None:
    assert parse_embeddings(orjson.dumps({"model": "e", "input": value})).model == "e"


@pytest.mark.parametrize(
    "value",
    [None, 3, "", [], [""], ["a", ""], [[]], ["a", 3], [True], [[1, "2"]], [{"a": 1}], ["x"] * 2049],
)
def test_bad_embeddings_inputs_are_400s_naming_input(value: Any) -> None:
    doc = {"model": "e"} if value is None else {"model": "e", "input": value}
    with pytest.raises(BadRequest) as info:
        parse_embeddings(orjson.dumps(doc))
    assert info.value.param == "input" and "2048" in info.value.message
    with pytest.raises(BadRequest) as missing_model:
        parse_embeddings(b'{"input": "x"}')
    assert missing_model.value.param == "model"


def test_with_fields_splices_without_touching_anything_else() -> None:
    raw = b'{"model" : "auto",  "messages":[{"role":"user","content":"say \\"model\\": \\"auto\\""}], "temperature": 0.70, "x": 1e2}'
    out = with_fields(raw, parse_object(raw), {"model": "gpt-4o-mini"})
    assert out == raw.replace(b'"auto",', b'"gpt-4o-mini",', 1)
    assert b"0.70" in out and b"1e2" in out  # the client's number spellings survive


def test_with_fields_inserts_new_keys_first() -> None:
    raw = b'{"model":"m","messages":[],"stream":true}'
    out = with_fields(raw, parse_object(raw), {"stream_options": {"include_usage": True}})
    assert out == b'{"stream_options":{"include_usage":true},"model":"m","messages":[],"stream":true}'


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"auto","metadata":{"model":"auto"}}',  # the same key nested: ambiguous, re-serialise
        b'{"\\u006dodel":"auto","x":{"model":"auto"}}',  # an escaped spelling of the top-level key
        b'{"model":"auto","stream_options":{"include_usage":false}}',  # replacing an object value
    ],
)
def test_with_fields_falls_back_to_reserialising_when_a_splice_is_unsafe(raw: bytes) -> None:
    updates = {"model": "m2", "stream_options": {"include_usage": True}}
    out = with_fields(raw, parse_object(raw), updates)
    assert orjson.loads(out) == {**orjson.loads(raw), **updates}
