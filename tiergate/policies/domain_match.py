"""Which domain a query belongs to: the nearest centroid above a similarity floor, else `general`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

GENERAL = "general"


def centroid(vectors: np.ndarray) -> np.ndarray:
    """The unit-length mean direction of (n, d) unit vectors."""
    mean = vectors.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    out: np.ndarray = (mean / norm if norm > 0 else mean).astype(np.float32)
    return out


def stack(centroids: Mapping[str, Sequence[float] | np.ndarray]) -> tuple[tuple[str, ...], np.ndarray]:
    """Names and a (k, d) matrix of unit rows, in a stable (sorted) order."""
    names = tuple(sorted(centroids))
    if not names:
        return (), np.zeros((0, 0), dtype=np.float32)
    matrix = np.stack([np.asarray(centroids[n], dtype=np.float32) for n in names])
    matrix /= np.clip(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12, None)
    return names, matrix


def nearest_domain(
    vector: np.ndarray, names: tuple[str, ...], matrix: np.ndarray, floor: float
) -> tuple[str, float]:
    """(domain, cosine similarity); `general` when no centroid reaches `floor`."""
    if not names:
        return GENERAL, 0.0
    sims = matrix @ vector
    best = int(np.argmax(sims))
    similarity = float(sims[best])
    return (names[best], similarity) if similarity >= floor else (GENERAL, similarity)
