"""The learning loop's share of the data plane: the trace writer, shadow evaluation and its upstream calls
and evaluation budget, and the registry of models registered at run time.

Imports every part below the request path (`config`, `db`, `http`, `upstream`, `accounting`, `routing`) and
`tiergate.policies`; jobs that read what it writes live in `tiergate.admin.jobs`.
"""
