"""Turning accepted answers into training data for a cheaper student.

Two formats, both OpenAI's: supervised fine-tuning (one chat per line, the accepted answer as the final
assistant message) and preference pairs for DPO (`input`, `preferred_output`, `non_preferred_output`). The
judge's rationale rides along as an extra field where there is one. Near-identical prompts are dropped (a
student learns nothing from the hundredth copy, and duplicates leak between train and validation), and the
split is seeded so that an export can be reproduced.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
# Prompts whose MiniLM cosine reaches this are rewordings of one another.
DUPLICATE_SIMILARITY = 0.95


@dataclass(frozen=True)
class Example:
    """One accepted answer, as the export needs it."""

    messages: list[dict[str, Any]]  # the request's conversation
    answer: dict[str, Any]  # the accepted assistant message
    tools: list[dict[str, Any]] | None = None
    rejected: list[dict[str, Any]] = field(default_factory=list)  # candidate answers the judge found worse
    rationale: str | None = None


def _clean_message(message: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in message.items() if k in ("role", "content", "name", "tool_calls", "tool_call_id")}
    if out.get("role") == "developer":  # the fine-tuning API knows `system`
        out["role"] = "system"
    return out


def sft_row(example: Example) -> dict[str, Any]:
    row: dict[str, Any] = {
        "messages": [*map(_clean_message, example.messages), _clean_message(example.answer)]
    }
    if example.tools:
        row["tools"] = example.tools
    if example.rationale:
        row["judge_rationale"] = example.rationale
    return row


def preference_rows(example: Example) -> list[dict[str, Any]]:
    rows = []
    for rejected in example.rejected:
        row: dict[str, Any] = {
            "input": {"messages": [_clean_message(m) for m in example.messages]},
            "preferred_output": [_clean_message(example.answer)],
            "non_preferred_output": [_clean_message(rejected)],
        }
        if example.tools:
            row["input"]["tools"] = example.tools
        if example.rationale:
            row["judge_rationale"] = example.rationale
        rows.append(row)
    return rows


def deduplicate(vectors: np.ndarray, threshold: float = DUPLICATE_SIMILARITY) -> list[int]:
    """Indices to keep: the first of every group of prompts at cosine >= `threshold` (unit vectors)."""
    kept: list[int] = []
    if len(vectors) == 0:
        return kept
    kept_vectors = np.zeros((0, vectors.shape[1]), dtype=vectors.dtype)
    for i, vector in enumerate(vectors):
        if len(kept_vectors) and float(np.max(kept_vectors @ vector)) >= threshold:
            continue
        kept.append(i)
        kept_vectors = np.vstack([kept_vectors, vector[None, :]])
    return kept


def split(count: int, validation_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded train/validation split of `count` items; validation gets at least one item when count > 1."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    n_val = round(count * validation_fraction)
    if count > 1 and validation_fraction > 0:
        n_val = max(1, min(count - 1, n_val))
    return sorted(order[n_val:]), sorted(order[:n_val])


def _message_errors(message: Any, where: str) -> list[str]:
    if not isinstance(message, dict):
        return [f"{where}: not an object"]
    errors = []
    role = message.get("role")
    if role not in CHAT_ROLES:
        errors.append(f"{where}: role {role!r} is not one of {sorted(CHAT_ROLES)}")
    content = message.get("content")
    if content is None and not message.get("tool_calls"):
        errors.append(f"{where}: no content and no tool_calls")
    elif content is not None and not isinstance(content, str | list):
        errors.append(f"{where}: content must be a string or a list of parts")
    unknown = set(message) - {"role", "content", "name", "tool_calls", "tool_call_id", "weight"}
    if unknown:
        errors.append(f"{where}: unknown keys {sorted(unknown)}")
    return errors


def chat_row_errors(row: Any) -> list[str]:
    """Why `row` is not a valid line of OpenAI's chat fine-tuning format (empty when it is)."""
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list) or not row["messages"]:
        return ["a row needs a non-empty 'messages' list"]
    errors = [e for i, m in enumerate(row["messages"]) for e in _message_errors(m, f"messages[{i}]")]
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in row["messages"]):
        errors.append("no assistant message to learn from")
    elif row["messages"][-1].get("role") != "assistant":
        errors.append("the last message must be the assistant's")
    if "tools" in row and not isinstance(row["tools"], list):
        errors.append("'tools' must be a list")
    return errors


def preference_row_errors(row: Any) -> list[str]:
    """Why `row` is not a valid line of OpenAI's preference (DPO) fine-tuning format."""
    if not isinstance(row, dict):
        return ["a row must be an object"]
    errors = []
    messages = (row.get("input") or {}).get("messages") if isinstance(row.get("input"), dict) else None
    if not isinstance(messages, list) or not messages:
        errors.append("'input.messages' must be a non-empty list")
    else:
        errors += [e for i, m in enumerate(messages) for e in _message_errors(m, f"input.messages[{i}]")]
    for key in ("preferred_output", "non_preferred_output"):
        output = row.get(key)
        if not isinstance(output, list) or len(output) != 1:
            errors.append(f"'{key}' must be a list of exactly one assistant message")
            continue
        errors += _message_errors(output[0], f"{key}[0]")
        if isinstance(output[0], dict) and output[0].get("role") != "assistant":
            errors.append(f"'{key}[0]' must be an assistant message")
    return errors
