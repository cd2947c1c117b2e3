"""The judge: a fixed, versioned prompt asking a stronger model whether a candidate's answer is as acceptable
as the served one, asked twice with the answers' positions swapped to cancel position bias.

A pair's verdict combines both orders: the candidate is `better` if it wins both, `worse` if it loses both,
and `as_good` otherwise (ties, or a disagreement between the two orders, which is position bias). Its score is
the mean of the two orders (win 1, tie 0.5, loss 0). A judge answer that cannot be parsed yields no verdict;
the evaluation is then counted as spent but gives no evidence.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tiergate.policies.messages import content_text

JUDGE_VERSION = "tiergate-judge-v1"

JUDGE_SYSTEM = (
    "You are an impartial judge of AI assistant answers. You are shown a conversation and two answers, "
    "A and B, to its last message. Decide which answer a careful user would rather receive: judge "
    "correctness first, then whether it follows the instructions and format asked for, then helpfulness. "
    "Do not prefer an answer for its length, its style or its position. If both are equally acceptable, "
    "say tie. Reply with one JSON object and nothing else: "
    '{"winner": "A" | "B" | "tie", "reason": "<one sentence>"}'
)

_WINNER = re.compile(r'"?winner"?\s*[:=]\s*"?\s*(A|B|tie)\b', re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class PairwiseVerdict:
    verdict: str  # better | as_good | worse (the candidate against the served answer)
    score: float  # 0..1, the candidate's mean result over both orders
    rationale: str


def _transcript(messages: list[dict[str, Any]]) -> str:
    lines = []
    for message in messages:
        lines.append(f"[{message.get('role', 'user')}]\n{content_text(message.get('content'))}")
    return "\n\n".join(lines)


def pairwise_judge_messages(
    conversation: list[dict[str, Any]], answer_a: str, answer_b: str
) -> list[dict[str, str]]:
    user = (
        f"Conversation:\n<<<\n{_transcript(conversation)}\n>>>\n\n"
        f"Answer A:\n<<<\n{answer_a}\n>>>\n\nAnswer B:\n<<<\n{answer_b}\n>>>"
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def parse_winner(reply: str) -> tuple[str, str] | None:
    """("A" | "B" | "tie", reason) from the judge's reply, tolerating prose around the JSON."""
    start, end = reply.find("{"), reply.rfind("}")
    if 0 <= start < end:
        try:
            doc = json.loads(reply[start : end + 1])
        except ValueError:
            doc = None
        if isinstance(doc, dict) and str(doc.get("winner", "")).lower() in ("a", "b", "tie"):
            winner = str(doc["winner"])
            return (winner.upper() if winner.lower() != "tie" else "tie"), str(doc.get("reason", ""))
    match = _WINNER.search(reply)
    if match:
        winner = match.group(1)
        return (winner.upper() if winner.lower() != "tie" else "tie"), ""
    return None


def combine(candidate_first: str, candidate_second: str, rationale: str = "") -> PairwiseVerdict:
    """Verdict from the two orders: the candidate was answer A in the first call and answer B in the second."""
    first = {"A": 1.0, "tie": 0.5, "B": 0.0}[candidate_first]
    second = {"B": 1.0, "tie": 0.5, "A": 0.0}[candidate_second]
    score = (first + second) / 2
    if first == second == 1.0:
        verdict = "better"
    elif first == second == 0.0:
        verdict = "worse"
    else:
        verdict = "as_good"
    return PairwiseVerdict(verdict, score, rationale)
