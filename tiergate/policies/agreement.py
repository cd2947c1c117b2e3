"""The cheap check that runs before a judge call: do two answers say the same thing?

Only a disagreement is worth paying a judge for. Two answers agree when their *final answers* normalise to
the same value — a JSON value, a multiple-choice letter, a number — or, for free text, when their embeddings
are nearly identical. Final answers of the same kind that differ (B vs C, 42 vs 41) are a disagreement.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

# "the answer is (B)", "Answer: B", "**B**", "B." on the last line, "option C" ...
_CHOICE = re.compile(
    r"(?:answer|option|choice)\s*(?:is|:)?\s*[\(\[*]*\s*([A-J])\b[\)\]*.]*|^\s*[\(\[*]*([A-J])[\)\]*.:]*\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?(?:[eE][+-]?\d+)?")
# Near-duplicate texts: MiniLM cosine above this is a rewording of the same content.
EMBEDDING_AGREEMENT = 0.97


@dataclass(frozen=True, slots=True)
class Agreement:
    agree: bool
    kind: str  # json | choice | number | embedding | identical | none


def _json_value(text: str) -> Any:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        return json.loads(stripped)
    except ValueError:
        return None


def final_choice(text: str) -> str | None:
    """The multiple-choice letter an answer settles on (its last stated one)."""
    matches = list(_CHOICE.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    return (last.group(1) or last.group(2)).upper()


def final_number(text: str) -> float | None:
    """The last number in an answer (GSM8K-style reasoning ends with the result)."""
    matches = _NUMBER.findall(text)
    if not matches:
        return None
    try:
        return float(matches[-1].replace(",", "").replace("$", ""))
    except ValueError:
        return None


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def agreement(a: str, b: str, similarity: float | None = None) -> Agreement:
    """Whether answers `a` and `b` agree, and by which check. `similarity`: cosine of their embeddings."""
    if _normal(a) == _normal(b):
        return Agreement(True, "identical")
    ja, jb = _json_value(a), _json_value(b)
    if ja is not None or jb is not None:
        return Agreement(ja is not None and ja == jb, "json")
    ca, cb = final_choice(a), final_choice(b)
    if ca is not None and cb is not None:
        return Agreement(ca == cb, "choice")
    na, nb = final_number(a), final_number(b)
    if na is not None and nb is not None:
        return Agreement(math.isclose(na, nb, rel_tol=1e-9, abs_tol=1e-9), "number")
    if similarity is not None:
        return Agreement(similarity >= EMBEDDING_AGREEMENT, "embedding")
    return Agreement(False, "none")
