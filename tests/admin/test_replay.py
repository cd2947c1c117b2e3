from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from tiergate.admin.cli import main
from tiergate.admin.jobs.embedding_cache import cached_embedder
from tiergate.admin.jobs.outcomes import OutcomesError, load_outcomes, parse_record
from tiergate.admin.jobs.replay import replay, summary
from tiergate.admin.jobs.replay_config import ReplayConfig
from tiergate.policies.promotion import PromotionConfig

REQUIRED = {
    "teacher_cost",
    "serving_cost",
    "evaluation_cost",
    "total_cost",
    "cost_saved_fraction",
    "teacher_quality",
    "quality",
    "quality_ratio",
    "steady_saved_fraction",
    "steady_quality_ratio",
    "promotions",
    "false_promotions",
}


def synthetic(n: int = 1200, seed: int = 0, *, domains: bool = True) -> list[dict[str, object]]:
    """`easy` questions: the student is as good as the teacher; `hard` ones: it is right half as often."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        kind = "easy" if i % 2 == 0 else "hard"
        teacher = float(rng.random() < 0.9)
        student = teacher if kind == "easy" and rng.random() < 0.97 else float(rng.random() < 0.45)
        prompt = (
            f"{kind} question {i} about {'gardening tomatoes' if kind == 'easy' else 'quantum field theory'}"
        )
        row: dict[str, object] = {
            "id": f"q{i}",
            "prompt": prompt,
            "outcomes": {
                "student": {"score": student, "cost": 0.0001},
                "teacher": {"score": teacher, "cost": 0.01},
            },
        }
        if domains:
            row["domain"] = kind
        rows.append(row)
    return rows


def write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def fake_embed(texts: list[str]) -> np.ndarray:
    """Two topics in orthogonal directions, with a little noise derived from the text."""
    out = np.zeros((len(texts), 8), dtype=np.float32)
    for i, text in enumerate(texts):
        rng = np.random.default_rng(abs(hash(text)) % 2**32)
        out[i, 0 if text.startswith("easy") else 1] = 1.0
        out[i] += rng.normal(0, 0.05, 8)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


FAST = ReplayConfig(interval=200, promotion=PromotionConfig(min_samples=20))
EVERY = {"explore": 1.0, "evaluation_budget": None}  # shadow every request, uncapped


def test_the_loop_promotes_the_easy_domain_and_never_the_hard_one(tmp_path: Path) -> None:
    records = load_outcomes(write(tmp_path / "o.jsonl", synthetic()))
    result = replay(records, None, FAST)
    m = result.metrics
    assert set(m) >= REQUIRED
    promoted = {(e.decision.domain, e.decision.to_tier) for e in result.events}
    assert promoted == {("easy", "student")}
    assert m["false_promotions"] == 0 and m["promotions"] == 1
    assert m["serving_cost"] < m["teacher_cost"] and m["steady_saved_fraction"] > 0.3
    assert m["quality_ratio"] > 0.95
    assert m["total_cost"] == pytest.approx(m["serving_cost"] + m["evaluation_cost"])
    assert m["cost_saved_fraction"] == pytest.approx(1 - m["total_cost"] / m["teacher_cost"])
    assert result.changelogs and "[easy]: teacher -> student" in result.changelogs[0]
    report = summary(result)
    assert report["promotion_events"][0]["domain"] == "easy"


def test_evaluation_spend_is_every_shadow_call_and_every_judged_disagreement(tmp_path: Path) -> None:
    rows = synthetic(40)
    records = load_outcomes(write(tmp_path / "o.jsonl", rows))
    config = ReplayConfig(interval=10_000, calibrate=0.0, **EVERY)
    m = replay(records, None, config).metrics
    teacher = sum(r["outcomes"]["teacher"]["cost"] for r in rows)  # type: ignore[index]
    shadow = sum(r["outcomes"]["student"]["cost"] for r in rows)  # type: ignore[index]
    disagreements = sum(r["outcomes"]["student"]["score"] != r["outcomes"]["teacher"]["score"] for r in rows)  # type: ignore[index]
    assert m["serving_cost"] == pytest.approx(teacher)
    assert m["evaluation_cost"] == pytest.approx(shadow + disagreements * 0.01)
    assert m["quality_ratio"] == pytest.approx(1.0)


def test_the_judge_is_billed_at_the_top_tier_and_the_candidate_is_the_next_cheaper(tmp_path: Path) -> None:
    tiers = {"student": (0.5, 0.001), "ta": (0.7, 0.01), "teacher": (1.0, 0.1), "supervisor": (1.0, 1.0)}
    rows = [
        {
            "id": str(i),
            "prompt": "p",
            "domain": "x",
            "outcomes": {t: {"score": s, "cost": c} for t, (s, c) in tiers.items()},
        }
        for i in range(10)
    ]
    records = load_outcomes(write(tmp_path / "o.jsonl", rows))
    m = replay(records, None, ReplayConfig(interval=10_000, calibrate=0.0, **EVERY)).metrics
    # Starts on the teacher, shadows the TA, and each (disagreeing) pair costs a supervisor call.
    assert m["teacher_cost"] == pytest.approx(1.0) == m["serving_cost"]
    assert m["evaluation_cost"] == pytest.approx(10 * (0.01 + 1.0))


def test_calibration_judges_some_agreements_and_pays_for_them(tmp_path: Path) -> None:
    rows = synthetic(200)
    records = load_outcomes(write(tmp_path / "o.jsonl", rows))
    base = ReplayConfig(interval=10_000, calibrate=0.0, **EVERY)
    calibrated = ReplayConfig(interval=10_000, calibrate=1.0, calibration_target=25, **EVERY)
    extra = (
        replay(records, None, calibrated).metrics["evaluation_cost"]
        - replay(records, None, base).metrics["evaluation_cost"]
    )
    assert extra == pytest.approx(25 * 0.01)


def test_domains_are_inferred_from_injected_embeddings(tmp_path: Path) -> None:
    records = load_outcomes(write(tmp_path / "o.jsonl", synthetic(domains=False)))
    result = replay(records, fake_embed, dataclasses.replace(FAST, clusters=2))
    (event,) = result.events
    assert "gardening" in event.decision.name or "tomatoes" in event.decision.name
    assert not event.false
    with pytest.raises(ValueError, match="embedding model"):
        replay(records, None, FAST)


def test_the_same_seed_replays_identically_and_shuffle_changes_the_order(tmp_path: Path) -> None:
    records = load_outcomes(write(tmp_path / "o.jsonl", synthetic(600)))
    a = replay(records, None, ReplayConfig(seed=3, interval=200, shuffle=True))
    b = replay(records, None, ReplayConfig(seed=3, interval=200, shuffle=True))
    c = replay(records, None, ReplayConfig(seed=3, interval=200))
    assert a.metrics == b.metrics
    assert not np.array_equal(a.cumulative_teacher_cost, c.cumulative_teacher_cost) or a.metrics != c.metrics


def _line(student: str, teacher: str = '{"score": 1, "cost": 1}') -> str:
    return f'{{"id": "a", "prompt": "p", "outcomes": {{"student": {student}, "teacher": {teacher}}}}}\n'


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no records"),
        ("{not json}\n", "o.jsonl:1: not valid JSON"),
        ('{"id": "a", "outcomes": {}}\n', "prompt must be a string"),
        (
            '{"id": "a", "prompt": "p", "outcomes": {"student": {"score": 1, "cost": 0}}}\n',
            "at least two tiers",
        ),
        (_line('{"score": 2, "cost": 0}'), "between 0 and 1"),
        (_line('{"score": 1}'), "score and cost"),
        (_line('{"score": 1, "cost": -1}'), "must not be negative"),
        (_line('{"score": true, "cost": 0}'), "must be a number"),
        (_line('{"score": 1, "cost": 0}').replace('"student"', '"intern"'), "unknown tier 'intern'"),
    ],
)
def test_bad_files_are_rejected_with_the_line_and_field(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "o.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(OutcomesError, match=message.replace("(", r"\(")):
        load_outcomes(path)


def test_records_must_agree_on_tiers_domains_and_ids(tmp_path: Path) -> None:
    two = {"student": {"score": 1, "cost": 0}, "teacher": {"score": 1, "cost": 1}}
    three = {**two, "ta": {"score": 1, "cost": 0.5}}
    cases = [
        (
            [{"id": "a", "prompt": "p", "outcomes": two}, {"id": "b", "prompt": "p", "outcomes": three}],
            ":2: tiers",
        ),
        (
            [{"id": "a", "prompt": "p", "outcomes": two}, {"id": "a", "prompt": "q", "outcomes": two}],
            "duplicate id",
        ),
        (
            [
                {"id": "a", "prompt": "p", "outcomes": two, "domain": "x"},
                {"id": "b", "prompt": "p", "outcomes": two},
            ],
            "every record names its domain or none",
        ),
    ]
    for rows, message in cases:
        with pytest.raises(OutcomesError, match=message):
            load_outcomes(write(tmp_path / "o.jsonl", rows))
    with pytest.raises(OutcomesError, match="cannot read"):
        load_outcomes(tmp_path / "missing.jsonl")
    assert parse_record({"id": 7, "prompt": "", "outcomes": two}, "x").id == "7"


def test_cli_json_has_the_required_keys_and_draws_the_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "o.jsonl", synthetic(600))
    plot = tmp_path / "curve.png"
    code = main(
        ["replay", "--outcomes", str(path), "--json", "--seed", "1", "--interval", "200", "--plot", str(plot)]
    )
    out = capsys.readouterr()
    assert code == 0
    report = json.loads(out.out)
    assert set(report) >= REQUIRED
    assert report["promotions"] >= 0 and report["false_promotions"] <= report["promotions"]
    assert "replay [" in out.err and "600/600" in out.err  # the progress bar
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_text_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "o.jsonl", synthetic(1200))
    assert main(["replay", "--outcomes", str(path), "--interval", "200"]) == 0
    out = capsys.readouterr().out
    assert "saved" in out and "promotions" in out and "easy [easy] teacher -> student" in out
    assert "evaluation cost" in out and "shadow $" in out and "first promotion   after 600" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--outcomes", "MISSING"], "cannot read"),
        (["--outcomes", "BAD"], "not valid JSON"),
        (["--outcomes", "GOOD", "--budget", "1.5"], "--budget"),
        (["--outcomes", "GOOD", "--interval", "0"], "--interval"),
    ],
)
def test_cli_bad_input_exits_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    (tmp_path / "BAD").write_text("nope\n", encoding="utf-8")
    write(tmp_path / "GOOD", synthetic(10))
    args = [str(tmp_path / a) if a in ("MISSING", "BAD", "GOOD") else a for a in args]
    assert main(["replay", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tiergate replay: ") and message in err


def test_embeddings_are_cached_on_disk(tmp_path: Path) -> None:
    calls: list[int] = []

    def model(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return fake_embed(texts)

    texts = [f"easy {i}" for i in range(100)] + [f"hard {i}" for i in range(50)]
    first = cached_embedder(tmp_path, model=model)(texts)
    assert sum(calls) == 150 and max(calls) <= 64
    again = cached_embedder(tmp_path, model=model)(texts)
    assert sum(calls) == 150  # served from the cache
    assert np.array_equal(first, again) and np.allclose(first, fake_embed(texts), atol=1e-6)
    cached_embedder(tmp_path, model=model)(texts[:10])
    assert sum(calls) == 160  # other texts, other cache entry


def test_an_interrupted_embedding_resumes_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiergate.admin.jobs import embedding_cache

    monkeypatch.setattr(embedding_cache, "CHECKPOINT_BATCHES", 2)
    texts = [f"easy {i:03d}" for i in range(300)]  # five batches of 64 (the last one short)
    calls: list[int] = []

    def flaky(batch: list[str]) -> np.ndarray:
        if len(calls) == 4:
            raise RuntimeError("interrupted")
        calls.append(len(batch))
        return fake_embed(batch)

    with pytest.raises(RuntimeError):
        cached_embedder(tmp_path, model=flaky)(texts)
    assert list(tmp_path.glob("*.partial.npz"))
    calls.append(0)  # let the next call through
    vectors = cached_embedder(tmp_path, model=lambda b: calls.append(len(b)) or fake_embed(b))(texts)
    assert sum(calls) == 300  # four batches before the failure were checkpointed; only the rest ran again
    assert np.allclose(vectors, fake_embed(texts), atol=1e-6)
    assert not list(tmp_path.glob("*.partial.npz"))


def test_learning_curves_of_several_seeds_share_one_plot(tmp_path: Path) -> None:
    from tiergate.admin.jobs.replay_plot import plot_learning_curve

    records = load_outcomes(write(tmp_path / "o.jsonl", synthetic(400)))
    results = [replay(records, None, ReplayConfig(seed=s, shuffle=True, interval=100)) for s in range(2)]
    path = tmp_path / "docs" / "curve.png"
    plot_learning_curve(results, path, title="two seeds", labels=["seed 0", "seed 1"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_evaluation_budget_caps_shadow_and_judge_spend(tmp_path: Path) -> None:
    records = load_outcomes(write(tmp_path / "o.jsonl", synthetic(400)))
    free = replay(records, None, ReplayConfig(**EVERY)).metrics
    capped = replay(records, None, ReplayConfig(explore=1.0, evaluation_budget=0.02)).metrics
    assert free["evaluation_cost"] > 0.1 * free["serving_cost"]
    # An evaluation is made only if it fits, judge included: never over the cap.
    assert 0 < capped["evaluation_cost"] <= 0.02 * capped["serving_cost"]


def test_json_reports_evaluation_spend_by_tier_and_kind_and_the_first_promotion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "o.jsonl", synthetic(1200))
    assert main(["replay", "--outcomes", str(path), "--json", "--interval", "200"]) == 0
    report = json.loads(capsys.readouterr().out)
    by_kind, by_tier = report["evaluation_by_kind"], report["evaluation_by_tier"]
    assert set(by_kind) == {"shadow", "judge"} and by_kind["shadow"] > 0 and by_kind["judge"] > 0
    # Shadow calls are the student's, judge calls the teacher's (the top tier of this file).
    assert by_tier == pytest.approx({"student": by_kind["shadow"], "teacher": by_kind["judge"]})
    assert sum(by_kind.values()) == pytest.approx(report["evaluation_cost"])
    assert report["first_promotion"] == report["promotion_events"][0]["after_requests"] == 600


def always_wrong(n: int) -> list[dict[str, object]]:
    """The cheaper tier is always wrong where the teacher is always right."""
    return [
        {
            "id": str(i),
            "prompt": f"q{i}",
            "domain": f"d{i % 4}",
            "outcomes": {"student": {"score": 0.0, "cost": 0.001}, "teacher": {"score": 1.0, "cost": 0.01}},
        }
        for i in range(n)
    ]


def test_default_evaluation_stays_within_the_cap_when_the_cheaper_tier_is_always_wrong(
    tmp_path: Path,
) -> None:
    records = load_outcomes(write(tmp_path / "o.jsonl", always_wrong(4000)))
    m = replay(records, None, ReplayConfig(interval=200)).metrics
    assert m["promotions"] == 0
    assert 0 < m["evaluation_cost"] <= 0.05 * m["teacher_cost"]
    # Futility: after the first verdicts, exploring stops; the cap is not what bounds it.
    assert m["evaluation_cost"] < 0.02 * m["teacher_cost"]
    assert m["cost_saved_fraction"] >= -0.05


@pytest.mark.parametrize("name", ["far-worse", "few", "drift", "tenants"])
@pytest.mark.parametrize("seed", [0, 1])
def test_adversarial_sets_never_cost_more_than_the_cap_and_keep_quality(
    tmp_path: Path, name: str, seed: int
) -> None:
    from bench.adversarial import SPECS, generate

    records = load_outcomes(write(tmp_path / "o.jsonl", generate(SPECS[name], seed)))
    m = replay(records, None, ReplayConfig(interval=100, seed=seed)).metrics
    assert m["evaluation_cost"] <= 0.05 * m["serving_cost"]
    assert m["cost_saved_fraction"] >= -0.05 and m["quality_ratio"] >= 0.95
    # The old fixed exploration (30% of every unpromoted domain, uncapped) loses far more on these sets.
    fixed = replay(records, None, ReplayConfig(interval=100, seed=seed, explore=0.3, evaluation_budget=None))
    assert fixed.metrics["cost_saved_fraction"] < m["cost_saved_fraction"] - 0.1
