"""The data plane: everything on the path of a request, and what the gateway's lifespan opens for it.

The request path itself sits at this level (`app` -> `pipeline` -> `admission`, `cascade`, `settlement`;
`endpoints`, `feedback`; `errors` is the exception tree every layer raises). `components` is the composition
root: the lifespan opens every part once and hands each component the parts it uses (no service locator).
The parts live in subpackages by concern, each importing only the ones below it (`tests/test_layering.py`):

    config      settings and their sections, validated once at start-up
    db          tables, engines and migrations
    http        request bodies, SSE, uvicorn's protocol subclass
    upstream    the fleet (the deployments that exist), the upstream client, transports, providers, prices,
                token counts, the streaming relay
    accounting  virtual keys, limits, budgets, the ledger and each call's record
    routing     the router, route-table store, query features, embeddings for domain inference
    cache       the exact and the semantic response cache
    telemetry   metrics, logs, OpenTelemetry
    learning    traces, shadow evaluation, registered models

Nothing here imports `tiergate.admin`.
"""
