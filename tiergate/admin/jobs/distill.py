"""Distillation export: what a cheaper student needs to learn a domain, from the tenant's own traffic.

Source rows: chat traces answered `ok` by the teacher or supervisor tier whose content policy was `full`
(redacted and `none` traces are counted and left out: a student must not learn placeholders), and whose
answer was accepted - not truncated (finish_reason length or content_filter), no negative newest feedback
(score < 0.5), and not beaten by a cheaper candidate in shadow evaluation (verdict `better`).

Per domain (directory `<out>/<domain>/`):
    train.jsonl, validation.jsonl                        OpenAI chat fine-tuning rows (supervised)
    preferences_train.jsonl, preferences_validation.jsonl  OpenAI preference rows (DPO): chosen = the served
                                                           answer, rejected = a candidate answer the judge
                                                           found worse; the judge's rationale rides along
Near-identical prompts (MiniLM cosine >= 0.95 over the whole conversation) are kept once, the oldest; the
split is seeded and made per prompt, so a prompt's supervised row and its preference pairs land on the same
side. Every row is checked with `policies.distill` validators before it is written; a failing row is
counted in the manifest, never written. `<out>/manifest.json` holds the counts, the filters and the
source route-table version.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tiergate._version import __version__
from tiergate.admin.evidence import feedback_rows
from tiergate.admin.store import iso
from tiergate.gateway.db.learning import Evaluation, Trace
from tiergate.policies.distill import (
    DUPLICATE_SIMILARITY,
    Example,
    chat_row_errors,
    deduplicate,
    preference_row_errors,
    preference_rows,
    sft_row,
    split,
)
from tiergate.policies.messages import content_text

TEACHING_TIERS = ("teacher", "supervisor")
UNASSIGNED = "unassigned"  # traces whose request needed no domain (routing did not infer one)
_T = Trace.__table__.c  # type: ignore[attr-defined]
_E = Evaluation.__table__.c  # type: ignore[attr-defined]
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")

Embed = Callable[[list[str]], np.ndarray]


@dataclass
class Source:
    """One accepted answer with what the export needs to know about it."""

    request_id: str
    tenant_id: str | None
    domain: str
    ts_ms: int
    example: Example


@dataclass
class Filtered:
    redacted: int = 0
    no_content: int = 0
    truncated: int = 0
    negative_feedback: int = 0
    beaten_by_candidate: int = 0
    duplicates: int = 0
    invalid_rows: int = 0


@dataclass
class DomainCounts:
    directory: str
    train: int = 0
    validation: int = 0
    preference_train: int = 0
    preference_validation: int = 0
    duplicates_removed: int = 0


@dataclass
class Manifest:
    domains: dict[str, DomainCounts] = field(default_factory=dict)
    filtered: Filtered = field(default_factory=Filtered)


def domain_of(value: str | None) -> str:
    return value if value else UNASSIGNED


def prompt_text(messages: Iterable[dict[str, Any]]) -> str:
    """A conversation as one text, for finding near-duplicates."""
    parts = []
    for m in messages:
        parts.append(f"{m.get('role', '')}: {content_text(m.get('content'))}")
    return "\n".join(parts)


async def sources(
    engine: AsyncEngine, *, domain: str | None, tenant_id: str | None, filtered: Filtered
) -> list[Source]:
    """Accepted teacher/supervisor answers (oldest first), counting what was left out and why."""
    where = [_T.endpoint != "embeddings", _T.status == "ok", _T.tier.in_(TEACHING_TIERS)]
    if tenant_id is not None:
        where.append(_T.tenant_id == tenant_id)
    if domain is not None:
        where.append(_T.domain.is_(None) if domain == UNASSIGNED else _T.domain == domain)
    columns = (_T.request_id, _T.tenant_id, _T.domain, _T.ts_ms, _T.content, _T.messages, _T.params, _T.answer,
               _T.finish_reason)  # fmt: skip
    async with engine.connect() as conn:
        traces = (await conn.execute(select(*columns).where(*where).order_by(_T.ts_ms, _T.trace_id))).all()
        evaluations = (
            await conn.execute(
                select(_E.tenant_id, _E.request_id, _E.verdict, _E.candidate_answer, _E.rationale).where(
                    _E.status == "ok",
                    _E.verdict.is_not(None),
                    *([_E.tenant_id == tenant_id] if tenant_id else []),
                )
            )
        ).all()
    negative = {
        (f.tenant_id, f.request_id) for f in await feedback_rows(engine, tenant_id=tenant_id) if f.score < 0.5
    }
    judged: dict[tuple[str | None, str], list[Any]] = {}
    for e in evaluations:
        judged.setdefault((e.tenant_id, e.request_id), []).append(e)
    out = []
    for t in traces:
        if t.content != "full":
            filtered.redacted += t.content == "redacted"
            filtered.no_content += t.content == "none"
            continue
        if not t.messages or not t.answer:
            filtered.no_content += 1
            continue
        if t.finish_reason in ("length", "content_filter"):
            filtered.truncated += 1
            continue
        key = (t.tenant_id, t.request_id)
        if key in negative:
            filtered.negative_feedback += 1
            continue
        evals = judged.get(key, [])
        if any(e.verdict == "better" for e in evals):
            filtered.beaten_by_candidate += 1
            continue
        worse = [e for e in evals if e.verdict == "worse" and e.candidate_answer]
        rationale = next((e.rationale for e in evals if e.rationale), None)
        tools = (t.params or {}).get("tools")
        example = Example(
            messages=t.messages,
            answer={"role": "assistant", **t.answer},
            tools=tools if isinstance(tools, list) else None,
            rejected=[{"role": "assistant", **e.candidate_answer} for e in worse],
            rationale=rationale,
        )
        out.append(Source(t.request_id, t.tenant_id, domain_of(t.domain), t.ts_ms, example))
    return out


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _valid(
    rows: list[dict[str, Any]], check: Callable[[Any], list[str]], filtered: Filtered
) -> list[dict[str, Any]]:
    good = [r for r in rows if not check(r)]
    filtered.invalid_rows += len(rows) - len(good)
    return good


def export_domain(
    name: str, items: list[Source], out: Path, embed: Embed, fraction: float, seed: int, manifest: Manifest
) -> None:
    counts = manifest.domains[name] = DomainCounts(directory=_SLUG.sub("_", name) or "_")
    vectors = embed([prompt_text(s.example.messages) for s in items])
    kept = [items[i] for i in deduplicate(vectors, DUPLICATE_SIMILARITY)]
    counts.duplicates_removed = len(items) - len(kept)
    manifest.filtered.duplicates += counts.duplicates_removed
    train, validation = split(len(kept), fraction, seed)
    folder = out / counts.directory
    folder.mkdir(parents=True, exist_ok=True)
    for side, indices in (("train", train), ("validation", validation)):
        examples = [kept[i].example for i in indices]
        sft = _valid([sft_row(e) for e in examples], chat_row_errors, manifest.filtered)
        pairs = _valid(
            [r for e in examples for r in preference_rows(e)], preference_row_errors, manifest.filtered
        )
        _write(folder / f"{side}.jsonl", sft)
        _write(folder / f"preferences_{side}.jsonl", pairs)
        setattr(counts, side, len(sft))
        setattr(counts, f"preference_{side}", len(pairs))


def write_export(
    found: list[Source],
    filtered: Filtered,
    out: Path,
    embed: Embed,
    *,
    domain: str | None,
    tenant_id: str | None,
    validation_fraction: float,
    seed: int,
    route_table_version: int | None,
) -> dict[str, Any]:
    """Write `found` (from `sources`) into `out`, a directory per domain; returns the manifest written."""
    manifest = Manifest(filtered=filtered)
    by_domain: dict[str, list[Source]] = {}
    for source in found:
        by_domain.setdefault(source.domain, []).append(source)
    out.mkdir(parents=True, exist_ok=True)
    for name in sorted(by_domain):
        export_domain(name, by_domain[name], out, embed, validation_fraction, seed, manifest)
    doc = {
        "created_at": iso(int(time.time() * 1000)),
        "tiergate_version": __version__,
        "tenant_id": tenant_id,
        "domain": domain,
        "validation_fraction": validation_fraction,
        "seed": seed,
        "duplicate_similarity": DUPLICATE_SIMILARITY,
        "source_tiers": list(TEACHING_TIERS),
        "source_route_table_version": route_table_version,
        "domains": {name: vars(counts) for name, counts in manifest.domains.items()},
        "filtered": vars(manifest.filtered),
        "totals": {
            key: sum(getattr(c, key) for c in manifest.domains.values())
            for key in ("train", "validation", "preference_train", "preference_validation")
        },
    }
    (out / "manifest.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return doc
