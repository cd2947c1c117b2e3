"""The surface facts of a query that the semantic cache's verifier compares (see `semantic.py`).

Everything here reads the text alone: words with their character spans and crude stems, negation, numbers
(digits and written out), identifiers such as model numbers, quoted strings, capitalised names and the
roles that prepositions such as "to" and "from" give to the nouns after them.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

from tiergate.policies.semantic_lexicon import (
    DIGIT_SCALES,
    FRAMING_ADJECTIVES,
    FRAMING_NOUNS,
    FRAMING_WORDS,
    IRREGULAR_VERBS,
    LIGHT_VERBS,
    NEGATIONS,
    QUANTITY_AFTER_HOW,
    QUESTION_TYPES,
    ROLE_MARKERS,
    SCALES,
    STOP_WORDS,
    UNITS,
    YES_NO,
)

_WORD = re.compile(r"\w+(?:['\u2019.\-]\w+)*")
_NUMBER = re.compile(r"(?<![\d,])(?<!\d\.)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?([a-z]*)")
_QUOTED = re.compile(
    "\"([^\"]+)\"|\u201c([^\u201d]+)\u201d|\u2018([^\u2019]+)\u2019|`([^`]+)`|(?<!\\w)'([^']+)'(?!\\w)"
)
_SENTENCE_END = re.compile(r"[.!?:;]\s*$")
_CLAUSE_END = re.compile(r"[.!?:;,(]\s*$")
_CLAUSE_WORDS = frozenset({"and", "or", "but"})
_REQUEST_WORDS = frozenset({"you", "me", "i", "please", "us"})
_REQUEST_VERBS = frozenset({"tell", "explain", "describe", "show", "know", "wonder"})
_CLITIC = re.compile(r"('s|'re|'ve|'d|'ll|'m|n't)$")
_ORDINAL = frozenset({"st", "nd", "rd", "th"})
_PRONOUN_I = frozenset({"i", "i'm", "i've", "i'd", "i'll"})


def fold(text: str) -> str:
    """Lower case without accents or typographic apostrophes: the form every comparison uses."""
    text = unicodedata.normalize("NFKD", text.replace("\u2019", "'"))
    return "".join(c for c in text if not unicodedata.combining(c)).lower()


def stem(word: str) -> str:
    """A crude stem that lets inflected forms meet (enables/enabled/enable, countries/country, won/win)."""
    w = fold(word)
    if w.endswith("'s"):
        w = w[:-2]
    w = IRREGULAR_VERBS.get(w, w)
    w = w.replace("-", "").replace(".", "").replace("'", "")
    if len(w) > 4 and w.endswith(("ies", "ied")):
        return w[:-3] + "y"
    for suffix in ("ing", "ed"):
        if len(w) > len(suffix) + 2 and w.endswith(suffix):
            w = w[: -len(suffix)]
            if len(w) > 2 and w[-1] == w[-2] and w[-1] not in "ls":
                w = w[:-1]  # stopped -> stop, but not called -> cal
            break
    else:
        if len(w) > 4 and w.endswith(("sses", "xes", "zes", "ches", "shes")):
            w = w[:-2]
        elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
            w = w[:-1]
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


def squash(text: str) -> str:
    """Only letters and digits, folded: how identifiers and quotes are looked up in the other query."""
    return "".join(c for c in fold(text) if c.isalnum())


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    start: int
    end: int
    stem: str
    function: bool  # a stop or framing word: free to come and go between paraphrases
    numeric: bool  # only digits: numbers are compared by value, not aligned


@dataclass(frozen=True, slots=True)
class Surface:
    """What the verifier compares of one text, apart from its vectors."""

    words: tuple[Word, ...]
    negated: bool
    numbers: Counter[float]  # values written with digits or as number words
    number_order: tuple[float, ...]  # the same values in the order of the text
    loose_ones: int  # a bare "one": a number only if the other query writes 1
    identifiers: frozenset[str]  # words mixing letters and digits, squashed (M604dn -> m604dn)
    symbols: Counter[str]  # C++ has two "+", C# one "#"
    quotes: tuple[str, ...]
    entities: tuple[int, ...]  # indices into words of capitalised names
    roles: dict[int, str]  # word index -> role its preposition gives it (goal, source, comparison)
    question: frozenset[str]  # kinds of answer asked for: reason, time, place, person, quantity, yes-no
    questions: int  # question marks: "What is X? Why is it Y?" asks two things
    squashed: str  # the words squashed and joined
    bounds: frozenset[int]  # where words start and end in `squashed`

    def has(self, needle: str) -> bool:
        """Whether the squashed `needle` is a run of whole words of this text ("Face Book" has "facebook")."""
        start = self.squashed.find(needle)
        while needle and start >= 0:
            if start in self.bounds and start + len(needle) in self.bounds:
                return True
            start = self.squashed.find(needle, start + 1)
        return False


def _is_acronym(word: str) -> bool:
    return len(word) >= 2 and word.isupper() and word.isalpha()


def _shouted(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return sum(c.isupper() for c in letters) > 0.5 * len(letters)


def words_of(text: str) -> tuple[Word, ...]:
    matches = list(_WORD.finditer(text))
    lowered = [_CLITIC.sub("", fold(m.group())) or fold(m.group()) for m in matches]
    lowered = [IRREGULAR_VERBS.get(w, w) for w in lowered]
    cased = not _shouted(text)
    out = []
    for i, m in enumerate(matches):
        raw, base = m.group(), lowered[i]
        after = lowered[i + 1] if i + 1 < len(lowered) else ""
        framing = (
            base in FRAMING_WORDS
            or base in LIGHT_VERBS
            or (base in FRAMING_NOUNS and after in {"of", "to", "for"})
        )
        framing |= base in FRAMING_ADJECTIVES and after in FRAMING_NOUNS
        # An acronym is a name even when it spells a function word ("US" is not "us").
        function = (base in STOP_WORDS or framing) and not (cased and _is_acronym(raw))
        numeric = base.replace(",", "").replace(".", "").isdigit()
        out.append(Word(raw, m.start(), m.end(), stem(raw), function, numeric))
    return tuple(out)


def negated(text: str, words: tuple[Word, ...]) -> bool:
    """Whether the text negates something outside quotes (a quoted string is compared as a whole)."""
    quoted = [m.span() for m in _QUOTED.finditer(text)]
    lowered = [fold(w.text) for w in words]
    for i, w in enumerate(lowered):
        if w not in NEGATIONS and not w.endswith("n't"):
            continue
        if any(start <= words[i].start < end for start, end in quoted):
            continue
        before = lowered[i - 1] if i else ""
        after = lowered[i + 1] if i + 1 < len(lowered) else ""
        # "whether or not", "yes or no", "why not?" and "not only ... but" ask, or add; they do not negate.
        if before == "or" or (w == "not" and after in {"only", "just"}):
            continue
        if w == "not" and before == "why" and not text[words[i].end :].lstrip()[:1].isalnum():
            continue
        return True
    return False


def _written_numbers(words: list[tuple[int, str]]) -> tuple[list[tuple[int, float]], int]:
    """Numbers written out in (position, folded word) pairs, with where each starts; and the bare "one"s."""
    values: list[tuple[int, float]] = []
    loose = 0
    i = 0
    while i < len(words):
        start, w = words[i]
        if w == "a" and i + 1 < len(words) and words[i + 1][1] in SCALES:
            i += 1  # "a hundred", "a million"
            w = words[i][1]
        if w not in UNITS and w not in SCALES and w != "one":
            i += 1
            continue
        run = []
        while i < len(words) and (words[i][1] in UNITS or words[i][1] in SCALES or words[i][1] == "one"):
            run.append(words[i][1])
            i += 1
            if i + 1 < len(words) and words[i][1] == "and" and words[i + 1][1] in UNITS:
                i += 1  # "two hundred and fifty"
        if run == ["one"]:
            loose += 1
            continue
        total = current = 0
        for part in run:
            if part in SCALES:
                current = max(current, 1) * SCALES[part]
                if SCALES[part] >= 1000:
                    total, current = total + current, 0
            else:
                current += 1 if part == "one" else UNITS[part]
        values.append((start, float(total + current)))
    return values, loose


def numbers(text: str) -> tuple[list[float], int]:
    """The numbers of a text in its order (9,000 -> 9000, 10k -> 10000, "two hundred" -> 200), and how
    many bare "one"s it has."""
    lowered = fold(text)
    values: list[tuple[int, float]] = []
    for m in _NUMBER.finditer(lowered):
        digits, decimals, suffix = m.groups()
        value = float(digits.replace(",", "") + (decimals or ""))
        if suffix in DIGIT_SCALES:
            value *= DIGIT_SCALES[suffix]
        tail = lowered[m.end() :].split(maxsplit=1)
        if not suffix and tail and tail[0] in SCALES:
            value *= SCALES[tail[0]]
        values.append((m.start(), round(value, 6)))
    written, loose = _written_numbers([(m.start(), fold(m.group())) for m in _WORD.finditer(text)])
    return [value for _, value in sorted(values + written)], loose


def identifiers(words: tuple[Word, ...]) -> frozenset[str]:
    """Words that mix letters and digits (M604dn, x86, i7, GPT-4) other than ordinals and scaled numbers."""
    out = set()
    for w in words:
        s = squash(w.text)
        if not (any(c.isdigit() for c in s) and any(c.isalpha() for c in s)):
            continue
        letters = s.lstrip("0123456789")
        if s[0].isdigit() and (letters in _ORDINAL or letters in DIGIT_SCALES):
            continue
        out.add(s)
    return frozenset(out)


def _symbolic(c: str) -> bool:
    # Currency signs belong to numbers, compared by value; backticks quote; & is "and".
    category = unicodedata.category(c)
    return c in "#@[]{}" or (category.startswith("S") and category != "Sc" and c != "`")


def symbols(text: str) -> Counter[str]:
    """The symbols of a text (C++, C#, ==, [], @), counted: they change what is asked entirely."""
    return Counter(c for c in text if _symbolic(c))


def quotes(text: str) -> tuple[str, ...]:
    return tuple(" ".join(fold(next(g for g in m.groups() if g)).split()) for m in _QUOTED.finditer(text))


def entities(text: str, words: tuple[Word, ...]) -> tuple[int, ...]:
    """Capitalised words that do not start a sentence: names of people, places, products.

    A text written in Title Case or in capitals says nothing by its capitals, so it has no entities here.
    """
    starts = [i == 0 or bool(_SENTENCE_END.search(text[: w.start])) for i, w in enumerate(words)]
    inner_function = [w for w, first in zip(words, starts, strict=True) if w.function and not first]
    capitalised = [w for w in inner_function if w.text[0].isupper() and fold(w.text) not in _PRONOUN_I]
    if len(capitalised) >= 2 and 2 * len(capitalised) >= len(inner_function):
        return ()  # Title Case: "What Is The Best Way To Learn Java?"
    out = []
    for i, w in enumerate(words):
        if not w.text[0].isupper() or fold(w.text) in _PRONOUN_I:
            continue
        if starts[i] and not _is_acronym(w.text):
            continue  # capitalised because it starts a sentence
        out.append(i)
    return tuple(out)


def question_types(text: str, words: tuple[Word, ...]) -> frozenset[str]:
    """The kinds of answer the clauses of a text ask for; "what"/"which"/"how" questions have none.

    A question word counts where a clause starts: at the start of a sentence, after a comma or a
    conjunction, or after a request ("tell me why", "do you know where"). "Can you tell me X" and "Could
    you explain X" are requests for X, not yes/no questions.
    """
    lowered = [fold(w.text) for w in words]
    out = set()
    request = False
    for i, w in enumerate(words):
        if lowered[i] in _REQUEST_VERBS:
            request = True  # "tell me why", "explain how", "I wonder where"
            continue
        before = lowered[i - 1] if i else ""
        if i and not (_CLAUSE_END.search(text[: w.start]) or before in _CLAUSE_WORDS or request):
            continue
        # A request runs on through its own words ("can you please tell me") to the question it asks.
        request = request and lowered[i] in _REQUEST_WORDS
        if lowered[i] in QUESTION_TYPES:
            out.add(QUESTION_TYPES[lowered[i]])
        elif lowered[i] == "how" and lowered[i + 1 : i + 2] and lowered[i + 1] in QUANTITY_AFTER_HOW:
            out.add("quantity")
        elif lowered[i] in YES_NO and _SENTENCE_END.search("." + text[: w.start]):
            if lowered[i + 1 : i + 2] == ["you"] and _REQUEST_VERBS & set(lowered[i + 2 : i + 4]):
                request = True  # "can you (please) tell me ...": a request for what follows
            else:
                out.add("yes-no: " + YES_NO[lowered[i]])
    return frozenset(out)


def roles(words: tuple[Word, ...]) -> dict[int, str]:
    """The role (goal, source, comparison) a preposition gives the first content word after it."""
    out: dict[int, str] = {}
    for i, w in enumerate(words):
        role = ROLE_MARKERS.get(fold(w.text))
        if role is None:
            continue
        for j in range(i + 1, min(i + 4, len(words))):
            if fold(words[j].text) in ROLE_MARKERS:
                break
            if not words[j].function:
                out.setdefault(j, role)
                break
    return out


def surface(text: str) -> Surface:
    words = words_of(text)
    pieces = [squash(w.text) for w in words]
    bounds = {0}
    for piece in pieces:
        bounds.add(max(bounds) + len(piece))
    values, loose = numbers(text)
    return Surface(
        words=words,
        negated=negated(text, words),
        numbers=Counter(values),
        number_order=tuple(values),
        loose_ones=loose,
        identifiers=identifiers(words),
        quotes=quotes(text),
        entities=entities(text, words),
        roles=roles(words),
        question=question_types(text, words),
        questions=len(re.findall(r"\?+", text)),
        symbols=symbols(text),
        squashed="".join(pieces),
        bounds=frozenset(bounds),
    )
