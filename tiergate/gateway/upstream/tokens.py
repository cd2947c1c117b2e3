"""Token counting with tiktoken, fully offline (encodings bundled with litellm).

An encoding costs ~0.3 s and ~50 MB to load, and most gateways never need one (upstreams report usage), so
each loads on first need, in a worker thread: async callers `await ready(model)` before counting.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from tiergate.gateway.upstream.litellm_data import use_bundled_tiktoken_encodings
from tiergate.policies.messages import image_parts, text_parts

# OpenAI's chat format: a few tokens of framing per message and for the reply's priming.
_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMING = 3
# A high-detail 512x512 image tile plus the base cost: a conservative stand-in for an image we do not fetch.
_IMAGE_TOKENS = 765


# OpenAI's model families, whose tokenizers tiktoken is; any other model's is only approximated by o200k.
_OPENAI_FAMILIES = ("gpt-", "o1", "o3", "o4", "chatgpt-", "text-embedding", "davinci", "babbage")


def tokenizer_known(model: str) -> bool:
    """Whether the count is the upstream's own (an OpenAI model), not an approximation of another tokenizer."""
    return model.rsplit("/", 1)[-1].startswith(_OPENAI_FAMILIES)


def _encoding_name(model: str) -> str:
    bare = model.rsplit("/", 1)[-1]
    if bare.startswith(("gpt-3.5", "gpt-4-", "text-embedding")) or bare == "gpt-4":
        return "cl100k_base"
    return "o200k_base"  # gpt-4o, gpt-4.1, o-series, gpt-5 and our best guess for everything else


class TokenCounter:
    """Counts tokens the way OpenAI bills them; encodings load once, on first use."""

    def __init__(self) -> None:
        use_bundled_tiktoken_encodings()
        self._encodings: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _encoding(self, model: str) -> Any:
        name = _encoding_name(model)
        enc = self._encodings.get(name)
        if enc is None:
            import tiktoken  # deferred: loading an encoding takes ~0.3 s and startup must stay fast

            with self._lock:
                enc = self._encodings.get(name)
                if enc is None:
                    enc = tiktoken.get_encoding(name)
                    # The Python copy of the merge table (~35 MB for o200k) only serves pickling; the Rust
                    # core that encodes holds its own. Dropping it keeps the gateway's RSS small.
                    enc._mergeable_ranks = {}
                    self._encodings[name] = enc
        return enc

    async def ready(self, model: str) -> None:
        """Load `model`'s encoding off the event loop if it is not loaded yet."""
        if _encoding_name(model) not in self._encodings:
            await asyncio.to_thread(self._encoding, model)

    def text(self, text: str, model: str) -> int:
        if not text:
            return 0
        return len(self._encoding(model).encode(text, disallowed_special=()))

    def messages(self, messages: Iterable[Mapping[str, Any]], model: str, tools: Any = None) -> int:
        """Prompt tokens of a chat request (messages, plus tool definitions when present)."""
        enc = self._encoding(model)
        total = _REPLY_PRIMING
        for message in messages:
            total += _PER_MESSAGE
            for key, value in message.items():
                if key == "content":
                    total += self._content(enc, value)
                elif key == "tool_calls" and value:
                    total += len(enc.encode(orjson.dumps(value).decode(), disallowed_special=()))
                elif isinstance(value, str):
                    total += len(enc.encode(value, disallowed_special=()))
                    if key == "name":
                        total += _PER_NAME
        if tools:
            total += len(enc.encode(orjson.dumps(tools).decode(), disallowed_special=()))
        return total

    @staticmethod
    def _content(enc: Any, content: Any) -> int:
        texts = sum(len(enc.encode(text, disallowed_special=())) for text in text_parts(content))
        return texts + _IMAGE_TOKENS * image_parts(content)
