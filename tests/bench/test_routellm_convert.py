from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.routellm.convert import PRICE_PER_TOKEN, convert
from tiergate.admin.jobs.outcomes import load_outcomes

ROOT = Path(__file__).resolve().parents[2]
# `../shared/data` beside the repository (CI, /work/main), or two levels up from a helper's worktree.
DATA = next(
    (
        p / "shared" / "data" / "routellm"
        for p in (ROOT.parent, ROOT.parent.parent)
        if (p / "shared").is_dir()
    ),
    ROOT.parent / "shared" / "data" / "routellm",
)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not (DATA / "routellm" / "evals").is_dir():
        pytest.skip(f"RouteLLM outcomes not found under {DATA}")
    return convert(DATA, tmp_path_factory.mktemp("routellm"))


def test_contaminated_prompts_are_dropped_and_subjects_withheld(converted: dict[str, Path]) -> None:
    mmlu = load_outcomes(converted["mmlu"])
    gsm8k = load_outcomes(converted["gsm8k"])
    assert (len(mmlu), len(gsm8k)) == (14042 - 5, 1319 - 12)
    assert all(r.domain is None for r in mmlu + gsm8k)
    assert all(r.id.startswith("mmlu-") and r.id[5:].isdigit() for r in mmlu)
    subjects = json.loads(converted["mmlu"].with_suffix(".subjects.json").read_text(encoding="utf-8"))
    assert len(set(subjects.values())) == 57 and set(subjects) == {r.id for r in mmlu}
    # The accuracies RouteLLM reports for these files.
    assert sum(r.outcomes["student"].score for r in mmlu) / len(mmlu) == pytest.approx(0.681, abs=0.001)
    assert sum(r.outcomes["teacher"].score for r in mmlu) / len(mmlu) == pytest.approx(0.806, abs=0.001)


def test_costs_are_the_paper_prices_times_the_tokens(converted: dict[str, Path]) -> None:
    for record in load_outcomes(converted["mmlu"])[:50]:
        # Same tokens (prompt plus a one-letter answer) for both models: the price ratio is the cost ratio.
        ratio = record.outcomes["teacher"].cost / record.outcomes["student"].cost
        assert ratio == pytest.approx(PRICE_PER_TOKEN["teacher"] / PRICE_PER_TOKEN["student"], rel=1e-6)
    gsm8k = load_outcomes(converted["gsm8k"])
    # GSM8K answers are the recorded responses, whose lengths differ between the models.
    assert len({round(r.outcomes["teacher"].cost / r.outcomes["student"].cost, 3) for r in gsm8k}) > 100
