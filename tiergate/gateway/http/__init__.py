"""HTTP at the edge: reading and minimally rewriting request bodies, server-sent events of a finished answer,
request ids, and the uvicorn protocol subclass that stamps when a request's first bytes arrived.

Imports `gateway.errors` and `tiergate.policies` only.
"""
