"""Domains of queries: discovered by clustering query embeddings, named by their top terms, kept stable.

A domain is a cluster of query embeddings (unit vectors) with a centroid, a stable id and a human-readable
name made of the terms that set its prompts apart from the others (class-based TF-IDF: each cluster's prompts
are one document). A query belongs to the domain whose centroid is most similar (cosine), provided the
similarity reaches the floor; otherwise it is `general`.

Stability across runs: a new clustering starts k-means from the previous centroids, and the new clusters are
then matched one-to-one to the old ones by maximum total centroid similarity (the Hungarian method); a match
at or above `match_similarity` keeps the old id and name, so a route table keyed by domain id stays valid.
Unmatched clusters get fresh ids (never reused); old domains without a match are retired.

Pure: no I/O, no clocks; randomness only from the `seed` argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

GENERAL = "general"
NAME_TERMS = 3
# Multiple-choice scaffolding and similar boilerplate says nothing about a domain's subject.
_BOILERPLATE = frozenset({"answer", "following", "question", "statement", "true", "false", "correct", "best"})
_WORD = r"(?u)\b[^\W\d_][^\W\d_]{2,}\b"


@dataclass(frozen=True, slots=True)
class Domain:
    id: str
    name: str
    centroid: np.ndarray  # (dims,) float32, unit length
    size: int  # queries in the clustering that made it


@dataclass(frozen=True, slots=True)
class DomainSet:
    """The current domains; `next_id` numbers the next new one, so ids are never reused."""

    domains: tuple[Domain, ...]
    floor: float
    next_id: int = 1

    def centroids(self) -> np.ndarray:
        if not self.domains:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([d.centroid for d in self.domains]).astype(np.float32)

    def by_id(self) -> dict[str, Domain]:
        return {d.id: d for d in self.domains}


def default_cluster_count(n: int) -> int:
    """Enough clusters for topical resolution, few enough that each still gathers evidence."""
    return max(1, min(64, round(math.sqrt(n / 4))))


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit: np.ndarray = (rows / np.clip(norms, 1e-12, None)).astype(np.float32)
    return unit


def _initial_centroids(
    vectors: np.ndarray, previous: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Previous centroids first (so clusters keep their place), topped up by k-means++ seeding."""
    chosen = [c for c in previous[:k]]
    if not chosen:
        chosen.append(vectors[rng.integers(len(vectors))])
    while len(chosen) < k:
        distance = np.clip(1.0 - (vectors @ np.stack(chosen).T).max(axis=1), 0.0, None)
        total = float(distance.sum())
        pick = rng.integers(len(vectors)) if total <= 0 else rng.choice(len(vectors), p=distance / total)
        chosen.append(vectors[pick])
    return np.stack(chosen).astype(np.float32)


def cluster(
    vectors: np.ndarray, k: int, *, previous: np.ndarray | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, unit centroids) of spherical k-means, warm-started from `previous` centroids when given."""
    vectors = _unit(np.asarray(vectors, dtype=np.float32))
    k = max(1, min(k, len(np.unique(vectors, axis=0))))
    rng = np.random.default_rng(seed)
    init = _initial_centroids(
        vectors, np.zeros((0, vectors.shape[1])) if previous is None else previous, k, rng
    )
    model = KMeans(n_clusters=k, init=init, n_init=1, max_iter=100, random_state=seed).fit(vectors)
    return model.labels_.astype(np.int64), _unit(model.cluster_centers_)


def top_terms(texts: Sequence[str], labels: np.ndarray, k: int, n_terms: int = NAME_TERMS) -> list[list[str]]:
    """The terms most characteristic of each cluster's texts (class-based TF-IDF over the clusters)."""
    documents = [" ".join(t for t, label in zip(texts, labels, strict=True) if label == c) for c in range(k)]
    vectorizer = TfidfVectorizer(
        stop_words=list(ENGLISH_STOP_WORDS | _BOILERPLATE),
        token_pattern=_WORD,
        sublinear_tf=True,
        lowercase=True,
    )
    try:
        matrix = vectorizer.fit_transform(documents)
    except ValueError:  # every text was empty or stop words
        return [[] for _ in range(k)]
    vocabulary = np.asarray(vectorizer.get_feature_names_out())
    out = []
    for row in range(k):
        weights = matrix.getrow(row).toarray().ravel()
        best = [i for i in np.argsort(-weights, kind="stable")[:n_terms] if weights[i] > 0]
        out.append([str(vocabulary[i]) for i in best])
    return out


def _name(terms: list[str], fallback: str) -> str:
    return " / ".join(terms) if terms else fallback


def discover(
    vectors: np.ndarray,
    texts: Sequence[str],
    *,
    previous: DomainSet | None = None,
    k: int | None = None,
    floor: float = 0.25,
    match_similarity: float = 0.8,
    seed: int = 0,
) -> DomainSet:
    """Cluster the queries into domains, keeping the ids and names of `previous` domains that persist."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) != len(texts):
        raise ValueError(f"{len(vectors)} vectors for {len(texts)} texts")
    next_id = previous.next_id if previous else 1
    if len(vectors) == 0:
        return DomainSet((), floor if previous is None else previous.floor, next_id)
    k = default_cluster_count(len(vectors)) if k is None else k
    old = previous.domains if previous else ()
    labels, centroids = cluster(
        vectors, k, previous=previous.centroids() if previous and old else None, seed=seed
    )
    k = len(centroids)
    sizes = np.bincount(labels, minlength=k)
    keep: dict[int, Domain] = {}
    if old:
        similarity = centroids @ np.stack([d.centroid for d in old]).T
        rows, cols = linear_sum_assignment(-similarity)
        keep = {
            int(r): old[int(c)]
            for r, c in zip(rows, cols, strict=True)
            if similarity[r, c] >= match_similarity
        }
    terms = top_terms(texts, labels, k)
    domains: list[Domain] = []
    for c in range(k):
        if c in keep:
            domains.append(Domain(keep[c].id, keep[c].name, centroids[c], int(sizes[c])))
        else:
            did = f"d{next_id}"
            next_id += 1
            domains.append(Domain(did, _name(terms[c], did), centroids[c], int(sizes[c])))
    return DomainSet(tuple(_unique_names(domains)), floor, next_id)


def _unique_names(domains: list[Domain]) -> list[Domain]:
    seen: dict[str, int] = {}
    for d in domains:
        seen[d.name] = seen.get(d.name, 0) + 1
    return [
        Domain(d.id, f"{d.name} ({d.id})", d.centroid, d.size) if seen[d.name] > 1 else d for d in domains
    ]


def similarities(domains: DomainSet, vectors: np.ndarray) -> np.ndarray:
    """(n, len(domains)) cosine similarity of each query to each centroid."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if not domains.domains:
        return np.zeros((len(vectors), 0), dtype=np.float32)
    return np.asarray(_unit(vectors) @ domains.centroids().T)


def assign(domains: DomainSet, vectors: np.ndarray) -> list[str]:
    """The domain id of each query: the nearest centroid at or above the floor, else `general`."""
    sims = similarities(domains, vectors)
    if sims.shape[1] == 0:
        return [GENERAL] * len(sims)
    best = sims.argmax(axis=1)
    ids = [d.id for d in domains.domains]
    return [ids[b] if sims[i, b] >= domains.floor else GENERAL for i, b in enumerate(best)]
