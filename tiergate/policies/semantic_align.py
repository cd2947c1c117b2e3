"""Which word of one query stands for which word of the other, and whether related words keep their order.

Words are aligned through the per-token hidden states of the same MiniLM forward pass that gave the
sentence vector: word pieces are averaged into words, and two words are counterparts when their vectors
are close (or their stems equal). See `semantic.py` for how the verifier uses this.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from tiergate.policies.semantic_lexicon import NEGATIONS, ROLE_MARKERS, SCALES, UNITS
from tiergate.policies.semantic_text import Surface, Word, fold, surface

_NUMBER_WORDS = frozenset(UNITS) | frozenset(SCALES)


@dataclass(frozen=True, slots=True)
class Analysis:
    """A query's surface facts plus one unit vector per word (None for words past the model's window)."""

    surface: Surface
    word_vectors: tuple[np.ndarray | None, ...]
    content: tuple[int, ...]  # indices of the words that must find a counterpart


def analyse_text(text: str, offsets: tuple[tuple[int, int], ...], token_vectors: np.ndarray) -> Analysis:
    """A text's surface facts, with one vector per word from the hidden states of its word pieces."""
    facts = surface(text)
    vectors: list[np.ndarray | None] = []
    starts = np.array([s for s, _ in offsets], dtype=np.int64)
    ends = np.array([e for _, e in offsets], dtype=np.int64)
    for w in facts.words:
        inside = np.flatnonzero((starts >= w.start) & (ends <= w.end) & (ends > starts))
        if inside.size == 0:
            vectors.append(None)  # past the model's window of 256 word pieces
            continue
        v = token_vectors[inside].astype(np.float32).mean(axis=0)
        vectors.append(v / max(float(np.linalg.norm(v)), 1e-12))
    content = tuple(i for i, w in enumerate(facts.words) if _is_content(w))
    return Analysis(facts, tuple(vectors), content)


def _is_content(w: Word) -> bool:
    """Words that must find a counterpart: not function words, nor those other checks compare exactly."""
    lowered = fold(w.text)
    if w.function or w.numeric or lowered in _NUMBER_WORDS:
        return False
    return lowered not in NEGATIONS and not lowered.endswith("n't")


def _swap(a: Analysis, b: Analysis) -> str:
    """Two content words that trade places: "dogs chase cats" / "cats chase dogs", "ethane to ethene".

    A pair of words trades places when their order flips around a word that stays between them in both
    queries ("A better than B" / "B better than A"), or when nothing but a relation word such as "to"
    separates them ("ethane to ethene"). It is harmless when each word keeps the role its preposition
    gives it ("from A to B" / "to B from A"); a phrase that merely moves ("learn X quickly" / "quickly
    learn X") flips no pair around a word between them.
    """
    once_a, once_b = _once(a), _once(b)
    shared = [stem for stem in once_a if stem in once_b]
    rank_b = {stem: r for r, stem in enumerate(sorted(shared, key=lambda s: once_b[s]))}
    sa = a.surface
    for p, x in enumerate(shared):
        for q in range(p + 1, len(shared)):
            y = shared[q]
            if rank_b[x] < rank_b[y] or _roles_kept(a, b, once_a, once_b, (x, y)):
                continue
            pivot = any(rank_b[y] < rank_b[m] < rank_b[x] for m in shared[p + 1 : q])
            relation = (
                q == p + 1 and rank_b[x] == rank_b[y] + 1 and _relation_between(sa, once_a[x], once_a[y])
            )
            if pivot or relation:
                return f"{sa.words[once_a[x]].text!r} and {sa.words[once_a[y]].text!r} trade places"
    return ""


def _roles_kept(
    a: Analysis, b: Analysis, once_a: dict[str, int], once_b: dict[str, int], pair: tuple[str, str]
) -> bool:
    for w in pair:
        role = a.surface.roles.get(once_a[w])
        if role is None or role != b.surface.roles.get(once_b[w]):
            return False
    return True


def _relation_between(s: Surface, i: int, j: int) -> bool:
    """Whether a relation word ("to", "than") stands between words i < j."""
    return any(fold(w.text) in ROLE_MARKERS for w in s.words[i + 1 : j])


def _once(q: Analysis) -> dict[str, int]:
    """Stems of content words that occur once, in the order of the text, with their word index."""
    counts = Counter(q.surface.words[i].stem for i in q.content)
    return {q.surface.words[i].stem: i for i in q.content if counts[q.surface.words[i].stem] == 1}


class Alignment:
    """Which word of one query stands for which word of the other.

    Words with equal stems pair up first, one occurrence with one occurrence; each word left over must
    find its counterpart among the other query's words left over, by the cosine of their hidden states.
    So "before and after" does not pass for "before", nor "my father's father" for "my father".
    """

    def __init__(self, a: Analysis, b: Analysis, threshold: float) -> None:
        self.a, self.b = a, b
        self.a_to_b: dict[int, tuple[int | None, float]] = {}
        self.b_to_a: dict[int, tuple[int | None, float]] = {}
        by_stem: dict[str, list[int]] = {}
        for j in b.content:
            by_stem.setdefault(b.surface.words[j].stem, []).append(j)
        for i in a.content:
            left = by_stem.get(a.surface.words[i].stem)
            if left:
                j = left.pop(0)
                self.a_to_b[i], self.b_to_a[j] = (j, 1.0), (i, 1.0)
        free_a = [i for i in a.content if i not in self.a_to_b]
        free_b = [j for j in b.content if j not in self.b_to_a]
        self.a_to_b.update(_nearest(a, free_a, b, free_b, threshold))
        self.b_to_a.update(_nearest(b, free_b, a, free_a, threshold))

    def unmatched(self) -> str:
        for this, mapping, side in ((self.a, self.a_to_b, "stored"), (self.b, self.b_to_a, "incoming")):
            for i in this.content:
                j, cos = mapping[i]
                if j is None:
                    word = this.surface.words[i].text
                    return f"{word!r} of the {side} query has no counterpart (best cosine {cos:.2f})"
        return ""

    def order_conflict(self) -> str:
        for this, other, mapping in ((self.a, self.b, self.a_to_b), (self.b, self.a, self.b_to_a)):
            for i, role in this.surface.roles.items():
                j = mapping.get(i, (None, 0.0))[0]
                theirs = other.surface.roles.get(j) if j is not None else None
                if theirs is not None and theirs != role:
                    return f"{this.surface.words[i].text!r} is a {role} in one query, a {theirs} in the other"
        a, b = self.a.surface.number_order, self.b.surface.number_order
        if len(set(a)) > 1 and sorted(a) == sorted(b) and a != b:
            return f"the numbers come in another order ({_fmt(a)} vs {_fmt(b)})"
        return _swap(self.a, self.b)


def _fmt(values: tuple[float, ...]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def _nearest(
    this: Analysis, words: list[int], other: Analysis, candidates: list[int], threshold: float
) -> dict[int, tuple[int | None, float]]:
    """For each of `words`: the closest of `candidates` by hidden-state cosine if at least `threshold`."""
    usable = [j for j in candidates if other.word_vectors[j] is not None]
    out: dict[int, tuple[int | None, float]] = {}
    for i in words:
        v = this.word_vectors[i]
        if v is None or not usable:
            out[i] = (None, 0.0)
            continue
        cosines = np.stack([other.word_vectors[j] for j in usable]) @ v  # type: ignore[misc]
        best = int(np.argmax(cosines))
        cos = float(cosines[best])
        out[i] = (usable[best] if cos >= threshold else None, cos)
    return out
