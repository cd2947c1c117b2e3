"""Is an answer good enough to return, or should the cascade escalate it to the next tier?

Each verifier looks at one chat completion (as a dict, the non-streamed shape) and what the request asked
for, and returns None (no objection) or the reason it objects. `verify_answer` runs the enabled ones in order; the
first objection wins. The judge (a call to a higher tier) is I/O and lives in the gateway; what is pure about
it is here: whether a request is sampled (seeded), the prompt, and reading the verdict.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from tiergate.policies.messages import content_text

# Openings of refusals by chat models; matched at the start of the answer (case-insensitive), so a model
# explaining "I can't stress enough ..." in the middle of a good answer is not a refusal.
DEFAULT_REFUSALS: tuple[str, ...] = (
    r"i(?:'m| am) (?:sorry|afraid),? but i (?:can(?:'|no)t|won'?t|am (?:not able|unable))",
    r"i (?:can(?:'|no)t|won'?t|am unable to|am not able to) (?:help|assist|comply|provide|do that|answer)",
    r"(?:sorry|unfortunately),? (?:but )?i (?:can(?:'|no)t|am unable to|am not able to)",
    r"as an ai(?: language model)?,? i (?:can(?:'|no)t|am (?:not able|unable)|don'?t)",
    r"i must decline",
)


@dataclass(frozen=True, slots=True)
class Expected:
    """What the request asked of the answer."""

    json_mode: bool = False  # response_format json_object or json_schema
    schema: Mapping[str, Any] | None = None  # json_schema's schema
    tool_names: frozenset[str] | None = None  # the functions offered (None: no tools)

    @staticmethod
    def of(body: Mapping[str, Any]) -> Expected:
        fmt = body.get("response_format")
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        schema = None
        if kind == "json_schema":
            spec = fmt.get("json_schema") if isinstance(fmt, dict) else None
            raw = spec.get("schema") if isinstance(spec, dict) else None
            schema = raw if isinstance(raw, dict) else None
        tools = body.get("tools")
        names = None
        if isinstance(tools, list) and tools:
            names = frozenset(
                t["function"]["name"]
                for t in tools
                if isinstance(t, dict) and isinstance(t.get("function"), dict) and "name" in t["function"]
            )
        return Expected(kind in ("json_object", "json_schema"), schema, names)


@dataclass(frozen=True, slots=True)
class VerifierConfig:
    enabled: tuple[str, ...] = ("truncated", "refusal", "json", "tool_args")
    refusals: tuple[str, ...] = DEFAULT_REFUSALS
    # Mean natural-log probability per token below which an answer is "unsure" (logprob verifier only).
    min_mean_logprob: float = -1.0
    _refusal_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pattern = re.compile(r"^\W*(?:" + "|".join(f"(?:{p})" for p in self.refusals) + ")", re.IGNORECASE)
        object.__setattr__(self, "_refusal_re", pattern)

    @property
    def wants_logprobs(self) -> bool:
        return "logprob" in self.enabled


@dataclass(frozen=True, slots=True)
class VerifierVerdict:
    ok: bool
    verifier: str = ""
    reason: str = ""

    def describe(self) -> str:
        return "ok" if self.ok else f"{self.verifier}: {self.reason}"


Check = Callable[[Mapping[str, Any], Expected, VerifierConfig], str | None]


def _choices(answer: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    choices = answer.get("choices")
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []


def _message(choice: Mapping[str, Any]) -> Mapping[str, Any]:
    message = choice.get("message")
    return message if isinstance(message, dict) else {}


def _truncated(answer: Mapping[str, Any], expected: Expected, config: VerifierConfig) -> str | None:
    choices = _choices(answer)
    if not choices:
        return "no choices"
    for choice in choices:
        if choice.get("finish_reason") == "length":
            return "truncated (finish_reason length)"
        message = _message(choice)
        content = message.get("content")
        if not message.get("tool_calls") and not (isinstance(content, str) and content.strip()):
            return "empty answer"
    return None


def _refusal(answer: Mapping[str, Any], expected: Expected, config: VerifierConfig) -> str | None:
    for choice in _choices(answer):
        message = _message(choice)
        if message.get("refusal"):
            return "refused (refusal field)"
        content = message.get("content")
        if isinstance(content, str) and config._refusal_re.search(content):
            return "refused"
    return None


def _json(answer: Mapping[str, Any], expected: Expected, config: VerifierConfig) -> str | None:
    if not expected.json_mode:
        return None
    for choice in _choices(answer):
        content = _message(choice).get("content")
        if not isinstance(content, str):
            return "JSON mode: no content"
        try:
            doc = orjson.loads(content)
        except orjson.JSONDecodeError:
            return "JSON mode: the answer is not valid JSON"
        if expected.schema is not None:
            problem = schema_problem(doc, expected.schema)
            if problem:
                return f"JSON schema mismatch: {problem}"
    return None


def schema_problem(doc: Any, schema: Mapping[str, Any]) -> str | None:
    """The first way `doc` violates `schema` (JSON Schema), or None; an unusable schema objects to nothing."""
    import jsonschema
    from referencing.exceptions import Unresolvable

    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        error = jsonschema.exceptions.best_match(cls(schema).iter_errors(doc))
    except (jsonschema.exceptions.SchemaError, Unresolvable):
        return None
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where or '(root)'}: {error.message}"[:200]


def _tool_args(answer: Mapping[str, Any], expected: Expected, config: VerifierConfig) -> str | None:
    for choice in _choices(answer):
        for call in _message(choice).get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                return "tool call without a function"
            name = function.get("name")
            if expected.tool_names is not None and name not in expected.tool_names:
                return f"tool call to an unknown function {name!r}"
            try:
                arguments = orjson.loads(function.get("arguments") or "")
            except orjson.JSONDecodeError:
                return f"tool call {name!r}: arguments are not valid JSON"
            if not isinstance(arguments, dict):
                return f"tool call {name!r}: arguments are not a JSON object"
    return None


def mean_logprob(answer: Mapping[str, Any]) -> float | None:
    """Mean token log-probability over every choice's content tokens, or None when there are none."""
    values: list[float] = []
    for choice in _choices(answer):
        logprobs = choice.get("logprobs")
        content = logprobs.get("content") if isinstance(logprobs, dict) else None
        for token in content or ():
            value = token.get("logprob") if isinstance(token, dict) else None
            if isinstance(value, int | float) and math.isfinite(value):
                values.append(float(value))
    return sum(values) / len(values) if values else None


def _logprob(answer: Mapping[str, Any], expected: Expected, config: VerifierConfig) -> str | None:
    mean = mean_logprob(answer)
    if mean is not None and mean < config.min_mean_logprob:
        return f"low confidence (mean token logprob {mean:.2f} < {config.min_mean_logprob})"
    return None


VERIFIERS: Mapping[str, Check] = MappingProxyType(
    {
        "truncated": _truncated,
        "refusal": _refusal,
        "json": _json,
        "tool_args": _tool_args,
        "logprob": _logprob,
    }
)


def verify_answer(answer: Mapping[str, Any], expected: Expected, config: VerifierConfig) -> VerifierVerdict:
    for name in config.enabled:
        reason = VERIFIERS[name](answer, expected, config)
        if reason is not None:
            return VerifierVerdict(False, name, reason)
    return VerifierVerdict(True)


def strip_logprobs(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer as a client that did not ask for logprobs would have received it."""
    choices = [{**c, "logprobs": None} if isinstance(c, dict) else c for c in answer.get("choices") or ()]
    return {**answer, "choices": choices}


# --- the judge ---------------------------------------------------------------------------------------------

JUDGE_SYSTEM = (
    "You grade answers of an AI assistant. Read the conversation and the candidate answer. Reply with exactly "
    "one word: PASS if the answer is correct, complete and responsive, FAIL otherwise."
)


def judge_sampled(seed: int, request_id: str, fraction: float) -> bool:
    """Whether this request's answer is judged: a seeded, reproducible draw per request id."""
    if fraction <= 0:
        return False
    if fraction >= 1:
        return True
    digest = hashlib.sha256(f"{seed}:{request_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def pass_fail_judge_messages(
    messages: Sequence[Mapping[str, Any]], answer: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The judge's prompt: the conversation and the first choice of the candidate answer, as text."""
    lines = []
    for m in messages:
        lines.append(f"[{m.get('role')}] {content_text(m.get('content'))}")
    choices = _choices(answer)
    message = _message(choices[0]) if choices else {}
    candidate = message.get("content") or ""
    if message.get("tool_calls"):
        candidate += "\n[tool calls] " + orjson.dumps(message["tool_calls"]).decode()
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {
            "role": "user",
            "content": "Conversation:\n" + "\n".join(lines) + "\n\nCandidate answer:\n" + candidate,
        },
    ]


def judge_verdict(text: str) -> bool | None:
    """True for PASS, False for FAIL, None when the judge said neither (then the answer stands)."""
    words = re.findall(r"[A-Za-z]+", text.upper())
    if "FAIL" in words[:3]:
        return False
    if "PASS" in words[:3]:
        return True
    return None
