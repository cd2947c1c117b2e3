"""The response caches: the exact cache (in-process LRU or Redis), the semantic cache (Chroma), and which of
them a request uses, the lookup and the store after an answer.

Imports `config`, `http`, `upstream`, `accounting`, `routing` (the query and its embedding), `db` (batch
writes that isolate a bad entry) and `tiergate.policies`.
"""
