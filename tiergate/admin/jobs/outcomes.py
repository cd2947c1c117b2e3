"""Recorded outcomes for `tiergate replay`: one JSON object per line, validated with line-numbered errors.

    {"id": "...", "prompt": "...", "domain": "optional",
     "outcomes": {"student": {"score": 0.0-1.0, "cost": usd}, "teacher": {...}, "ta": {...}, ...}}

Every record must give the same two to four tiers; either every record names its domain or none does (then
replay infers domains from the prompt text).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from tiergate.policies.tiers import TIERS, is_tier, ordered


class OutcomesError(ValueError):
    """The outcomes file cannot be replayed; the message names the line and the field."""


@dataclass(frozen=True, slots=True)
class RecordedOutcome:
    score: float
    cost: float


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    prompt: str
    domain: str | None
    outcomes: Mapping[str, RecordedOutcome]


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OutcomesError(f"{where} must be a number, got {value!r}")
    return float(value)


def _outcome(value: object, where: str) -> RecordedOutcome:
    if not isinstance(value, dict):
        raise OutcomesError(f"{where} must be an object with score and cost")
    if "score" not in value or "cost" not in value:
        raise OutcomesError(f"{where} needs both score and cost")
    score = _number(value["score"], f"{where}.score")
    cost = _number(value["cost"], f"{where}.cost")
    if not 0.0 <= score <= 1.0:
        raise OutcomesError(f"{where}.score must be between 0 and 1, got {score}")
    if cost < 0:
        raise OutcomesError(f"{where}.cost must not be negative, got {cost}")
    return RecordedOutcome(score, cost)


def parse_record(obj: object, where: str) -> Record:
    if not isinstance(obj, dict):
        raise OutcomesError(f"{where}: expected a JSON object")
    rid, prompt, domain, outcomes = obj.get("id"), obj.get("prompt"), obj.get("domain"), obj.get("outcomes")
    if not isinstance(rid, str | int) or isinstance(rid, bool) or rid == "":
        raise OutcomesError(f"{where}: id must be a non-empty string")
    if not isinstance(prompt, str):
        raise OutcomesError(f"{where}: prompt must be a string")
    if domain is not None and (not isinstance(domain, str) or not domain):
        raise OutcomesError(f"{where}: domain, when given, must be a non-empty string")
    if not isinstance(outcomes, dict):
        raise OutcomesError(f"{where}: outcomes must be an object keyed by tier ({', '.join(TIERS)})")
    unknown = [t for t in outcomes if not is_tier(t)]
    if unknown:
        raise OutcomesError(f"{where}: unknown tier {unknown[0]!r} in outcomes (tiers: {', '.join(TIERS)})")
    if len(outcomes) < 2:
        raise OutcomesError(f"{where}: outcomes need at least two tiers")
    parsed = {t: _outcome(v, f"{where}: outcomes.{t}") for t, v in outcomes.items()}
    return Record(str(rid), prompt, domain, {t: parsed[t] for t in ordered(parsed)})


def load_outcomes(path: Path) -> list[Record]:
    """All records of the file, or an OutcomesError saying what is wrong where."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise OutcomesError(f"cannot read {path}: {exc.strerror or exc}") from exc
    records: list[Record] = []
    seen: set[str] = set()
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise OutcomesError(f"{where}: not valid JSON ({exc})") from exc
        record = parse_record(obj, where)
        if record.id in seen:
            raise OutcomesError(f"{where}: duplicate id {record.id!r}")
        seen.add(record.id)
        if records:
            first = records[0]
            if tuple(record.outcomes) != tuple(first.outcomes):
                raise OutcomesError(
                    f"{where}: tiers {', '.join(record.outcomes)} differ from the first record's "
                    f"({', '.join(first.outcomes)}); every record must give the same tiers"
                )
            if (record.domain is None) != (first.domain is None):
                raise OutcomesError(f"{where}: either every record names its domain or none does")
        records.append(record)
    if not records:
        raise OutcomesError(f"{path}: no records")
    return records
