"""The demo's stand-in models: every answer is labelled as a stand-in, and stays valid for what was asked."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest

from tiergate.admin.standin import create_standin_app

LABEL = "[stand-in teacher model, not a real LLM]"
MESSAGES = [{"role": "user", "content": "weather in Paris?"}]
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["c", "f"]},
        "days": {"type": "integer"},
        "date": {"type": "string", "format": "date"},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
]


async def post(body: dict[str, Any]) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_standin_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://standin") as client:
        return await client.post("/v1/chat/completions", json={"model": "standin-teacher", **body})


async def test_a_tool_call_carries_the_label_in_content_and_schema_valid_arguments() -> None:
    body = {
        "messages": MESSAGES,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    message = (await post(body)).json()["choices"][0]["message"]
    assert message["content"] == LABEL
    (call,) = message["tool_calls"]
    arguments = json.loads(call["function"]["arguments"])
    jsonschema.validate(arguments, WEATHER)
    assert call["function"]["name"] == "get_weather" and set(arguments) == {"city", "unit", "days", "date"}
    assert arguments["city"].startswith(LABEL) and arguments["date"] == "example"  # a date format: left alone


async def test_a_streamed_tool_call_carries_the_label_too() -> None:
    r = await post({"messages": MESSAGES, "tools": TOOLS[1:], "stream": True})
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("content") or "" for d in deltas).strip() == LABEL
    (call,) = [tc for d in deltas for tc in d.get("tool_calls") or []]
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("schema", "strict", "labelled_field", "labelled"),
    [
        ({"type": "object", "properties": {"answer": {"type": "integer"}}}, False, True, True),
        # strict, and nothing a label fits in: only the model name says stand-in
        ({"type": "object", "properties": {"answer": {"type": "integer"}}}, True, False, False),
        ({**WEATHER, "required": ["city"]}, False, False, True),  # closed: the label is in the city string
    ],
)
async def test_a_json_schema_answer_is_labelled_where_the_schema_allows(
    schema: dict[str, Any], strict: bool, labelled_field: bool, labelled: bool
) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": strict}}
    content = (await post({"messages": MESSAGES, "response_format": fmt})).json()["choices"][0]["message"][
        "content"
    ]
    value = json.loads(content)
    jsonschema.validate(value, schema)
    assert ("stand_in" in value) is labelled_field and (LABEL in content) is labelled
    assert value.get("stand_in", LABEL) == LABEL


async def test_text_and_json_mode_are_labelled() -> None:
    text = (await post({"messages": MESSAGES})).json()["choices"][0]["message"]
    assert text["content"] == f"{LABEL} You asked: weather in Paris?" and "tool_calls" not in text
    fmt = {"type": "json_object"}
    content = (await post({"messages": MESSAGES, "response_format": fmt})).json()["choices"][0]["message"][
        "content"
    ]
    assert json.loads(content)["stand_in"] == LABEL
