"""What the gateway tells operators: Prometheus metrics, the structured access log, OpenTelemetry spans, and
the hooks that feed them each call's record.

Imports `config`, `upstream`, `accounting` (call records) and `tiergate.policies`.
"""
