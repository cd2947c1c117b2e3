"""How precise can any decision built on MiniLM's outputs be on the QQP pairs? A learned upper bound.

    python -m bench.cache_eval.ceiling [--pairs FILE] [--sample N] [--threads N]

The semantic cache's verifier is hand-written rules over the same forward pass that gives the sentence
vector. To tell whether its shortfall against the target (precision >= 0.93 at recall >= 0.20) is the
rules' fault or the data's, this trains a gradient-boosted classifier on QQP's own labels, with everything
the model gives: the sentence cosine, the verifier's verdict, statistics of the word alignment and of a
token-by-token greedy matching of the hidden states (BERTScore-like), lengths, a change of person, and
the two sentence vectors themselves (|u - v| and u * v). Two ways:

- cross-fitted: every pair scored by a model trained on the other four fifths of all pairs;
- held out: a model trained on the tune half scores the holdout half (the split `tiergate cache-eval`
  uses), and the cut that reaches the recall on the tune half's cross-fitted scores is applied to it, as
  a deployment would have to choose it.

"Best precision at recall R" picks the cut *with the labels in hand*, which favours every row, the
classifier most: it is a ceiling, not a setting. Pairs below a cosine of 0.75 count as misses for every
method (at that cosine alone recall is 0.87; lower ones would only add training pairs that are easy).

Writes bench/cache_eval/ceiling.json. Embedding all ~73k distinct texts takes about ten minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np

from bench.cache_eval.run import MIN_RECALL, PRONOUNS, ROOT, _progress, find_qqp
from tiergate.admin.jobs.cache_eval import Pair, encode_texts, load_pairs, part_of, select
from tiergate.policies.semantic import (
    Analysis,
    EncodedQuery,
    Reason,
    SemanticPolicy,
    analyse,
    similarity,
    verify_match,
)
from tiergate.policies.semantic_align import Alignment
from tiergate.policies.semantic_text import fold

RESULTS = ROOT / "bench/cache_eval/ceiling.json"
FLOOR = 0.75  # candidates: pairs at least this close; every method treats the rest as misses
RECALLS = (0.15, 0.18, 0.20, 0.22, 0.25)
FOLDS = 5
# The verifier's verdicts on a pair above the floor (a cosine below the threshold is not one of them).
REASONS = tuple(r for r in get_args(Reason) if r != "below-threshold")
HAND_FEATURES = (
    "cosine",
    "align_min",
    "align_mean",
    "related_words",
    "related_min",
    "greedy_precision",
    "greedy_recall",
    "greedy_min",
    "person_differs",
    "words_min",
    "words_diff",
    "content_min",
    "content_diff",
    *(f"verdict:{r}" for r in REASONS),
)


@dataclass(frozen=True, slots=True)
class Candidate:
    pair: Pair
    hand: np.ndarray  # HAND_FEATURES
    vectors: np.ndarray  # |u - v| and u * v of the two sentence vectors


def _persons(a: Analysis) -> frozenset[str]:
    return frozenset(fold(w.text) for w in a.surface.words) & PRONOUNS


def features(a: EncodedQuery, b: EncodedQuery, xa: Analysis, xb: Analysis) -> np.ndarray:
    """HAND_FEATURES of one pair, from what the verifier already computes plus the token states."""
    cosine = similarity(a, b)
    verdict = verify_match(xa, xb, cosine, SemanticPolicy(threshold=FLOOR))
    align = Alignment(xa, xb, -1.0)  # every content word's best partner, however far
    cosines = [c for _, c in align.a_to_b.values()] + [c for _, c in align.b_to_a.values()]
    related = [c for c in cosines if c < 1.0]  # partners found by hidden state, not by equal stems
    greedy = a.token_vectors.astype(np.float32) @ b.token_vectors.astype(np.float32).T
    if greedy.size == 0:
        greedy = np.zeros((1, 1), dtype=np.float32)
    words_a, words_b = len(xa.surface.words), len(xb.surface.words)
    content_a, content_b = len(xa.content), len(xb.content)
    return np.array(
        [
            cosine,
            min(cosines, default=1.0),
            float(np.mean(cosines)) if cosines else 1.0,
            len(related),
            min(related, default=1.0),
            float(greedy.max(axis=1).mean()),
            float(greedy.max(axis=0).mean()),
            float(min(greedy.max(axis=1).min(), greedy.max(axis=0).min())),
            float(_persons(xa) != _persons(xb)),
            min(words_a, words_b),
            abs(words_a - words_b),
            min(content_a, content_b),
            abs(content_a - content_b),
            *(float(verdict.reason == r) for r in REASONS),
        ],
        dtype=np.float64,
    )


def candidates(pairs: Sequence[Pair], queries: dict[str, EncodedQuery]) -> list[Candidate]:
    analyses: dict[str, Analysis] = {}

    def analysis(text: str) -> Analysis:
        if text not in analyses:
            analyses[text] = analyse(queries[text])
        return analyses[text]

    out = []
    for p in pairs:
        a, b = queries[p.text_a], queries[p.text_b]
        if similarity(a, b) < FLOOR:
            continue
        u, v = a.vector.astype(np.float32), b.vector.astype(np.float32)
        hand = features(a, b, analysis(p.text_a), analysis(p.text_b))
        out.append(Candidate(p, hand, np.concatenate([np.abs(u - v), u * v])))
    return out


def best_precision(scores: np.ndarray, labels: np.ndarray, positives: int, recall: float) -> float | None:
    """The highest precision of any cut on `scores` that keeps recall >= `recall` (None if none does)."""
    order = np.argsort(-scores, kind="stable")
    true_hits = np.cumsum(labels[order])
    precision = true_hits / np.arange(1, len(order) + 1)
    reach = true_hits / positives >= recall
    return float(precision[reach].max()) if reach.any() else None


def _classifier(seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=400, learning_rate=0.05, max_leaf_nodes=15, l2_regularization=1.0, random_state=seed
    )


def out_of_fold(x: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each row's probability from a classifier trained on the other folds."""
    from sklearn.model_selection import StratifiedKFold

    scores = np.zeros(len(y))
    for train, test in StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(x, y):
        scores[test] = _classifier(seed).fit(x[train], y[train]).predict_proba(x[test])[:, 1]
    return scores


def cut_for(scores: np.ndarray, labels: np.ndarray, positives: int, recall: float) -> float:
    """The highest score threshold whose hits reach `recall` (inf when none does)."""
    order = np.argsort(-scores, kind="stable")
    reach = np.cumsum(labels[order]) / positives >= recall
    return float(scores[order][int(np.argmax(reach))]) if reach.any() else float("inf")


def held_out(pairs: Sequence[Pair], found: list[Candidate], x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Trained on the tune half, measured on the holdout half: precision at each recall (best cut), and
    what the cut chosen on the tune half alone gives there."""
    halves = np.array([part_of(c.pair) == "tune" for c in found])
    tune_pos = sum(p.label for p in pairs if part_of(p) == "tune")
    holdout_pos = sum(p.label for p in pairs) - tune_pos
    tune_scores = out_of_fold(x[halves], y[halves])
    scores = _classifier(0).fit(x[halves], y[halves]).predict_proba(x[~halves])[:, 1]
    labels = y[~halves]
    served = scores >= cut_for(tune_scores, y[halves], tune_pos, MIN_RECALL)
    return {
        "best": {f"{r:.2f}": best_precision(scores, labels, holdout_pos, r) for r in RECALLS},
        "cut_from_tune": {
            "recall_on_tune": MIN_RECALL,
            "precision": float(labels[served].mean()) if served.any() else None,
            "recall": float(labels[served].sum() / holdout_pos),
        },
    }


def ceiling(pairs: Sequence[Pair], found: list[Candidate]) -> dict[str, Any]:
    positives = sum(p.label for p in pairs)
    y = np.array([c.pair.label for c in found])
    hand = np.stack([c.hand for c in found])
    every = np.hstack([hand, np.stack([c.vectors for c in found])])
    default = SemanticPolicy()
    verified = np.where(hand[:, HAND_FEATURES.index("verdict:match")] == 1.0, hand[:, 0], -1.0)
    rows: dict[str, dict[str, float | None]] = {
        "cosine alone": {f"{r:.2f}": best_precision(hand[:, 0], y, positives, r) for r in RECALLS},
        "cosine + the verifier": {f"{r:.2f}": best_precision(verified, y, positives, r) for r in RECALLS},
    }
    for name, x in (("classifier, hand features", hand), ("classifier, hand features + vectors", every)):
        scores = out_of_fold(x, y)
        rows[f"{name}, cross-fitted"] = {f"{r:.2f}": best_precision(scores, y, positives, r) for r in RECALLS}
    holdout = held_out(pairs, found, every, y)
    rows["classifier, hand features + vectors, holdout half"] = holdout["best"]
    served = verified >= default.threshold
    return {
        "pairs": len(pairs),
        "positives": positives,
        "candidates": len(found),
        "floor": FLOOR,
        "folds": FOLDS,
        "default_verifier": {
            "threshold": default.threshold,
            "precision": float(y[served].mean()) if served.any() else None,
            "recall": float(y[served].sum() / positives),
        },
        "best_precision_at_recall": rows,
        "holdout_cut_from_tune": holdout["cut_from_tune"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, help="labelled pairs (default: the QQP file in shared/)")
    parser.add_argument("--sample", type=int, help="a seeded random sample, for a quick run")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads for the embedding")
    args = parser.parse_args()
    path = args.pairs or find_qqp()
    if path is None:
        print(
            "bench/cache_eval: the QQP pairs are not beside the repository; nothing to measure",
            file=sys.stderr,
        )
        return 0

    from tiergate.gateway.routing.local_embeddings import Embedder

    pairs = select(load_pairs(path), sample=args.sample)
    embedder = Embedder(threads=args.threads, cache_size=1)
    started = time.monotonic()
    queries = encode_texts((t for p in pairs for t in (p.text_a, p.text_b)), embedder, _progress)
    embedder.close()
    result: dict[str, Any] = {"pairs_file": path.name, "embedding_seconds": round(time.monotonic() - started)}
    result |= ceiling(pairs, candidates(pairs, queries))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    d = result["default_verifier"]
    print(f"default verifier: precision {d['precision']:.3f} at recall {d['recall']:.3f}")
    print("best precision at recall >= " + "  ".join(f"{r:.2f}" for r in RECALLS))
    for name, row in result["best_precision_at_recall"].items():
        cells = "  ".join("  -  " if v is None else f"{v:.3f}" for v in row.values())
        print(f"  {name:<52} {cells}")
    cut = result["holdout_cut_from_tune"]
    precision = "-" if cut["precision"] is None else f"{cut['precision']:.3f}"
    print(
        f"holdout half, cut chosen on the tune half for recall {cut['recall_on_tune']}: "
        f"precision {precision} at recall {cut['recall']:.3f}"
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
