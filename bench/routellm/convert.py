"""Convert RouteLLM's recorded MMLU and GSM8K outcomes into `tiergate replay` outcome files.

Source: `../shared/data/routellm/routellm/evals/` (lm-sys/RouteLLM, Apache-2.0). Each question has the
correctness of a cheap model (Mixtral-8x7B-Instruct, mapped to `student`) and a strong one
(gpt-4-1106-preview, mapped to `teacher`). Prompts listed in `contaminated_prompts.jsonl` are dropped, as
RouteLLM's own evaluation does. The cost of a question for a model is the paper's price per million tokens
times the tokens of the prompt plus the answer (tiktoken `cl100k_base`): an MMLU answer is one choice letter,
a GSM8K answer is the model's recorded response.

Subject names are withheld from the outcome file (no `domain` field, ids that reveal nothing), so replay must
infer its domains from the prompt text. They are written to a separate `<name>.subjects.json` that only the
benchmark's analysis reads (per-subject reference points), never replay itself.

    python -m bench.routellm.convert --data ../shared/data/routellm --out bench/routellm/work
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CHEAP = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"
# RouteLLM (Ong et al., 2024): about $24.7 (GPT-4) and $0.24 (Mixtral) per million tokens.
PRICE_PER_TOKEN = {"teacher": 24.7e-6, "student": 0.24e-6}
MMLU_ANSWER_TOKENS = 1  # a single choice letter
ORDER_SEED = 20240701  # fixed shuffle so the file is a mixed stream, not one subject after another


@dataclass(frozen=True, slots=True)
class Question:
    prompt: str
    subject: str
    correct: dict[str, bool]  # tier -> recorded correctness
    answer_tokens: dict[str, int]  # tier -> tokens of the recorded answer


def _token_counter() -> Callable[[str], int]:
    from tiergate.gateway.upstream.litellm_data import use_bundled_tiktoken_encodings

    use_bundled_tiktoken_encodings()
    import tiktoken

    encoding = tiktoken.get_encoding("cl100k_base")
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def _contaminated(folder: Path) -> set[str]:
    path = folder / "contaminated_prompts.jsonl"
    with path.open(encoding="utf-8") as f:
        return {json.loads(line)["eval_prompt"] for line in f if line.strip()}


def _flag(value: str, where: str) -> bool:
    if value not in ("True", "False"):
        raise ValueError(f"{where}: expected True/False, got {value!r}")
    return value == "True"


def mmlu_questions(evals: Path) -> Iterator[Question]:
    folder = evals / "mmlu"
    drop = _contaminated(folder)
    files = sorted((folder / "responses").glob("mmlu_*.csv"))
    if not files:
        raise FileNotFoundError(f"no mmlu_*.csv under {folder / 'responses'}")
    for path in files:
        subject = path.stem.removeprefix("mmlu_")
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                if row["prompt"] in drop:
                    continue
                where = f"{path.name}: {row['prompt'][:40]!r}"
                yield Question(
                    prompt=row["prompt"],
                    subject=subject,
                    correct={"student": _flag(row[CHEAP], where), "teacher": _flag(row[STRONG], where)},
                    answer_tokens={"student": MMLU_ANSWER_TOKENS, "teacher": MMLU_ANSWER_TOKENS},
                )


def gsm8k_questions(evals: Path, count: Callable[[str], int]) -> Iterator[Question]:
    folder = evals / "gsm8k"
    drop = _contaminated(folder)
    with (folder / "gsm8k_responses.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["prompt"] in drop:
                continue
            where = f"gsm8k_responses.csv: {row['prompt'][:40]!r}"
            yield Question(
                prompt=row["prompt"],
                subject="gsm8k",
                correct={"student": _flag(row[CHEAP], where), "teacher": _flag(row[STRONG], where)},
                answer_tokens={
                    "student": count(row[f"{CHEAP}_response"]),
                    "teacher": count(row[f"{STRONG}_response"]),
                },
            )


def to_records(
    name: str, questions: list[Question], count: Callable[[str], int]
) -> tuple[list[dict[str, object]], dict[str, str]]:
    """Outcome records (shuffled with a fixed seed, neutral ids) and the withheld id -> subject map."""
    order = list(questions)
    random.Random(ORDER_SEED).shuffle(order)
    records: list[dict[str, object]] = []
    subjects: dict[str, str] = {}
    for i, q in enumerate(order):
        prompt_tokens = count(q.prompt)
        rid = f"{name}-{i:05d}"
        outcomes = {
            tier: {
                "score": 1.0 if q.correct[tier] else 0.0,
                "cost": round((prompt_tokens + q.answer_tokens[tier]) * PRICE_PER_TOKEN[tier], 10),
            }
            for tier in ("student", "teacher")
        }
        records.append({"id": rid, "prompt": q.prompt, "outcomes": outcomes})
        subjects[rid] = q.subject
    return records, subjects


def write(out: Path, name: str, records: list[dict[str, object]], subjects: dict[str, str]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    (out / f"{name}.subjects.json").write_text(json.dumps(subjects), encoding="utf-8")
    return path


def convert(data: Path, out: Path) -> dict[str, Path]:
    evals = data / "routellm" / "evals"
    if not evals.is_dir():
        raise FileNotFoundError(f"{evals} not found (expected ../shared/data/routellm)")
    count = _token_counter()
    written = {}
    for name, questions in (
        ("mmlu", list(mmlu_questions(evals))),
        ("gsm8k", list(gsm8k_questions(evals, count))),
    ):
        records, subjects = to_records(name, questions, count)
        written[name] = write(out, name, records, subjects)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/routellm"))
    parser.add_argument("--out", type=Path, default=Path("bench/routellm/work"))
    args = parser.parse_args(argv)
    try:
        written = convert(args.data, args.out)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"convert: {exc}", file=sys.stderr)
        return 2
    for name, path in written.items():
        print(f"{name}: {sum(1 for _ in path.open(encoding='utf-8'))} questions -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
