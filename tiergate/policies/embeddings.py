"""What the rest of tiergate must know of the local sentence-embedding model without loading it."""

from __future__ import annotations

# The length of the local all-MiniLM-L6-v2 vectors: the query vectors and route-table centroids of a gateway
# whose config names no embeddings deployment.
LOCAL_DIMENSIONS = 384
