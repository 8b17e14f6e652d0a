from __future__ import annotations

from itertools import combinations
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dedupe.evaluate import evaluate, read_labels


def frame(assignment: dict[str, str]) -> pl.DataFrame:
    return pl.DataFrame({"id": list(assignment), "cluster": list(assignment.values())})


def brute_force_pairs(predicted: dict[str, str], truth: dict[str, str]) -> tuple[float, float]:
    pairs = list(combinations(sorted(truth), 2))
    same_pred = {p for p in pairs if predicted[p[0]] == predicted[p[1]]}
    same_true = {p for p in pairs if truth[p[0]] == truth[p[1]]}
    both = len(same_pred & same_true)
    return both / len(same_pred) if same_pred else 1.0, both / len(same_true) if same_true else 1.0


def test_known_scores() -> None:
    truth = {"a": "1", "b": "1", "c": "1", "d": "2", "e": "2"}
    predicted = {"a": "x", "b": "x", "c": "y", "d": "y", "e": "y"}
    scores = evaluate(frame(predicted), frame(truth))
    assert (scores.pairwise_precision, scores.pairwise_recall) == pytest.approx((2 / 4, 2 / 4))
    # B-cubed: a, b: P 1, R 2/3; c: P 1/3, R 1/3; d, e: P 2/3, R 1
    assert scores.bcubed_precision == pytest.approx((1 + 1 + 1 / 3 + 2 / 3 + 2 / 3) / 5)
    assert scores.bcubed_recall == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 + 1) / 5)
    perfect = evaluate(frame(truth), frame(truth))
    assert (perfect.ari, perfect.bcubed_f1, perfect.pairwise_f1) == (1.0, 1.0, 1.0)


def test_missing_predictions_count_as_singletons() -> None:
    truth = {"a": "1", "b": "1"}
    scores = evaluate(frame({"a": "x"}), frame(truth))
    assert scores.pairwise_recall == 0.0 and scores.n == 2


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=2, max_size=25))
def test_pairwise_scores_match_brute_force(assignment: list[tuple[int, int]]) -> None:
    predicted = {str(i): str(p) for i, (p, _) in enumerate(assignment)}
    truth = {str(i): str(t) for i, (_, t) in enumerate(assignment)}
    scores = evaluate(frame(predicted), frame(truth))
    assert (scores.pairwise_precision, scores.pairwise_recall) == pytest.approx(brute_force_pairs(predicted, truth))


def test_labels_need_id_and_cluster(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("id,story\n1,a\n")
    with pytest.raises(ValueError, match="missing cluster"):
        read_labels(tmp_path / "labels.csv")
