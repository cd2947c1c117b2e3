"""Reaching upstream models: the client with retries, fallback, escalation and cooldown; the transports
(aiohttp, or an injected httpx transport); the providers (the byte-level OpenAI-compatible fast path, litellm
for the rest); prices and output limits from litellm's bundled map; token counting; the streaming relay.

Imports `config`, `http`, `gateway.errors` and `tiergate.policies`.
"""
