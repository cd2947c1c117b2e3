"""Front doors: other APIs' shapes (Anthropic Messages, OpenAI Responses, legacy Completions) translated at the
edge into the one chat pipeline, so that every door gets authentication, limits, budgets, both caches, routing,
the ledger, traces and evaluation with no second copy of any of them.

A door turns its request body into a chat-completions body once the caller is authenticated (so that it may
read the caller's own stored state), and the pipeline's answer back into its own shape: a JSON completion, a
replayed event stream (cache hits, verified cascade answers) or a live relay. Its errors keep its API's shape.

Imports `config`, `db`, `http`, `upstream`, `accounting`, `gateway.errors` and `tiergate.policies`.
"""
