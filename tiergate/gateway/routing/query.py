"""The query of a chat request as routing and the semantic cache see it, embedded at most once.

The text embedded is the last user message. Domain inference uses the query's `domain_vector`: the local
model's sentence vector, or, when `routing.domains.embeddings` names a deployment, that deployment's (the
semantic cache always uses the local model's `encoded`, whose per-token states its verifier needs). The conversation around it (system prompt, earlier turns) is
not mixed into the vector: it is reduced to `context_hash`, which the semantic cache requires to match
exactly. (A hash spliced into the text would mean nothing to the model and would only pull the vector away
from the domain centroids, which are made of plain prompts.)
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import Any, Protocol

import orjson

from tiergate.gateway.routing.local_embeddings import Encoded
from tiergate.policies.messages import content_text, is_text_only


class Encoder(Protocol):
    async def aencode(self, text: str) -> Encoded: ...


DomainEncoder = Callable[[str], Awaitable[Any]]
"""Embeds a text for domain inference (a unit numpy vector)."""


def split_last_user(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """(the last user message's text, every other message in order)."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return content_text(messages[i].get("content")), messages[:i] + messages[i + 1 :]
    return "", list(messages)


def _only_text(messages: list[dict[str, Any]]) -> bool:
    """The last user message is all text: an image or audio part (which `text` leaves out) changes the question."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return is_text_only(message.get("content"))
    return False


class ChatQuery:
    def __init__(
        self,
        messages: list[dict[str, Any]],
        encoder: Encoder | None,
        domain_encoder: DomainEncoder | None = None,
    ) -> None:
        text, context = split_last_user(messages)
        self.text: str = text
        # Whether `text` is the whole question, so that comparing it by meaning compares the questions.
        self.only_text = bool(text.strip()) and _only_text(messages)
        self._context: list[dict[str, Any]] = context
        self.turns = sum(1 for m in messages if m.get("role") == "user")
        self._encoder = encoder
        self._encoding: asyncio.Future[Encoded] | None = None
        self._domain_encoder = domain_encoder
        self._domain_vector: asyncio.Future[Any] | None = None

    @cached_property
    def context_hash(self) -> str:
        """Names the conversation around the query (system prompt, earlier turns); computed on first use."""
        return hashlib.sha256(orjson.dumps(self._context, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]

    @property
    def embedded(self) -> bool:
        """Whether anything asked for the embedding (tests check that requests not needing it never pay)."""
        return self._encoding is not None or self._domain_vector is not None

    def vector(self) -> Any:
        """The domain vector if something already computed it, else None (never computes one)."""
        if self._domain_encoder is not None:
            done: asyncio.Future[Any] | None = self._domain_vector
            if done is None or not done.done() or done.cancelled() or done.exception() is not None:
                return None
            return done.result()
        encoding = self._encoding
        if (
            encoding is None
            or not encoding.done()
            or encoding.cancelled()
            or encoding.exception() is not None
        ):
            return None
        return encoding.result().vector

    async def domain_vector(self) -> Any:
        """The vector domain inference compares with the centroids, computed on first use, then shared."""
        if self._domain_encoder is None:
            return (await self.encoded()).vector
        if self._domain_vector is None:
            self._domain_vector = asyncio.ensure_future(self._domain_encoder(self.text))
        return await self._domain_vector

    async def encoded(self) -> Encoded:
        """The embedding of `text`, computed in the encoder's thread pool on first use, then shared."""
        if self._encoder is None:
            raise RuntimeError("no embedding model is loaded: no configured feature needs one")
        if self._encoding is None:
            self._encoding = asyncio.ensure_future(self._encoder.aencode(self.text))
        return await self._encoding
