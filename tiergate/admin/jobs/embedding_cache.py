"""Prompt embeddings for offline jobs, cached on disk per list of texts (14k prompts take minutes)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tiergate.gateway.embeddings import DIMENSIONS, MODEL_ID

Progress = Callable[[int, int], None]
BATCH = 64


def cache_key(texts: list[str]) -> str:
    digest = hashlib.sha256(MODEL_ID.encode())
    for text in texts:
        digest.update(b"\0" + text.encode("utf-8"))
    return digest.hexdigest()[:32]


def embed_in_batches(
    model: Callable[[list[str]], np.ndarray], texts: list[str], progress: Progress | None
) -> np.ndarray:
    """Embed `texts`, batching prompts of similar length so that little padding is computed."""
    out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), BATCH):
        rows = order[start : start + BATCH]
        vectors = np.asarray(model([texts[i] for i in rows]), dtype=np.float32)
        if start == 0 and vectors.shape[1] != out.shape[1]:
            out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        out[rows] = vectors
        if progress is not None:
            progress(min(start + BATCH, len(texts)), len(texts))
    return out


def cached_embedder(
    cache_dir: Path | None,
    progress: Progress | None = None,
    model: Callable[[list[str]], np.ndarray] | None = None,
) -> Callable[[list[str]], np.ndarray]:
    """An `embed(texts)` that reuses `<cache_dir>/<hash of model and texts>.npy` when present.

    `model` defaults to the local MiniLM (`tiergate.gateway.embeddings.Embedder`), loaded only on a miss.
    """

    def embed(texts: list[str]) -> np.ndarray:
        path = cache_dir / f"{cache_key(texts)}.npy" if cache_dir is not None else None
        if path is not None and path.exists():
            vectors = np.load(path)
            if vectors.shape[0] == len(texts):
                return vectors
        run = model
        if run is None:
            from tiergate.gateway.embeddings import Embedder

            run = Embedder(threads=os.cpu_count() or 1, cache_size=BATCH).embed
        vectors = embed_in_batches(run, texts, progress)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".tmp.npy")
            np.save(partial, vectors)
            partial.replace(path)
        return vectors

    return embed
