"""Who pays and how much: virtual keys and authentication, rate limits, budget reservations and settlement
(in-process, SQL or Redis), the cost ledger, and the record of each call that they and telemetry consume.

Imports `config`, `db`, `upstream` (token counts), `gateway.errors` and `tiergate.policies`.
"""
