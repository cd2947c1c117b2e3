"""The surface facts the verifier compares, read from text alone (no model)."""

from __future__ import annotations

import pytest

from tiergate.policies.semantic_checks import CHECKS
from tiergate.policies.semantic_text import numbers, stem, surface, words_of


@pytest.mark.parametrize(
    ("text", "values", "loose"),
    [
        ("Is 9,000 dollars enough?", [9000.0], 0),
        ("Is 1,000 dollars enough?", [1000.0], 0),
        ("a 10k run or a 5K run", [10000.0, 5000.0], 0),
        ("two hundred and fifty people", [250.0], 0),
        ("a million and three thousand or a million", [1003000.0, 1000000.0], 0),
        ("Python 3.11 and 2.7", [3.11, 2.7], 0),
        ("in 1 day", [1.0], 0),
        ("which one is best", [], 1),
        ("one hundred and twenty one", [121.0], 0),
        ("the 2nd and 3rd of May", [2.0, 3.0], 0),
        ("a 19 year old and a sixteen year old", [19.0, 16.0], 0),
        ("Rs.15000 or ₹15,000", [15000.0, 15000.0], 0),
        ("HP LaserJet M604dn", [604.0], 0),
    ],
)
def test_numbers(text: str, values: list[float], loose: int) -> None:
    assert numbers(text) == (values, loose)


@pytest.mark.parametrize(
    "forms",
    [
        ("enable", "enables", "enabled", "enabling"),
        ("country", "countries"),
        ("stop", "stopped", "stopping", "stops"),
        ("box", "boxes"),
        ("give", "gave", "given", "giving"),
        ("win", "won", "wins"),
        ("e-mail", "email"),
        ("Trump", "Trump's", "trump\u2019s"),
    ],
)
def test_inflected_forms_share_a_stem(forms: tuple[str, ...]) -> None:
    assert len({stem(f) for f in forms}) == 1


def test_function_words_come_and_go_content_words_stay() -> None:
    words = words_of("Can you tell me what's the best way to learn Python in the US?")
    content = [w.text for w in words if not w.function]
    assert content == ["learn", "Python", "US"]  # "US" is a name, not the pronoun "us"
    shouted = words_of("WHAT IS THE BEST WAY TO LEARN IT?")
    assert [w.text for w in shouted if not w.function] == ["LEARN"]  # capitals everywhere name nothing


@pytest.mark.parametrize(
    ("text", "entities"),
    [
        ("What is the best time to visit Portugal?", ["Portugal"]),
        ("Where can I buy Amazon Echo Dot in Delhi, India?", ["Amazon", "Echo", "Dot", "Delhi", "India"]),
        ("I think the USA is big. Is it?", ["USA"]),
        ("What Is The Best Way To Learn Java?", []),  # Title Case says nothing by its capitals
        ("Paris is nice", []),  # capitalised because it starts the sentence
    ],
)
def test_entities(text: str, entities: list[str]) -> None:
    s = surface(text)
    assert [s.words[i].text for i in s.entities] == entities


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("Why is the sky blue?", {"reason"}),
        ("Can you please tell me why the sky is blue?", {"reason"}),
        ("Do you know where the Eiffel Tower is?", {"place"}),
        ("Can you tell me the boiling point of water?", set()),
        ("What is the capital of Peru?", set()),
        ("How do I learn Python?", set()),
        ("How many bones are in the body? Why?", {"quantity", "reason"}),
        ("Can I eat raw eggs?", {"yes-no: possible"}),
        ("Should I eat raw eggs?", {"yes-no: advisable"}),
        ("Will it rain tomorrow?", {"yes-no: predicted"}),
        ("Is it raining?", {"yes-no: fact"}),
        ("What happens when you die?", set()),  # "when" inside a clause asks for no time
        ("What do you love about life, and why?", {"reason"}),
    ],
)
def test_question_kinds(text: str, kinds: set[str]) -> None:
    assert surface(text).question == kinds


@pytest.mark.parametrize(
    ("text", "negated"),
    [
        ("Why is my laptop not charging?", True),
        ("Why doesn't my laptop charge?", True),
        ("Can I drink coffee without milk?", True),
        ("Should I buy a new laptop or not?", False),
        ("Is herpes a retrovirus? Why or why not?", False),
        ("Not only cheap but good?", False),
        ("How do I fix 'file not found'?", False),  # inside a quote: compared as a whole
    ],
)
def test_negation(text: str, negated: bool) -> None:
    assert surface(text).negated is negated


def test_identifiers_quotes_symbols_and_roles() -> None:
    s = surface('Is the "GPT-4" API on an M604dn, in C++ or C#, from London to Paris in 2nd place?')
    assert s.identifiers == {"gpt4", "m604dn"}  # "2nd" is an ordinal, compared as a number
    assert s.quotes == ("gpt-4",)
    assert s.symbols == {"+": 2, "#": 1}
    roles = {s.words[i].text: role for i, role in s.roles.items()}
    assert roles == {"London": "source", "Paris": "goal"}
    assert s.has("m604dn") and s.has("londonto") and not s.has("ondo")


@pytest.mark.parametrize(
    ("a", "b", "check"),
    [
        ("How do I enable it?", "How do I disable it?", "antonym"),
        ("How do I upload it?", "How do I download it?", "antonym"),
        ("Which is the easiest?", "Which is the hardest?", "antonym"),
        ("What are the pros of X?", "What are the pros and cons of X?", "antonym"),
        ("Is it legal?", "Is it illegal?", "antonym"),
        ("Is 5 enough?", "Is five enough?", None),
        ("Is it done in 1 day?", "Is it done in one day?", None),
        ("Is 5 enough?", "Is 6 enough?", "number"),
        ("Buy the M604n", "Buy the M604dn", "identifier"),
        ("Buy the M604n", "Buy the m604n", None),
        ("Use Face Book", "Use Facebook", None),
        ("Ask Taylor Swift", "Ask Taylor Lautner", "entity"),
        ('Say "hi there"', "Say hi there", None),
        ('Say "hi there"', 'Say "hello there"', "quoted"),
        ("Visit Portugal?", "Visit Spain?", "entity"),
        ("Why did it fall?", "When did it fall?", "question"),
    ],
)
def test_surface_checks(a: str, b: str, check: str | None) -> None:
    objections = [name for name, run in CHECKS if run(surface(a), surface(b))]
    assert objections[:1] == ([check] if check else [])
