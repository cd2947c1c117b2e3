"""Which tier answers: the router over a live route table and domain centroids, the versioned route-table
store, the query of a chat request as routing sees it, and the embeddings used for domain inference (local
MiniLM or an embeddings deployment).

Imports `config`, `db`, `http`, `upstream`, `accounting`, `gateway.errors` and `tiergate.policies`.
"""
