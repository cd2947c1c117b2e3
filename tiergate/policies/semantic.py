"""May the stored answer to one query be served for another? The semantic cache's decision.

A stored answer is served only when the cosine similarity of the two queries' sentence vectors reaches
`threshold` *and* a verifier finds nothing that makes them ask different things. Sentence vectors blur
exactly the details that change an answer (a "not", a model number, the direction of a conversion, an
added "in the US"), so the verifier looks for those, in this order; the first objection is the reason:

- `question`: they ask for different kinds of answer (why / when / where / who / how many, yes-or-no
  questions of possibility, advice, prediction or fact), or a different number of questions;
- `negation`: one query is negated and the other is not ("not", "without", "n't");
- `antonym`: one query has a word whose opposite the other has (best/worst, enable/disable, him/her);
- `number`: the numbers differ (9,000 vs 1,000; "two" and 2 agree);
- `identifier`: a word mixing letters and digits (M604n vs M604dn), or a symbol (C++ vs C#), is missing
  from the other query;
- `quoted`: a quoted string is missing from the other query;
- `entity`: a capitalised name is missing from the other query;
- `order`: related words trade places ("ethane to ethene", "A better than B") or a noun's role flips
  ("from London" / "to London");
- `unmatched-word`: a content word of one query has no counterpart in the other, so an added restriction
  ("downtown", "on the web") is a miss. Equal stems pair up first; a word left over must find a leftover
  word of the other query whose hidden state is at least `align_threshold` close. The hidden states are
  the per-token states of the same MiniLM forward pass that gave the sentence vector, word pieces
  averaged into words, so the alignment costs no extra model call.

Inputs are plain data (`EncodedQuery`, built from the embedding model's `Encoded` with `EncodedQuery.of`). Everything
here is pure and deterministic; lexicons are in `semantic_lexicon.py`, with the reasons for their entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, cast

import numpy as np

from tiergate.policies.semantic_align import Alignment, Analysis, analyse_text
from tiergate.policies.semantic_checks import CHECKS

Reason = Literal[
    "match",
    "below-threshold",
    "question",
    "negation",
    "antonym",
    "number",
    "identifier",
    "quoted",
    "entity",
    "order",
    "unmatched-word",
]

__all__ = [
    "Analysis",
    "EncodedLike",
    "EncodedQuery",
    "MatchDecision",
    "Reason",
    "SemanticPolicy",
    "analyse",
    "decide_match",
    "similarity",
    "verify_match",
]


class EncodedLike(Protocol):
    """What `tiergate.gateway.routing.local_embeddings.Encoded` provides (the policies layer cannot import it)."""

    @property
    def vector(self) -> np.ndarray: ...
    @property
    def tokens(self) -> tuple[str, ...]: ...
    @property
    def offsets(self) -> tuple[tuple[int, int], ...]: ...
    @property
    def token_vectors(self) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class EncodedQuery:
    """One query as the model saw it.

    `vector` is the unit sentence vector; `tokens` the word pieces (without [CLS]/[SEP]), `offsets` their
    character spans in `text` and `token_vectors` one unit hidden-state vector per word piece.
    """

    text: str
    vector: np.ndarray
    tokens: tuple[str, ...]
    offsets: tuple[tuple[int, int], ...]
    token_vectors: np.ndarray

    @classmethod
    def of(cls, text: str, encoded: EncodedLike) -> EncodedQuery:
        return cls(text, encoded.vector, encoded.tokens, encoded.offsets, encoded.token_vectors)


@dataclass(frozen=True, slots=True)
class SemanticPolicy:
    """The knobs of the decision, per tenant or per domain; a value that is not a cosine raises ValueError."""

    # Chosen on the tune half of the QQP pairs by bench/cache_eval: the most precise setting with recall
    # >= 0.205 (docs/semantic-cache.md). Demanding closer word partners than 0.20 gained no precision there.
    threshold: float = 0.91  # minimum cosine between the sentence vectors
    align_threshold: float = 0.20  # minimum cosine between a leftover content word and its counterpart
    verify: bool = True  # False: the sentence threshold alone decides (the plain semantic cache)

    def __post_init__(self) -> None:
        for name in ("threshold", "align_threshold"):
            value = getattr(self, name)
            if not -1.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a cosine similarity in [-1, 1], got {value}")


@dataclass(frozen=True, slots=True)
class MatchDecision:
    """The verdict, the similarity of the two queries and, for a miss, which check refused and why."""

    hit: bool
    similarity: float
    reason: Reason
    detail: str = ""

    def header(self) -> str:
        """A compact value for a response header or trace: `hit; similarity=0.962` or the failed check."""
        verdict = "hit" if self.hit else f"miss; reason={self.reason}"
        return f"{verdict}; similarity={self.similarity:.3f}"


def analyse(query: EncodedQuery) -> Analysis:
    """Everything the verifier needs of one query; compute it once per query when comparing many pairs."""
    return analyse_text(query.text, query.offsets, query.token_vectors)


def similarity(a: EncodedQuery, b: EncodedQuery) -> float:
    return float(np.dot(a.vector.astype(np.float32), b.vector.astype(np.float32)))


def decide_match(
    stored: EncodedQuery, incoming: EncodedQuery, policy: SemanticPolicy | None = None
) -> MatchDecision:
    """Whether the answer stored for `stored` may be served for `incoming`."""
    policy = policy or SemanticPolicy()
    sim = similarity(stored, incoming)
    if sim < policy.threshold:
        return MatchDecision(False, sim, "below-threshold", f"similarity {sim:.3f} < {policy.threshold:.3f}")
    if not policy.verify:
        return MatchDecision(True, sim, "match")
    return verify_match(analyse(stored), analyse(incoming), sim, policy)


def verify_match(a: Analysis, b: Analysis, sim: float, policy: SemanticPolicy) -> MatchDecision:
    """The verifier alone, on analysed queries (the similarity is only reported)."""
    for reason, check in CHECKS:
        detail = check(a.surface, b.surface)
        if detail:
            return MatchDecision(False, sim, cast(Reason, reason), detail)
    align = Alignment(a, b, policy.align_threshold)
    detail = align.order_conflict()
    if detail:
        return MatchDecision(False, sim, "order", detail)
    detail = align.unmatched()
    if detail:
        return MatchDecision(False, sim, "unmatched-word", detail)
    return MatchDecision(True, sim, "match")
