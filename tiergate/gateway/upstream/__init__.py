"""Reaching upstream models: the fleet (the one owner of the deployments that exist, configured or registered
at run time); the client with retries, fallback, escalation and cooldown, which owns the providers (the
byte-level OpenAI-compatible fast path, litellm for the rest); the transports (aiohttp, or an injected httpx
transport); prices and output limits from litellm's bundled map; token counting; the streaming relay.

Imports `config`, `http`, `gateway.errors` and `tiergate.policies`.
"""
