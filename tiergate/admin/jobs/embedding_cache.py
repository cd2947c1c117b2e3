"""Prompt embeddings for offline jobs, cached on disk per list of texts (14k prompts take minutes).

The cache file is `<dir>/<hash of the model id and the texts>.npy`. While a long list is being embedded,
progress is checkpointed to `<hash>.partial.npz` every few batches, so an interrupted run resumes instead of
starting over.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tiergate.gateway.routing.local_embeddings import MODEL_ID

Progress = Callable[[int, int], None]
Model = Callable[[list[str]], np.ndarray]
BATCH = 64
CHECKPOINT_BATCHES = 16


def cache_key(texts: list[str]) -> str:
    digest = hashlib.sha256(MODEL_ID.encode())
    for text in texts:
        digest.update(b"\0" + text.encode("utf-8"))
    return digest.hexdigest()[:32]


def _save(path: Path, **arrays: np.ndarray) -> None:
    partial = path.with_name(path.name + ".tmp")
    with partial.open("wb") as f:
        if path.suffix == ".npz":
            np.savez(f, vectors=arrays["vectors"], done=arrays["done"])
        else:
            np.save(f, arrays["vectors"])
    partial.replace(path)


def embed_in_batches(
    model: Model, texts: list[str], progress: Progress | None, checkpoint: Path | None = None
) -> np.ndarray:
    """Embed `texts`, batching prompts of similar length so that little padding is computed."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    vectors: np.ndarray | None = None
    done = 0
    if checkpoint is not None and checkpoint.exists():
        with np.load(checkpoint) as saved:
            vectors, done = saved["vectors"], int(saved["done"])
    for batch, start in enumerate(range(done, len(order), BATCH)):
        rows = order[start : start + BATCH]
        out = np.asarray(model([texts[i] for i in rows]), dtype=np.float32)
        if vectors is None:
            vectors = np.zeros((len(texts), out.shape[1]), dtype=np.float32)
        vectors[rows] = out
        done = min(start + BATCH, len(texts))
        if checkpoint is not None and (batch + 1) % CHECKPOINT_BATCHES == 0:
            _save(checkpoint, vectors=vectors, done=np.array(done))
        if progress is not None:
            progress(done, len(texts))
    return vectors if vectors is not None else np.zeros((0, 0), dtype=np.float32)


def cached_embedder(
    cache_dir: Path | None, progress: Progress | None = None, model: Model | None = None
) -> Model:
    """An `embed(texts)` that reuses `<cache_dir>/<hash of model and texts>.npy` when present.

    `model` defaults to the local MiniLM (`tiergate.gateway.routing.local_embeddings.Embedder`), loaded only on a miss.
    """

    def embed(texts: list[str]) -> np.ndarray:
        if cache_dir is None:
            return embed_in_batches(model or _local_model(), texts, progress)
        key = cache_key(texts)
        path = cache_dir / f"{key}.npy"
        if path.exists():
            cached: np.ndarray = np.load(path)
            if cached.shape[0] == len(texts):
                return cached
        cache_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = cache_dir / f"{key}.partial.npz"
        vectors = embed_in_batches(model or _local_model(), texts, progress, checkpoint)
        _save(path, vectors=vectors)
        checkpoint.unlink(missing_ok=True)
        return vectors

    return embed


def _local_model() -> Model:
    from tiergate.gateway.routing.local_embeddings import Embedder

    return Embedder(threads=os.cpu_count() or 1, cache_size=BATCH).embed
