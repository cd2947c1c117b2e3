from __future__ import annotations

import numpy as np
import pytest

from tiergate.policies.domains import (
    GENERAL,
    DomainSet,
    assign,
    cluster,
    default_cluster_count,
    discover,
    top_terms,
)

TOPICS = {
    "law": ["court", "defendant", "statute", "plaintiff", "contract"],
    "chemistry": ["molecule", "reaction", "electron", "acid", "bond"],
    "cooking": ["recipe", "oven", "flour", "butter", "simmer"],
    "astronomy": ["planet", "orbit", "telescope", "galaxy", "comet"],
}


def corpus(
    topics: list[str], per_topic: int = 40, seed: int = 0, dims: int = 24
) -> tuple[np.ndarray, list[str], list[str]]:
    """Vectors in well-separated directions, one per topic, with prompts made of the topic's words."""
    rng = np.random.default_rng(seed)
    directions = {t: np.eye(dims)[i] for i, t in enumerate(TOPICS)}
    vectors, texts, truth = [], [], []
    for topic in topics:
        for _ in range(per_topic):
            v = directions[topic] + rng.normal(0, 0.15, dims)
            vectors.append(v / np.linalg.norm(v))
            words = rng.choice(TOPICS[topic], size=4)
            texts.append(
                f"What is the {words[0]} of the {words[1]} given a {words[2]} and {words[3]}? Answer:"
            )
            truth.append(topic)
    return np.asarray(vectors, dtype=np.float32), texts, truth


def test_clusters_are_named_by_their_top_terms() -> None:
    vectors, texts, truth = corpus(["law", "chemistry", "cooking"])
    domains = discover(vectors, texts, k=3)
    assert len(domains.domains) == 3
    ids = assign(domains, vectors)
    names = {d.id: d.name for d in domains.domains}
    for topic in ("law", "chemistry", "cooking"):
        members = {ids[i] for i, t in enumerate(truth) if t == topic}
        assert len(members) == 1  # a topic is one domain
        (did,) = members
        terms = names[did].split(" / ")
        assert len(terms) == 3 and set(terms) <= set(TOPICS[topic])  # boilerplate words never name a domain
    assert sorted(d.size for d in domains.domains) == [40, 40, 40]


def test_reclustering_the_same_data_keeps_ids_and_names() -> None:
    vectors, texts, _ = corpus(["law", "chemistry", "cooking"])
    first = discover(vectors, texts, k=3, seed=1)
    order = np.random.default_rng(5).permutation(len(texts))
    again = discover(vectors[order], [texts[i] for i in order], previous=first, k=3, seed=2)
    assert {(d.id, d.name) for d in again.domains} == {(d.id, d.name) for d in first.domains}
    assert again.next_id == first.next_id
    assert assign(again, vectors) == assign(first, vectors)


def test_a_new_cluster_gets_a_new_id_and_old_ones_keep_theirs() -> None:
    vectors, texts, _ = corpus(["law", "chemistry", "cooking"])
    first = discover(vectors, texts, k=3)
    more, more_texts, truth = corpus(["law", "chemistry", "cooking", "astronomy"], seed=3)
    second = discover(more, more_texts, previous=first, k=4)
    old = {(d.id, d.name) for d in first.domains}
    assert old < {(d.id, d.name) for d in second.domains}
    (new,) = [d for d in second.domains if d.id not in {i for i, _ in old}]
    assert new.id == "d4" and second.next_id == 5
    assert set(new.name.split(" / ")) <= set(TOPICS["astronomy"])
    ids = assign(second, more)
    assert {ids[i] for i, t in enumerate(truth) if t == "astronomy"} == {new.id}


def test_a_vanished_cluster_is_retired_and_its_id_never_reused() -> None:
    vectors, texts, _ = corpus(["law", "chemistry", "cooking"])
    first = discover(vectors, texts, k=3)
    fewer, fewer_texts, _ = corpus(["law", "chemistry"], seed=4)
    second = discover(fewer, fewer_texts, previous=first, k=2)
    assert {d.id for d in second.domains} < {d.id for d in first.domains}
    third = discover(vectors, texts, previous=second, k=3)
    assert "d4" in {d.id for d in third.domains}  # cooking comes back as a new domain, not as d1..d3


def test_queries_below_the_similarity_floor_are_general() -> None:
    vectors, texts, _ = corpus(["law", "chemistry"])
    domains = discover(vectors, texts, k=2, floor=0.5)
    stranger = np.zeros((1, vectors.shape[1]), dtype=np.float32)
    stranger[0, -1] = 1.0  # orthogonal to every topic
    assert assign(domains, stranger) == [GENERAL]
    assert assign(domains, vectors[:1]) != [GENERAL]
    assert assign(DomainSet((), 0.5), vectors[:2]) == [GENERAL, GENERAL]


def test_discovery_is_deterministic_for_a_seed() -> None:
    vectors, texts, _ = corpus(["law", "chemistry", "cooking", "astronomy"], per_topic=20)
    a = discover(vectors, texts, k=4, seed=9)
    b = discover(vectors, texts, k=4, seed=9)
    assert [(d.id, d.name) for d in a.domains] == [(d.id, d.name) for d in b.domains]
    assert np.allclose(a.centroids(), b.centroids())


def test_duplicate_names_are_told_apart_by_id() -> None:
    vectors, texts, _ = corpus(["law"], per_topic=60)
    domains = discover(vectors, texts, k=2)
    names = [d.name for d in domains.domains]
    assert len(set(names)) == 2


def test_edge_cases() -> None:
    assert discover(np.zeros((0, 8), dtype=np.float32), []).domains == ()
    with pytest.raises(ValueError, match="vectors for"):
        discover(np.zeros((2, 8), dtype=np.float32), ["only one"])
    labels, centroids = cluster(np.ones((5, 4), dtype=np.float32), 3)  # fewer distinct points than clusters
    assert len(centroids) == 1 and set(labels.tolist()) == {0}
    assert top_terms(["the of and", "a an"], np.array([0, 1]), 2) == [[], []]
    assert (
        default_cluster_count(1) == 1
        and default_cluster_count(100) == 5
        and default_cluster_count(10**6) == 64
    )
