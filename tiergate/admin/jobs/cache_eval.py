"""Measure the semantic cache's decision on labelled pairs of queries (`tiergate cache-eval`).

A pair is `{"text_a", "text_b", "label"}`: label 1 when an answer to one query answers the other. A
pair counts as a hit when the decision would serve the answer stored for `text_a` to `text_b`; precision
is the share of hits that are labelled 1, recall the share of label-1 pairs that hit, and the
false-positive rate the share of label-0 pairs that hit. Each figure is given for the similarity
threshold alone and with the verifier, at the chosen threshold and over a sweep of thresholds.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tiergate.policies.semantic import (
    EncodedLike,
    EncodedQuery,
    MatchDecision,
    SemanticPolicy,
    analyse,
    similarity,
    verify_match,
)

SWEEP = (0.80, 0.85, 0.88, 0.90, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98)
PARTS = ("all", "tune", "holdout")
BATCH = 32  # texts per model call: sorted by length, so a batch pads little


class PairsError(ValueError):
    """The pairs file cannot be used; the message says why, naming the file and the offending item."""


@dataclass(frozen=True, slots=True)
class Pair:
    text_a: str
    text_b: str
    label: int


class BatchEncoder(Protocol):
    def encode_batch(self, texts: list[str]) -> Sequence[EncodedLike]: ...


def load_pairs(path: str | Path) -> list[Pair]:
    """Read a JSON (or gzip-compressed JSON) list of {text_a, text_b, label} objects."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PairsError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        data = json.loads(raw)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PairsError(f"{path}: not JSON or gzip-compressed JSON: {exc}") from exc
    if not isinstance(data, list):
        raise PairsError(
            f"{path}: expected a JSON list of {{text_a, text_b, label}}, got {type(data).__name__}"
        )
    pairs = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise PairsError(f"{path}: item {i} is not an object")
        a, b, label = item.get("text_a"), item.get("text_b"), item.get("label")
        if not isinstance(a, str) or not isinstance(b, str):
            raise PairsError(f"{path}: item {i} needs string fields text_a and text_b")
        if label not in (0, 1) or isinstance(label, float):
            raise PairsError(f"{path}: item {i} has label {label!r}; labels are 0 (different) or 1 (same)")
        pairs.append(Pair(a, b, int(label)))
    if not pairs:
        raise PairsError(f"{path}: no pairs")
    return pairs


def part_of(pair: Pair) -> str:
    """The fixed half a pair belongs to: `tune` (defaults were chosen on it) or `holdout` (never looked at).

    Decided by the first byte of SHA-256 over `text_a + "\\n" + text_b`, so the split is the same on every
    machine and for any subset of the file.
    """
    digest = hashlib.sha256(f"{pair.text_a}\n{pair.text_b}".encode()).digest()
    return "tune" if digest[0] % 2 == 0 else "holdout"


def select(
    pairs: Sequence[Pair],
    *,
    part: str = "all",
    limit: int | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> list[Pair]:
    """The pairs to evaluate: one half of the split, then a seeded random sample or the first `limit`."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    chosen = [p for p in pairs if part == "all" or part_of(p) == part]
    if sample is not None and sample < len(chosen):
        chosen = random.Random(seed).sample(chosen, sample)
    if limit is not None:
        chosen = chosen[:limit]
    return chosen


def encode_texts(
    texts: Iterable[str], encoder: BatchEncoder, progress: Callable[[int, int], None] | None = None
) -> dict[str, EncodedQuery]:
    """Every distinct text through the model once, in batches of similar length."""
    unique = sorted(set(texts), key=len)
    out: dict[str, EncodedQuery] = {}
    for start in range(0, len(unique), BATCH):
        batch = unique[start : start + BATCH]
        for text, encoded in zip(batch, encoder.encode_batch(batch), strict=True):
            out[text] = EncodedQuery.of(text, encoded)
        if progress is not None:
            progress(min(start + BATCH, len(unique)), len(unique))
    return out


@dataclass(frozen=True, slots=True)
class Scores:
    """Precision, recall and false-positive rate of one way of deciding at one threshold."""

    threshold: float
    hits: int
    true_hits: int
    positives: int
    negatives: int

    @property
    def precision(self) -> float | None:
        return self.true_hits / self.hits if self.hits else None

    @property
    def recall(self) -> float | None:
        return self.true_hits / self.positives if self.positives else None

    @property
    def false_positive_rate(self) -> float | None:
        return (self.hits - self.true_hits) / self.negatives if self.negatives else None

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": round(self.threshold, 4),
            "precision": _round(self.precision),
            "recall": _round(self.recall),
            "false_positive_rate": _round(self.false_positive_rate),
            "hits": self.hits,
            "true_hits": self.true_hits,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass(frozen=True, slots=True)
class PairOutcome:
    """One pair under the policy: its similarity and the verifier's verdict (whatever the similarity)."""

    pair: Pair
    similarity: float
    verdict: MatchDecision | None  # None when the similarity is below every threshold evaluated


@dataclass(frozen=True, slots=True)
class Report:
    policy: SemanticPolicy
    pairs: int
    positives: int
    negatives: int
    threshold_only: Scores
    verified: Scores
    sweep: tuple[tuple[Scores, Scores], ...]  # (threshold only, verified) per threshold
    rejections: dict[str, int]  # at the policy's threshold: pairs the verifier refused, by reason
    outcomes: tuple[PairOutcome, ...] = field(repr=False)

    def false_hits(self) -> list[PairOutcome]:
        """Label-0 pairs that the full decision serves at the policy's threshold."""
        return [o for o in self.outcomes if o.pair.label == 0 and _served(o, self.policy.threshold)]

    def to_json(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            "positives": self.positives,
            "negatives": self.negatives,
            "policy": {"threshold": self.policy.threshold, "align_threshold": self.policy.align_threshold},
            "threshold_only": self.threshold_only.to_json(),
            "verified": self.verified.to_json(),
            "rejections": self.rejections,
            "sweep": [{"threshold_only": a.to_json(), "verified": b.to_json()} for a, b in self.sweep],
        }


def _served(outcome: PairOutcome, threshold: float) -> bool:
    return outcome.similarity >= threshold and outcome.verdict is not None and outcome.verdict.hit


def evaluate(
    pairs: Sequence[Pair],
    queries: dict[str, EncodedQuery],
    policy: SemanticPolicy,
    sweep: Sequence[float] = SWEEP,
) -> Report:
    """Score the decision on `pairs`, whose texts must all be in `queries`."""
    thresholds = sorted({*sweep, policy.threshold})
    floor = thresholds[0]
    analyses = {}
    outcomes = []
    for pair in pairs:
        a, b = queries[pair.text_a], queries[pair.text_b]
        sim = similarity(a, b)
        verdict = None
        if sim >= floor:
            for q in (a, b):
                if q.text not in analyses:
                    analyses[q.text] = analyse(q)
            verdict = verify_match(analyses[a.text], analyses[b.text], sim, policy)
        outcomes.append(PairOutcome(pair, sim, verdict))
    positives = sum(p.label for p in pairs)
    negatives = len(pairs) - positives

    def scores(threshold: float, verified: bool) -> Scores:
        hits = [o for o in outcomes if (_served(o, threshold) if verified else o.similarity >= threshold)]
        return Scores(threshold, len(hits), sum(o.pair.label for o in hits), positives, negatives)

    rejections = Counter(
        o.verdict.reason
        for o in outcomes
        if o.similarity >= policy.threshold and o.verdict is not None and not o.verdict.hit
    )
    return Report(
        policy=policy,
        pairs=len(pairs),
        positives=positives,
        negatives=negatives,
        threshold_only=scores(policy.threshold, False),
        verified=scores(policy.threshold, True),
        sweep=tuple((scores(t, False), scores(t, True)) for t in thresholds),
        rejections=dict(rejections.most_common()),
        outcomes=tuple(outcomes),
    )


def _pct(value: float | None) -> str:
    return "    -" if value is None else f"{value:5.3f}"


def format_report(report: Report) -> str:
    """The report as a terminal table."""
    p = report.policy
    lines = [
        f"{report.pairs} pairs ({report.positives} same, {report.negatives} different); "
        f"threshold {p.threshold:.3f}, word alignment {p.align_threshold:.2f}",
        "",
        f"{'':22}{'precision':>10}{'recall':>8}{'FPR':>8}{'hits':>8}",
    ]
    for name, s in (("similarity only", report.threshold_only), ("similarity + verifier", report.verified)):
        lines.append(
            f"{name:22}{_pct(s.precision):>10}{_pct(s.recall):>8}{_pct(s.false_positive_rate):>8}{s.hits:>8}"
        )
    if report.rejections:
        refused = ", ".join(f"{reason} {n}" for reason, n in report.rejections.items())
        lines += ["", f"refused by the verifier at {p.threshold:.3f}: {refused}"]
    lines += [
        "",
        f"{'threshold':>9}  {'similarity only':^25}  {'similarity + verifier':^25}",
        f"{'':>9}  {'P':>7}{'R':>7}{'FPR':>7}    {'P':>7}{'R':>7}{'FPR':>7}",
    ]
    for plain, verified in report.sweep:
        mark = " *" if plain.threshold == p.threshold else ""
        lines.append(
            f"{plain.threshold:>9.3f}  {_pct(plain.precision):>7}{_pct(plain.recall):>7}"
            f"{_pct(plain.false_positive_rate):>7}    {_pct(verified.precision):>7}{_pct(verified.recall):>7}"
            f"{_pct(verified.false_positive_rate):>7}{mark}"
        )
    return "\n".join(lines)
