"""The verifier's checks that read the surface of two queries (see `semantic.py`).

Each check takes the `Surface` of both queries and returns "" when they agree, else a short detail of
what differs, which reaches the response header and the trace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tiergate.policies.semantic_lexicon import ANTONYMS, NEGATING_PREFIXES, OPPOSITE_PREFIXES
from tiergate.policies.semantic_text import Surface, squash, stem

Check = Callable[[Surface, Surface], str]


def _degrees(word: str) -> tuple[str, str, str]:
    """A word with its regular comparative and superlative (short -> shorter, shortest)."""
    if word.endswith("e"):
        return word, word + "r", word + "st"
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou":
        return word, word[:-1] + "ier", word[:-1] + "iest"
    if len(word) == 3 and word[1] in "aeiou" and word[0] not in "aeiou" and word[2] not in "aeiouwxy":
        return word, word + word[-1] + "er", word + word[-1] + "est"  # big -> bigger
    return word, word + "er", word + "est"


_ANTONYM_STEMS = frozenset(
    pair
    for a, b in ANTONYMS
    for x, y in zip(_degrees(a), _degrees(b), strict=True)
    for pair in ((stem(x), stem(y)), (stem(y), stem(x)))
)


def _negation(a: Surface, b: Surface) -> str:
    if a.negated == b.negated:
        return ""
    return f"only the {'stored' if a.negated else 'incoming'} query is negated"


def _stems(s: Surface) -> set[str]:
    return {w.stem for w in s.words}


def _opposite(x: str, y: str) -> bool:
    """Whether two stems are opposites by a prefix rule (legal/illegal, increase/decrease)."""
    for p in NEGATING_PREFIXES:
        if (x == p + y and len(y) >= 3) or (y == p + x and len(x) >= 3):
            return True
    for p, q in OPPOSITE_PREFIXES:
        for u, v in ((x, y), (y, x)):
            if u.startswith(p) and v.startswith(q) and u[len(p) :] == v[len(q) :] and len(u) - len(p) >= 3:
                return True
    return False


def _antonym(a: Surface, b: Surface) -> str:
    """A word of one query whose opposite the other query has instead ("disadvantages" / "advantages")."""
    sa, sb = _stems(a), _stems(b)
    for this, other in ((sa, sb), (sb, sa)):
        for x in sorted(s for s in this - other if s.isalpha()):
            for y in sorted(s for s in other if s.isalpha()):
                if (x, y) in _ANTONYM_STEMS or _opposite(x, y):
                    return f"{x!r} / {y!r}"
    return ""


def _number(a: Surface, b: Surface) -> str:
    for this, other in ((a, b), (b, a)):
        missing = this.numbers - other.numbers
        # A digit 1 may stand for a bare "one" of the other query ("in 1 day" / "in one day").
        ones = min(missing.get(1.0, 0), other.loose_ones)
        missing[1.0] -= ones
        missing = +missing
        if missing:
            return f"{_fmt(sorted(this.numbers))} vs {_fmt(sorted(other.numbers))}"
    return ""


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _missing(items: Sequence[str] | frozenset[str], other: Surface) -> str:
    for item in sorted(items):
        if not other.has(squash(item)):
            return item
    return ""


def _identifier(a: Surface, b: Surface) -> str:
    for this, other in ((a, b), (b, a)):
        gone = _missing(this.identifiers, other) or "".join(sorted((this.symbols - other.symbols).elements()))
        if gone:
            return f"{gone!r} is not in the other query"
    return ""


def _quoted(a: Surface, b: Surface) -> str:
    for this, other in ((a, b), (b, a)):
        gone = _missing(this.quotes, other)
        if gone:
            return f"quoted {gone!r} is not in the other query"
    return ""


def _entity(a: Surface, b: Surface) -> str:
    """A capitalised name of one query missing from the other, as a word or as part of its whole name
    ("Face Book" / "Facebook")."""
    for this, other in ((a, b), (b, a)):
        stems = _stems(other)
        for run in _runs(this.entities):
            name = "".join(squash(this.words[i].text) for i in run)
            for i in run:
                w = this.words[i]
                if w.stem not in stems and not other.has(squash(w.text)) and not other.has(name):
                    return f"{w.text!r} is not in the other query"
    return ""


def _runs(indices: tuple[int, ...]) -> list[list[int]]:
    """Consecutive word indices grouped: the words of one name ("Taylor Swift")."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _question(a: Surface, b: Surface) -> str:
    if a.question != b.question:
        return f"asks {_kinds(a.question)} vs {_kinds(b.question)}"
    if a.questions and b.questions and a.questions != b.questions:
        return f"{a.questions} questions vs {b.questions}"
    return ""


def _kinds(kinds: frozenset[str]) -> str:
    return "+".join(sorted(kinds)) or "-"


# In the order they run; the first to object gives the reason for a miss.
CHECKS: tuple[tuple[str, Check], ...] = (
    ("question", _question),
    ("negation", _negation),
    ("antonym", _antonym),
    ("number", _number),
    ("identifier", _identifier),
    ("quoted", _quoted),
    ("entity", _entity),
)
