"""The legacy Completions door (`POST /v1/completions`): one text prompt becomes one user message.

Refused with a 400 naming the field, because a chat model cannot honour them: several prompts in one
request (each would be its own pipeline call, with its own reservation and ledger row; send one request per
prompt), token-id prompts, `suffix`, `echo`, `logprobs`, `best_of` other than `n`, and chat-only fields
(`messages`, `tools`, `functions`) whose answers this shape cannot carry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from tiergate.gateway.accounting.auth import Principal
from tiergate.gateway.accounting.records import CallRecord
from tiergate.gateway.doors.completions_stream import CompletionsStream, text_completion_object
from tiergate.gateway.errors import BadRequest, GatewayError
from tiergate.gateway.http.bodies import parse_object

DEFAULT_MAX_TOKENS = 16  # the legacy API's default, unlike chat's "up to the model's limit"
_CHAT_ONLY = ("messages", "tools", "tool_choice", "functions", "function_call")


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    if isinstance(prompt, list) and len(prompt) > 1 and all(isinstance(p, str) for p in prompt):
        raise BadRequest(
            f"'prompt' holds {len(prompt)} prompts; this gateway takes one prompt per request "
            "(send one request per prompt)",
            param="prompt",
        )
    if isinstance(prompt, list) and prompt and all(isinstance(p, int | list) for p in prompt):
        raise BadRequest("'prompt' as token ids is not supported: chat models take text", param="prompt")
    raise BadRequest("'prompt' is required and must be a string or an array of one string", param="prompt")


def chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions body equivalent to the Completions body `body` (BadRequest if there is none)."""
    if "prompt" not in body:
        raise BadRequest("'prompt' is required", param="prompt")
    text = _prompt_text(body["prompt"])
    if body.get("suffix") not in (None, ""):
        raise BadRequest("'suffix' is not supported: chat models cannot insert text", param="suffix")
    if body.get("echo") not in (None, False):
        raise BadRequest("'echo' is not supported by this gateway", param="echo")
    if body.get("logprobs") is not None:
        raise BadRequest("'logprobs' is not supported by this gateway's Completions door", param="logprobs")
    n = body.get("n")
    if body.get("best_of") not in (None, n if n is not None else 1):
        raise BadRequest(
            "'best_of' other than 'n' is not supported: chat models return every choice", param="best_of"
        )
    for name in _CHAT_ONLY:
        if name in body:
            raise BadRequest(f"'{name}' belongs to /v1/chat/completions, not /v1/completions", param=name)
    chat = {k: v for k, v in body.items() if k not in ("prompt", "suffix", "echo", "logprobs", "best_of")}
    chat["messages"] = [{"role": "user", "content": text}]
    if chat.get("max_tokens") is None:
        chat["max_tokens"] = DEFAULT_MAX_TOKENS
    return chat


def text_completion(completion: dict[str, Any]) -> dict[str, Any]:
    """The `text_completion` object for a chat completion."""
    choices = [
        {
            "text": (choice.get("message") or {}).get("content") or "",
            "index": choice.get("index", i),
            "logprobs": None,
            "finish_reason": choice.get("finish_reason"),
        }
        for i, choice in enumerate(completion.get("choices") or ())
    ]
    return text_completion_object(completion, choices)


class CompletionsDoor:
    """`/v1/completions` over the chat pipeline; its errors are OpenAI's, as the chat door's are."""

    endpoint = "completions"

    async def chat_body(self, principal: Principal, headers: Mapping[str, str], raw: bytes) -> bytes:
        return orjson.dumps(chat_request(parse_object(raw)))

    async def answer(self, completion: dict[str, Any], record: CallRecord) -> bytes:
        return orjson.dumps(text_completion(completion))

    def stream(self, record: CallRecord) -> CompletionsStream:
        return CompletionsStream()

    def error(self, error: GatewayError) -> tuple[int, bytes]:
        return error.status, error.body()
