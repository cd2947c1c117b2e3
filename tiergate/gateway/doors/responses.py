"""The OpenAI Responses door (`POST /v1/responses`): input items become chat messages, the answer a `response`.

Translated: `input` (a string, or message / `function_call` / `function_call_output` items), `instructions`,
function `tools`, `tool_choice`, `text.format`, `max_output_tokens`, `temperature`, `top_p`, `user`,
`parallel_tool_calls`, `stream`; `metadata` is echoed in the answer, not sent upstream.

Stored state (`responses_store.py`): `store` (OpenAI's default: true) keeps the response and its input in
the database; `previous_response_id` makes the stored conversation it ends (each response's input and
output, oldest first; not its `instructions`) the start of this request's. A stored response gets a fresh
id (`resp_` + 32 hex); one that is not stored is named after the chat completion.

Refused with a 400 naming the field: built-in tools (web search, file search, code interpreter, computer use,
...; the gateway cannot run them), `conversation` (the Conversations API), `background`, `include`,
`reasoning` (the routed tier's model may not reason, and no reasoning items could be returned), prompt
templates, and any field this door does not know, rather than dropping what the caller asked for.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from tiergate.gateway.accounting.auth import MASTER, Principal
from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.doors.responses_output import RequestEcho, response_from_completion
from tiergate.gateway.doors.responses_store import ResponseStore
from tiergate.gateway.doors.responses_stream import ResponsesStream
from tiergate.gateway.errors import BadRequest, GatewayError
from tiergate.gateway.http.bodies import parse_object

# Fields sent on to the chat pipeline unchanged.
_SAME_IN_CHAT = ("model", "temperature", "top_p", "user", "stream")
# Fields handled by the translation below (or echoed only).
_TRANSLATED = (
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "text",
    "max_output_tokens",
    "metadata",
    "parallel_tool_calls",
    "stream_options",
    "store",
    "previous_response_id",
)
# Fields accepted only with the value that asks for nothing this gateway cannot do.
_ONLY_DEFAULT: dict[str, tuple[Any, ...]] = {
    "background": (None, False),
    "include": (None, []),
    "reasoning": (None, {}),
    "truncation": (None, "disabled"),
    "service_tier": (None, "auto", "default"),
}
_WHY_NOT: dict[str, str] = {
    "background": "background responses are not supported; this gateway answers while the request is open",
    "include": "no extra output (reasoning, search results, logprobs) is available through this gateway",
    "reasoning": "reasoning controls are not supported: the routed tier's model may not reason",
    "truncation": "only 'disabled' is supported: the gateway does not drop input to fit the context",
    "service_tier": "service tiers are chosen by the gateway's routing",
}
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"'{param}' must be a string", param=param)
    return value


def _content(content: Any, role: str, param: str) -> str | list[dict[str, Any]]:
    """Chat content for a Responses message's `content` (a string or parts)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"'{param}' must be a string or an array of content parts", param=param)
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        where = f"{param}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": _text(part.get("text"), f"{where}.text")})
        elif kind == "refusal" and role == "assistant":
            parts.append({"type": "text", "text": _text(part.get("refusal"), f"{where}.refusal")})
        elif kind == "input_image" and role == "user":
            if not isinstance(part.get("image_url"), str):
                raise BadRequest(
                    f"'{where}' needs an 'image_url' (a URL or data URL); uploaded file ids are not supported",
                    param=where,
                )
            parts.append(
                {
                    "type": "image_url",
                    "image_url": {"url": part["image_url"], "detail": part.get("detail") or "auto"},
                }
            )
        else:
            raise BadRequest(f"'{where}' of type {kind!r} is not supported in a {role} message", param=where)
    if role != "user" and all(p["type"] == "text" for p in parts):  # plain text where chat wants a string
        return "".join(p["text"] for p in parts)
    return parts


def _tool_output(output: Any, param: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list) and all(
        isinstance(p, dict) and p.get("type") == "input_text" for p in output
    ):
        return "".join(_text(p.get("text"), param) for p in output)
    raise BadRequest(f"'{param}' must be a string or an array of input_text parts", param=param)


def _input_items(value: Any) -> list[Any]:
    """The `input` as items: a string is one user message."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise BadRequest(
            "'input' is required and must be a string or a non-empty array of items", param="input"
        )
    return value


_ITEM_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def stored_items(value: Any, name: str) -> list[dict[str, Any]]:
    """The (checked) `input` as the items a stored response keeps: each with a type and an id."""
    items = []
    for i, item in enumerate(_input_items(value)):
        kind = item.get("type", "message")
        items.append({"id": f"{_ITEM_PREFIX.get(kind, 'item')}_{name}_in{i}", **item, "type": kind})
    return items


def conversation_messages(
    body: dict[str, Any], history: Sequence[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """The chat messages of `body`: its instructions, then the stored `history` (a previous response's
    conversation), then its input."""
    messages = _messages([*history, *_input_items(body["input"])])
    if body.get("instructions") is not None:
        messages.insert(0, {"role": "system", "content": _text(body["instructions"], "instructions")})
    return messages


def _messages(items: list[Any]) -> list[dict[str, Any]]:
    """Chat messages for input items; consecutive function calls become one assistant message."""
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"'{where}' must be an object", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            role = _ROLES.get(item.get("role"))  # type: ignore[arg-type]
            if role is None:
                raise BadRequest(f"'{where}.role' must be one of {', '.join(_ROLES)}", param=f"{where}.role")
            out.append({"role": role, "content": _content(item.get("content"), role, f"{where}.content")})
        elif kind == "function_call":
            call = {
                "id": _text(item.get("call_id"), f"{where}.call_id"),
                "type": "function",
                "function": {
                    "name": _text(item.get("name"), f"{where}.name"),
                    "arguments": _text(item.get("arguments"), f"{where}.arguments"),
                },
            }
            if out and out[-1]["role"] == "assistant":
                out[-1].setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": _text(item.get("call_id"), f"{where}.call_id"),
                    "content": _tool_output(item.get("output"), f"{where}.output"),
                }
            )
        else:
            raise BadRequest(
                f"'{where}' of type {kind!r} is not supported: this gateway takes messages, function calls "
                "and function call outputs",
                param=where,
            )
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be an array", param="tools")
    out = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise BadRequest(
                f"'tools[{i}]' of type {kind!r} is not supported: the gateway cannot run built-in tools; "
                "only function tools are",
                param=f"tools[{i}]",
            )
        function = {"name": _text(tool.get("name"), f"tools[{i}].name")}
        for name in ("description", "parameters", "strict"):
            if tool.get(name) is not None:
                function[name] = tool[name]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": _text(choice.get("name"), "tool_choice.name")}}
    raise BadRequest(
        "'tool_choice' must be 'auto', 'none', 'required' or a function ({\"type\": \"function\", \"name\": ...})",
        param="tool_choice",
    )


def _response_format(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, dict):
        raise BadRequest("'text' must be an object", param="text")
    if text.get("verbosity") is not None:
        raise BadRequest("'text.verbosity' is not supported by this gateway", param="text.verbosity")
    fmt = text.get("format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {"name": _text(fmt.get("name"), "text.format.name"), "schema": fmt.get("schema")}
        if not isinstance(schema["schema"], dict):
            raise BadRequest("'text.format.schema' must be an object", param="text.format.schema")
        for name in ("description", "strict"):
            if fmt.get(name) is not None:
                schema[name] = fmt[name]
        return {"type": "json_schema", "json_schema": schema}
    raise BadRequest("'text.format.type' must be 'text', 'json_object' or 'json_schema'", param="text.format")


def responses_chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions body equivalent to the Responses body `body` (BadRequest if there is none)."""
    for name, value in body.items():
        if name in _ONLY_DEFAULT:
            if value not in _ONLY_DEFAULT[name]:
                raise BadRequest(f"'{name}' is not supported: {_WHY_NOT[name]}", param=name)
        elif name not in _SAME_IN_CHAT and name not in _TRANSLATED:
            raise BadRequest(f"'{name}' is not supported by this gateway's Responses door", param=name)
    if "input" not in body:
        raise BadRequest("'input' is required", param="input")
    if body.get("store") not in (None, True, False):
        raise BadRequest("'store' must be true or false", param="store")
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise BadRequest("'previous_response_id' must be a response id", param="previous_response_id")
    chat = {name: body[name] for name in _SAME_IN_CHAT if body.get(name) is not None}
    chat["messages"] = conversation_messages(body)
    if body.get("tools") is not None and (tools := _tools(body["tools"])):
        chat["tools"] = tools  # an empty list is no tools; chat refuses `[]`
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    if body.get("tool_choice") is not None:
        choice = _tool_choice(body["tool_choice"])
        if "tools" in chat:  # chat refuses a tool choice without tools; with none there is nothing to choose
            chat["tool_choice"] = choice
    if body.get("text") is not None and (response_format := _response_format(body["text"])) is not None:
        chat["response_format"] = response_format
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
        raise BadRequest("'metadata' must be an object", param="metadata")
    if chat.get("stream"):
        chat["stream_options"] = {"include_usage": True}  # response.completed carries the usage
    return chat


class ResponsesDoor:
    """`/v1/responses` over the chat pipeline; one door per request, since the answer echoes the request's
    settings (instructions, tools, text format, ...) and stores it. Its errors are OpenAI's, as the chat
    door's are."""

    endpoint = "responses"

    def __init__(self, store: ResponseStore) -> None:
        self._store = store
        self._echo = RequestEcho({})
        self._principal = MASTER
        self._input: list[dict[str, Any]] = []

    async def chat_body(self, principal: Principal, headers: Mapping[str, str], raw: bytes) -> bytes:
        body = parse_object(raw)
        chat = responses_chat_request(body)  # checked before the database is asked anything
        previous = body.get("previous_response_id")
        if previous is not None:
            chat["messages"] = conversation_messages(
                body, await self._store.conversation(principal, previous)
            )
        name = None
        if body.get("store") is not False:
            name = uuid.uuid4().hex
            self._principal, self._input = principal, stored_items(body["input"], name)
        self._echo = RequestEcho(body, name)
        return orjson.dumps(chat)

    async def _keep(self, response: dict[str, Any]) -> bool:
        """Store `response` (the request asked for it); False when it could not be."""
        previous = self._echo.body.get("previous_response_id")
        return await self._store.save(self._principal, response, self._input, previous)

    async def answer(self, completion: dict[str, Any], record: CallRecord) -> bytes:
        response = response_from_completion(completion, self._echo)
        # Written before the answer leaves: its id is usable (previous_response_id, GET) once the client has it.
        if self._echo.name is not None and not await self._keep(response):
            response["store"] = False
        return orjson.dumps(response)

    def stream(self, record: CallRecord) -> ResponsesStream:
        return ResponsesStream(self._echo, self._keep if self._echo.name is not None else None)

    def error(self, error: GatewayError) -> tuple[int, bytes]:
        return error.status, error.body()
